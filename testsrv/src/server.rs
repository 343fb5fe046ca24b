//! The `Server`: its shared state (mode, request log, open connections), the acceptor
//! thread that owns the listening socket, and the stop sequence. What happens on one
//! connection is `conn`'s business.
//!
//! Threads: `testsrv-accept` accepts and spawns one `testsrv-conn-N` per connection. Why
//! not a fixed pool: fault modes (hang, delay, slow read, trickle) hold a connection for
//! seconds or forever, and a pool of N would let N of them starve every other client.
//! Spawning a thread costs some 20 µs, small next to a 100 KiB upload: the benchmarks'
//! thousands of new connections per second are fine.
//!
//! State lives in three mutexes, each with its condvar: `ctl` (mode, stopping, listening;
//! waited on by hanging, delaying and pacing connections and by the acceptor while it
//! refuses), `log` (records and counters; waited on by `wait_for_requests`) and `conns` (a
//! clone of every open client socket, so that stopping can unblock their reads and writes).
//!
//! Stopping (`Drop`): set `stopping` and wake every waiter; poke the acceptor with a
//! connection and join it; shut down every registered client socket (the acceptor registers
//! each before spawning its thread, so none is missed); wait for the connection threads to
//! deregister; drop the subscribers' senders, which ends their receivers.

use crate::conn;
use crate::mode::Mode;
use crate::Request;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long `set_mode` waits for the listening socket to close or re-open.
const REBIND_WAIT: Duration = Duration::from_secs(5);

/// The running test endpoint. Stops (joins its threads, closes its sockets) on drop.
pub struct Server {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// Counters since the start or the last `clear`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Requests whose head arrived.
    pub request_count: usize,
    /// TCP connections accepted.
    pub connection_count: usize,
    /// Answered requests by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests settled without an answer (hang, reset, stopped).
    pub unanswered: u64,
    /// Bytes read from clients (heads and bodies).
    pub bytes_received: u64,
}

pub(crate) struct Shared {
    addr: SocketAddr,
    ctl: Mutex<Ctl>,
    ctl_cv: Condvar,
    log: Mutex<Log>,
    log_cv: Condvar,
    conns: Mutex<HashMap<u64, TcpStream>>,
    conns_cv: Condvar,
}

struct Ctl {
    mode: Mode,
    /// Upload requests since the mode was last set: the `k` of `Mode::Status`.
    since_set: u64,
    stopping: bool,
    /// Whether the acceptor holds an open listening socket.
    listening: bool,
}

#[derive(Default)]
struct Log {
    records: VecDeque<Request>,
    /// 0: keep every record.
    max_records: usize,
    /// Bumped by `clear`, so that requests in flight across it do not count afterwards.
    generation: u64,
    next_seq: u64,
    /// Requests settled: answered, or hung, reset or abandoned.
    settled: usize,
    stats: Stats,
    subscribers: Vec<Sender<Request>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole test server down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Condvar::wait_timeout_while` without the poison: returns the guard.
fn wait_while<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    timeout: Duration,
    cond: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout_while(g, timeout, cond) {
        Ok((g, _)) => g,
        Err(e) => e.into_inner().0,
    }
}

impl Server {
    /// Binds `addr` (loopback only, e.g. `"127.0.0.1:0"`) and starts accepting.
    pub fn start(addr: &str) -> io::Result<Server> {
        let listener = crate::bind_loopback(addr)?;
        let ctl = Ctl {
            mode: Mode::Ok,
            since_set: 0,
            stopping: false,
            listening: true,
        };
        let shared = Arc::new(Shared {
            addr: listener.local_addr()?,
            ctl: Mutex::new(ctl),
            ctl_cv: Condvar::new(),
            log: Mutex::new(Log::default()),
            log_cv: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            conns_cv: Condvar::new(),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name("testsrv-accept".into())
            .spawn(move || accept_loop(&sh, listener))?;
        Ok(Server {
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT/upload`.
    pub fn url(&self) -> String {
        format!("http://{}/upload", self.shared.addr)
    }

    /// Switches the fault mode for the next request. Switching to or from `Refuse`
    /// returns once the listening socket is closed or bound again (at most 5 s), so the
    /// caller's next connect sees the new state.
    pub fn set_mode(&self, mode: Mode) {
        let sh = &*self.shared;
        let refuse = mode == Mode::Refuse;
        let mut ctl = lock(&sh.ctl);
        ctl.mode = mode;
        ctl.since_set = 0;
        sh.ctl_cv.notify_all();
        if refuse && ctl.listening {
            // The acceptor is blocked in accept(): a connection makes it look at the mode.
            drop(ctl);
            poke(sh.addr);
            ctl = lock(&sh.ctl);
        }
        let _ctl = wait_while(&sh.ctl_cv, ctl, REBIND_WAIT, |c| {
            c.listening == (c.mode == Mode::Refuse) && !c.stopping
        });
    }

    /// The current fault mode.
    pub fn mode(&self) -> Mode {
        lock(&self.shared.ctl).mode.clone()
    }

    /// Every request whose head was read, in arrival order (the oldest beyond
    /// `set_max_records` dropped). Requests still in progress have `status: None` and
    /// `completed_at: None`.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).records.iter().cloned().collect()
    }

    /// Requests whose head arrived since the start or the last `clear`.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).stats.request_count
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// TCP connections accepted since the start or the last `clear`.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.log).stats.connection_count
    }

    /// Waits until `n` requests have been settled (answered, or hung, reset or abandoned
    /// by the server) since the start or the last `clear`; false on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let log = lock(&self.shared.log);
        wait_while(&self.shared.log_cv, log, timeout, |l| l.settled < n).settled >= n
    }

    /// Forgets the records and resets the counters (not `seq`, not the mode).
    pub fn clear(&self) {
        let mut log = lock(&self.shared.log);
        log.records.clear();
        log.generation += 1;
        log.settled = 0;
        log.stats = Stats::default();
    }

    /// Counters since the start or the last `clear`.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.log).stats.clone()
    }

    /// A copy of every request as it is settled (before its answer is sent). The channel
    /// ends when the server stops.
    pub fn subscribe(&self) -> Receiver<Request> {
        // Unbounded: one message per request, drained by a logger thread.
        let (tx, rx) = mpsc::channel();
        lock(&self.shared.log).subscribers.push(tx);
        rx
    }

    /// Keeps at most `n` records (0: all), so a long soak run does not grow without bound.
    pub fn set_max_records(&self, n: usize) {
        let mut log = lock(&self.shared.log);
        log.max_records = n;
        while n > 0 && log.records.len() > n {
            log.records.pop_front();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let sh = &*self.shared;
        let listening = {
            let mut ctl = lock(&sh.ctl);
            ctl.stopping = true;
            sh.ctl_cv.notify_all();
            ctl.listening
        };
        if listening {
            poke(sh.addr);
        }
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        for s in lock(&sh.conns).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Bounded: a thread stuck somewhere unforeseen must not hang the test that drops us.
        let conns = lock(&sh.conns);
        drop(wait_while(
            &sh.conns_cv,
            conns,
            Duration::from_secs(10),
            |c| !c.is_empty(),
        ));
        lock(&sh.log).subscribers.clear();
    }
}

/// Connects to the listener to wake an acceptor blocked in accept().
fn poke(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
}

fn accept_loop(sh: &Arc<Shared>, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut next_id = 0u64;
    loop {
        let mut ctl = lock(&sh.ctl);
        if ctl.stopping {
            return;
        }
        if ctl.mode == Mode::Refuse {
            if listener.take().is_some() {
                ctl.listening = false;
                sh.ctl_cv.notify_all();
            }
            let _ctl = sh.ctl_cv.wait(ctl);
            continue;
        }
        if listener.is_none() {
            // The same port; std sets SO_REUSEADDR, so TIME_WAIT leftovers do not block it.
            match TcpListener::bind(sh.addr) {
                Ok(l) => {
                    listener = Some(l);
                    ctl.listening = true;
                    sh.ctl_cv.notify_all();
                }
                Err(_) => {
                    // Someone holds the port for now: retry until the mode or a stop changes.
                    let _ctl = sh.ctl_cv.wait_timeout(ctl, Duration::from_millis(100));
                    continue;
                }
            }
        }
        drop(ctl);
        let Some(l) = &listener else { continue };
        match l.accept() {
            Ok((stream, _)) => {
                let ctl = lock(&sh.ctl);
                // A poke, or a client arriving as we stop or start refusing: drop it.
                if ctl.stopping || ctl.mode == Mode::Refuse {
                    continue;
                }
                drop(ctl);
                next_id += 1;
                spawn_conn(sh, stream, next_id);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(_) => {
                // EMFILE and the like: back off a little rather than spin.
                let ctl = lock(&sh.ctl);
                let _ctl = sh.ctl_cv.wait_timeout(ctl, Duration::from_millis(50));
            }
        }
    }
}

/// Deregisters a connection when its thread ends, however it ends.
struct Registered(Arc<Shared>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.0.conns).remove(&self.1);
        self.0.conns_cv.notify_all();
    }
}

fn spawn_conn(sh: &Arc<Shared>, stream: TcpStream, id: u64) {
    lock(&sh.log).stats.connection_count += 1;
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    lock(&sh.conns).insert(id, clone);
    let registered = Registered(sh.clone(), id);
    // If the spawn fails, the closure (stream and registration) is dropped: the client
    // sees the connection closed.
    let _ = thread::Builder::new()
        .name(format!("testsrv-conn-{id}"))
        .spawn(move || {
            let reg = registered;
            conn::serve(&reg.0, stream);
        });
}

/// What connection threads use.
impl Shared {
    /// The mode for an upload request, and its index `k` since the mode was set.
    /// Whether the server is "down" (`Mode::Refuse`).
    pub(crate) fn refusing(&self) -> bool {
        lock(&self.ctl).mode == Mode::Refuse
    }

    pub(crate) fn take_mode(&self) -> (Mode, u64) {
        let mut ctl = lock(&self.ctl);
        ctl.since_set += 1;
        (ctl.mode.clone(), ctl.since_set - 1)
    }

    /// Records a request whose head arrived; assigns its `seq`; returns the generation.
    pub(crate) fn arrive(&self, req: &mut Request) -> u64 {
        let mut log = lock(&self.log);
        log.next_seq += 1;
        req.seq = log.next_seq;
        log.stats.request_count += 1;
        if log.max_records > 0 && log.records.len() >= log.max_records {
            log.records.pop_front();
        }
        log.records.push_back(req.clone());
        log.generation
    }

    /// Replaces the record with its final state, tells the subscribers, wakes the waiters.
    pub(crate) fn settle(&self, generation: u64, req: Request) {
        let mut log = lock(&self.log);
        if log.generation != generation {
            return; // cleared meanwhile
        }
        log.settled += 1;
        match req.status {
            Some(s) => *log.stats.by_status.entry(s).or_default() += 1,
            None => log.stats.unanswered += 1,
        }
        log.subscribers.retain(|tx| tx.send(req.clone()).is_ok());
        if let Ok(i) = log.records.binary_search_by_key(&req.seq, |r| r.seq) {
            log.records[i] = req;
        }
        self.log_cv.notify_all();
    }

    /// Adds an error to a settled record (a failed response write).
    pub(crate) fn amend(&self, generation: u64, seq: u64, msg: String) {
        let mut log = lock(&self.log);
        if log.generation == generation {
            if let Ok(i) = log.records.binary_search_by_key(&seq, |r| r.seq) {
                conn::add_error(&mut log.records[i], msg);
            }
        }
    }

    pub(crate) fn add_bytes_received(&self, n: u64) {
        lock(&self.log).stats.bytes_received += n;
    }

    /// Sleeps until `deadline` unless the server stops first; false if it stopped.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        let timeout = deadline.saturating_duration_since(Instant::now());
        !wait_while(&self.ctl_cv, lock(&self.ctl), timeout, |c| !c.stopping).stopping
    }

    /// Blocks while the mode is `Hang` and the server runs.
    pub(crate) fn hang(&self) {
        let mut ctl = lock(&self.ctl);
        while !ctl.stopping && ctl.mode == Mode::Hang {
            ctl = self.ctl_cv.wait(ctl).unwrap_or_else(|e| e.into_inner());
        }
    }
}
