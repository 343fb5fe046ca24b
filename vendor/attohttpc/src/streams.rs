#[cfg(test)]
use std::io::Cursor;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use base64::Engine;

use url::{Host, Url};

use crate::happy;
use crate::parsing::buffers::BufReaderWrite;
use crate::parsing::response::parse_response_head;
use crate::request::BaseSettings;
use crate::tls::{TlsHandshaker, TlsStream};
use crate::{ErrorKind, Result};

pub struct ConnectInfo<'a> {
    pub url: &'a Url,
    pub proxy: Option<&'a Url>,
    pub base_settings: &'a BaseSettings,
    pub deadline: Option<Instant>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BaseStream {
    Plain {
        stream: TcpStream,
        timeout: Option<deadline::Guard>,
    },
    Tls {
        stream: TlsStream<TcpStream>,
        timeout: Option<deadline::Guard>,
    },
    Tunnel {
        stream: Box<TlsStream<BufReaderWrite<BaseStream>>>,
    },
    #[cfg(test)]
    Mock(Cursor<Vec<u8>>),
}

impl BaseStream {
    pub fn connect(info: &ConnectInfo) -> Result<BaseStream> {
        let connect_url = info.proxy.unwrap_or(info.url);

        let host = connect_url.host().ok_or(ErrorKind::InvalidUrlHost)?;
        let port = connect_url.port_or_known_default().ok_or(ErrorKind::InvalidUrlPort)?;

        debug!("trying to connect to {}:{}", host, port);

        let stream = match connect_url.scheme() {
            "http" => BaseStream::connect_tcp(&host, port, info)
                .map(|(stream, timeout)| BaseStream::Plain { stream, timeout }),
            "https" => BaseStream::connect_tls(&host, port, info),
            _ => Err(ErrorKind::InvalidBaseUrl.into()),
        }?;

        if let Some(proxy_url) = info.proxy {
            if info.url.scheme() == "https" {
                return BaseStream::initiate_tunnel(stream, proxy_url, info.url, info.base_settings);
            }
        }

        Ok(stream)
    }

    fn initiate_tunnel(
        mut stream: BaseStream,
        proxy_url: &Url,
        remote_url: &Url,
        base_settings: &BaseSettings,
    ) -> Result<BaseStream> {
        let remote_host = remote_url.host_str().ok_or(ErrorKind::InvalidUrlHost)?;
        let remote_port = remote_url.port_or_known_default().ok_or(ErrorKind::InvalidUrlPort)?;
        let proxy_host = proxy_url.host_str().ok_or(ErrorKind::InvalidUrlHost)?;
        let proxy_port = proxy_url.port_or_known_default().ok_or(ErrorKind::InvalidUrlPort)?;

        debug!(
            "tunnelling to {}:{} via {}:{}",
            remote_host, remote_port, proxy_host, proxy_port,
        );

        write!(stream, "CONNECT {remote_host}:{remote_port} HTTP/1.1\r\n")?;
        write!(stream, "Host: {proxy_host}:{proxy_port}\r\n")?;
        write!(stream, "Connection: close\r\n")?;
        // sega-uploader patch: only with credentials (has_authority() is true for every
        // http URL, so a proxy without credentials was sent `Basic Og==`).
        if !proxy_url.username().is_empty() || proxy_url.password().is_some() {
            // sega-uploader patch: the URL keeps them percent-encoded; the proxy wants them
            // as they are (`p%40ss` is `p@ss`).
            let username = percent_decoded(proxy_url.username());
            let auth = match proxy_url.password() {
                Some(password) => format!("{username}:{}", percent_decoded(password)),
                None => format!("{username}:"),
            };
            let basic_auth = base64::engine::general_purpose::STANDARD.encode(auth);
            write!(stream, "Proxy-Authorization: Basic {basic_auth}\r\n")?;
        }
        write!(stream, "\r\n")?;

        let mut stream = BufReaderWrite::new(stream);
        let (status, _) = parse_response_head(&mut stream, base_settings.max_headers)?;

        debug!("tunnel response status code is {}", status);

        if !status.is_success() {
            // Error initializaing tunnel, get status code and up to 10 KiB of data from the body.
            let mut buf = Vec::with_capacity(2048);
            stream.take(10 * 1024).read_to_end(&mut buf)?;
            let err = ErrorKind::ConnectError {
                status_code: status,
                body: buf,
            };
            return Err(err.into());
        }

        let mut handshaker = TlsHandshaker::new();
        apply_base_settings(&mut handshaker, base_settings);
        let stream = handshaker.handshake(remote_host, stream)?;

        Ok(BaseStream::Tunnel {
            stream: Box::new(stream),
        })
    }

    fn connect_tcp(host: &Host<&str>, port: u16, info: &ConnectInfo) -> Result<(TcpStream, Option<deadline::Guard>)> {
        let stream = happy::connect(host, port, info.base_settings.connect_timeout, info.deadline)?;
        // sega-uploader patch: no Nagle. The head goes out in one write and the body in large
        // ones; the small pieces a request ends with (the last TLS record, the last bytes of
        // a body) must not wait for the server's delayed ACK (40 ms a request over https).
        stream.set_nodelay(true)?;
        #[cfg(not(target_os = "wasi"))]
        stream.set_read_timeout(Some(info.base_settings.read_timeout))?;
        // sega-uploader patch: the deadline is kept by one timer thread for all connections
        // (`deadline`), not by a thread spawned for each connection.
        #[cfg(not(feature = "single-threaded"))]
        let timeout = info
            .deadline
            .map(|at| deadline::arm(stream.try_clone()?, at))
            .transpose()?;
        #[cfg(feature = "single-threaded")]
        let timeout: Option<deadline::Guard> = None;
        Ok((stream, timeout))
    }

    fn connect_tls(host: &Host<&str>, port: u16, info: &ConnectInfo) -> Result<BaseStream> {
        let (stream, timeout) = BaseStream::connect_tcp(host, port, info)?;
        let mut handshaker = TlsHandshaker::new();
        apply_base_settings(&mut handshaker, info.base_settings);
        let stream = handshaker.handshake(&host.to_string(), stream)?;
        Ok(BaseStream::Tls { stream, timeout })
    }

    /// sega-uploader patch (keep-alive): the TCP socket under a plain or TLS connection.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            BaseStream::Plain { stream, .. } => Some(stream),
            BaseStream::Tls { stream, .. } => Some(stream.get_ref()),
            _ => None,
        }
    }

    /// sega-uploader patch (keep-alive): whether an idle connection is still open with nothing
    /// to read. A server that closed it has sent its FIN (a 0 read); one that sent anything
    /// unasked (a TLS alert, stray bytes) leaves the next answer's start unclear.
    pub(crate) fn open_and_quiet(&self) -> bool {
        let Some(tcp) = self.tcp() else {
            return false;
        };
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let quiet = matches!(tcp.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        tcp.set_nonblocking(false).is_ok() && quiet
    }

    /// sega-uploader patch (keep-alive): whether the connection holds no byte it has read
    /// and not yet handed out: a TLS session decrypts whole records, and may hold the start
    /// of more than the answer (or the server's close_notify).
    pub(crate) fn nothing_buffered(&mut self) -> bool {
        match self {
            BaseStream::Plain { .. } => true,
            BaseStream::Tls { stream, .. } => stream.nothing_buffered(),
            _ => false,
        }
    }

    /// sega-uploader patch (early answer): after a failed write, what TLS had not sent yet
    /// is dropped (see `TlsStream::discard_unsent`).
    pub(crate) fn discard_unsent(&mut self) {
        match self {
            BaseStream::Tls { stream, .. } => stream.discard_unsent(),
            BaseStream::Tunnel { stream } => stream.discard_unsent(),
            _ => {}
        }
    }

    /// sega-uploader patch (keep-alive): an idle connection has no deadline.
    pub(crate) fn disarm(&mut self) {
        match self {
            BaseStream::Plain { timeout, .. } | BaseStream::Tls { timeout, .. } => *timeout = None,
            _ => {}
        }
    }

    /// sega-uploader patch (keep-alive): a reused connection takes the new request's read
    /// timeout and overall deadline.
    pub(crate) fn rearm(&mut self, info: &ConnectInfo) -> io::Result<()> {
        self.disarm();
        let Some(tcp) = self.tcp() else {
            return Ok(());
        };
        #[cfg(not(target_os = "wasi"))]
        tcp.set_read_timeout(Some(info.base_settings.read_timeout))?;
        #[cfg(not(feature = "single-threaded"))]
        let armed = info.deadline.map(|at| deadline::arm(tcp.try_clone()?, at)).transpose()?;
        #[cfg(feature = "single-threaded")]
        let armed: Option<deadline::Guard> = None;
        match self {
            BaseStream::Plain { timeout, .. } | BaseStream::Tls { timeout, .. } => *timeout = armed,
            _ => {}
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn mock(bytes: Vec<u8>) -> BaseStream {
        BaseStream::Mock(Cursor::new(bytes))
    }
}

impl Read for BaseStream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BaseStream::Plain { stream, timeout } => read_timeout(stream, buf, timeout),
            BaseStream::Tls { stream, timeout } => read_timeout(stream, buf, timeout),
            BaseStream::Tunnel { stream } => stream.read(buf),
            #[cfg(test)]
            BaseStream::Mock(s) => s.read(buf),
        }
    }
}

impl Write for BaseStream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BaseStream::Plain { stream, timeout } => write_timeout(stream, buf, timeout),
            BaseStream::Tls { stream, timeout } => write_timeout(stream, buf, timeout),
            BaseStream::Tunnel { stream } => stream.write(buf),
            #[cfg(test)]
            _ => Ok(0),
        }
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match self {
            BaseStream::Plain { stream, .. } => stream.flush(),
            BaseStream::Tls { stream, .. } => stream.flush(),
            BaseStream::Tunnel { stream } => stream.flush(),
            #[cfg(test)]
            _ => Ok(()),
        }
    }
}

/// sega-uploader patch (keep-alive): a write cut by the deadline's shutdown fails as
/// `TimedOut`, as a read does, not as a peer that went away (which a kept connection's
/// request would take for the server's close).
fn write_timeout(stream: &mut impl Write, buf: &[u8], timeout: &Option<deadline::Guard>) -> io::Result<usize> {
    match stream.write(buf) {
        Err(_) if timeout.as_ref().is_some_and(deadline::Guard::fired) => Err(io::ErrorKind::TimedOut.into()),
        other => other,
    }
}

fn read_timeout(stream: &mut impl Read, buf: &mut [u8], timeout: &Option<deadline::Guard>) -> io::Result<usize> {
    match stream.read(buf) {
        // A 0 read (Unix) or an aborted connection (Windows) is what a connection shut down
        // by its deadline gives.
        Ok(0) if !buf.is_empty() && timeout.as_ref().is_some_and(deadline::Guard::fired) => {
            Err(io::ErrorKind::TimedOut.into())
        }
        #[cfg(windows)]
        Err(err)
            if err.kind() == io::ErrorKind::ConnectionAborted
                && timeout.as_ref().is_some_and(deadline::Guard::fired) =>
        {
            Err(io::ErrorKind::TimedOut.into())
        }
        other => other,
    }
}

/// sega-uploader patch: the overall deadline of every connection (`RequestBuilder::timeout`)
/// kept by one timer thread, started with the first one. Upstream spawned a thread for each
/// connection to sleep until its deadline: a thread created and ended per request, about a
/// tenth of the CPU an upload of a small file costs. A connection's deadline is armed with a
/// clone of its socket; the timer shuts the socket down when the deadline passes first (the
/// blocked read or write then fails, and `Guard::fired` says why), and dropping the stream
/// (its `Guard`) disarms it.
pub(crate) mod deadline {
    use std::collections::BTreeMap;
    use std::io;
    use std::net::{Shutdown, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
    use std::thread;
    use std::time::Instant;

    struct Armed {
        stream: TcpStream,
        fired: Arc<AtomicBool>,
    }

    #[derive(Default)]
    struct State {
        /// By deadline, then by arming order (the key stays unique).
        armed: BTreeMap<(Instant, u64), Armed>,
        next: u64,
        running: bool,
    }

    #[derive(Default)]
    struct Timer {
        state: Mutex<State>,
        wake: Condvar,
    }

    static TIMER: OnceLock<Timer> = OnceLock::new();

    fn timer() -> &'static Timer {
        TIMER.get_or_init(Timer::default)
    }

    fn lock(t: &Timer) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock: a panic elsewhere cannot leave it torn.
        t.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection's armed deadline.
    #[derive(Debug)]
    pub struct Guard {
        key: (Instant, u64),
        fired: Arc<AtomicBool>,
    }

    impl Guard {
        /// Whether the deadline passed and the connection was shut down for it.
        pub fn fired(&self) -> bool {
            self.fired.load(Ordering::Acquire)
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let armed = lock(timer()).armed.remove(&self.key);
            // The socket's clone is closed here, outside the lock.
            drop(armed);
        }
    }

    /// Shuts `stream` (a clone of the connection's socket) down at `at`, unless the returned
    /// guard is dropped first.
    pub fn arm(stream: TcpStream, at: Instant) -> io::Result<Guard> {
        let t = timer();
        let mut st = lock(t);
        if !st.running {
            thread::Builder::new()
                .name("http-deadline".into())
                .spawn(|| run(timer()))?;
            st.running = true;
        }
        let key = (at, st.next);
        st.next += 1;
        let first = st.armed.keys().next().is_none_or(|k| key < *k);
        let fired = Arc::new(AtomicBool::new(false));
        st.armed.insert(
            key,
            Armed {
                stream,
                fired: fired.clone(),
            },
        );
        drop(st);
        if first {
            t.wake.notify_one();
        }
        Ok(Guard { key, fired })
    }

    fn run(t: &Timer) {
        let mut st = lock(t);
        loop {
            let now = Instant::now();
            let next = st.armed.keys().next().map(|k| k.0);
            st = match next {
                None => t.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(at) if at <= now => {
                    if let Some((_, armed)) = st.armed.pop_first() {
                        armed.fired.store(true, Ordering::Release);
                        let _ = armed.stream.shutdown(Shutdown::Both);
                    }
                    st
                }
                Some(at) => t.wake.wait_timeout(st, at - now).unwrap_or_else(|e| e.into_inner()).0,
            };
        }
    }
}

/// sega-uploader patch: `%XX` as the byte it stands for (lossy UTF-8 for the rest).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn apply_base_settings(handshaker: &mut TlsHandshaker, base_settings: &BaseSettings) {
    handshaker.danger_accept_invalid_certs(base_settings.accept_invalid_certs);
    handshaker.danger_accept_invalid_hostnames(base_settings.accept_invalid_hostnames);
    for cert in &base_settings.root_certificates.0 {
        handshaker.add_root_certificate(cert.clone());
    }
    // sega-uploader patch: a complete configuration wins over everything above.
    #[cfg(all(any(feature = "__rustls", feature = "__rustls-ring"), not(feature = "tls-native")))]
    if let Some(config) = &base_settings.tls_config {
        handshaker.set_client_config(config.clone());
    }
}
