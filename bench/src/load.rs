//! The endpoint's own ceiling: a load generator that, like attohttpc, opens a new
//! connection for every request (`Connection: close`), sends a complete multipart upload
//! built in memory, and reads the answer to the end. Nothing is read from disk, so what it
//! measures is the endpoint (plus the kernel's loopback), not a client.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const BOUNDARY: &str = "sega-bench-0123456789abcdef";

/// The request head for a multipart body of `body_len` bytes.
fn head(addr: SocketAddr, body_len: u64) -> Vec<u8> {
    format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sega-bench\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The multipart text before and after the file content (fields as the daemon sends them).
fn parts(filename: &str, folder: &str, date: &str) -> (Vec<u8>, Vec<u8>) {
    let mut pre = Vec::new();
    for (k, v) in [("folder", folder), ("date", date)] {
        pre.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    pre.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{filename}\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    (pre, format!("\r\n--{BOUNDARY}--\r\n").into_bytes())
}

/// A whole request (head and body) uploading `content`.
pub fn upload_request(addr: SocketAddr, content: &[u8], date: &str) -> Vec<u8> {
    let (pre, post) = parts("LOAD.jpg", "Sega_1", date);
    let len = (pre.len() + content.len() + post.len()) as u64;
    let mut req = head(addr, len);
    req.extend_from_slice(&pre);
    req.extend_from_slice(content);
    req.extend_from_slice(&post);
    req
}

/// Reads the whole answer (the server closes after it) and returns its status code.
fn read_status(s: &mut TcpStream) -> io::Result<u16> {
    let mut resp = Vec::with_capacity(512);
    s.read_to_end(&mut resp)?;
    std::str::from_utf8(resp.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other("no HTTP status line in the answer"))
}

/// One request on a new connection.
fn post(addr: SocketAddr, req: &[u8]) -> io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(req)?;
    read_status(&mut s)
}

/// Sends `n` copies of `req` from `concurrency` threads, a new connection each; returns
/// requests per second. Any answer but 200 is an error: the ceiling must be of real work.
pub fn requests_per_sec(
    addr: SocketAddr,
    req: Arc<Vec<u8>>,
    n: usize,
    concurrency: usize,
) -> io::Result<f64> {
    let left = Arc::new(AtomicUsize::new(n));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let (req, left) = (req.clone(), left.clone());
            thread::spawn(move || -> io::Result<()> {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                {
                    let status = post(addr, &req)?;
                    if status != 200 {
                        return Err(io::Error::other(format!("endpoint answered {status}")));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| io::Error::other("load thread panicked"))??;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// One upload of `size` bytes of file content from a 1 MiB buffer sent over and over;
/// returns MB/s (10^6 bytes) over the whole request.
pub fn stream_mb_per_sec(addr: SocketAddr, size: u64, date: &str) -> io::Result<f64> {
    let (pre, post) = parts("STREAM.jpg", "Sega_1", date);
    let len = pre.len() as u64 + size + post.len() as u64;
    // Any bytes will do as long as the boundary cannot appear: the parser checks structure.
    let chunk = vec![0xA5u8; 1 << 20];
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(&head(addr, len))?;
    s.write_all(&pre)?;
    let mut left = size;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    s.write_all(&post)?;
    let status = read_status(&mut s)?;
    if status != 200 {
        return Err(io::Error::other(format!("endpoint answered {status}")));
    }
    Ok(size as f64 / 1e6 / t0.elapsed().as_secs_f64())
}
