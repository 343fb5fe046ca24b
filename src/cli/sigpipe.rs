//! How every command but the daemon ends when the reader of its output goes away
//! (`status | head`, `check-config | head -c 1`, a closed journal stream): killed by SIGPIPE,
//! as `cat` or `grep` are, so the shell sees 141 (128 + 13) and prints nothing, instead of a
//! `println!` panicking on EPIPE (an abort, exit 134, with `panic = "abort"`).
//!
//! Why not simply restore SIGPIPE's default disposition, as many command-line programs do:
//! the commands also write to sockets (`scan` and `upload-test` send uploads, `check-config`
//! shakes hands with the endpoint), and not every socket write asks the kernel not to raise
//! SIGPIPE. The standard library's `TcpStream::write` passes `MSG_NOSIGNAL`, but its
//! `write_vectored` is a plain `writev`, which rustls uses for every TLS record: with the
//! default disposition an https endpoint that closes the connection mid-upload (a 413 from a
//! proxy, a reset) would kill `scan` silently instead of leaving a retryable error. So
//! SIGPIPE gets a handler ([`install`]) that asks the one question that matters: is our
//! standard output or standard error a pipe or socket whose reader has gone? If so, it
//! restores the default disposition and raises the signal again, and the process dies by
//! SIGPIPE when the handler returns, before the failed write returns. If not, the signal came
//! from a socket of ours: the handler returns and the write fails with EPIPE, an error the
//! caller handles, exactly as under the ignored disposition the Rust runtime sets.
//!
//! Death by SIGPIPE rather than exit 0: it is what the shell and `set -o pipefail` expect of a
//! producer cut off early, and it is honest for `scan`, `retry` or `migrate-db` cut off part
//! way (exit 0 would claim a finished pass). Nothing is lost by dying there: a scan killed
//! mid-upload is a scan stopped by Ctrl-C, whose rows left `uploading` go back to `pending`
//! at the next run (DESIGN §4, "a process crash loses nothing").
//!
//! The daemon (`run`) never installs it: SIGPIPE stays ignored there (the Rust runtime's
//! default, and systemd's `IgnoreSIGPIPE=yes`), and its logger drops a line it cannot write
//! to a closed stderr rather than stop uploading (`logging`).

use std::io;

/// Installs the SIGPIPE handler for this process (see the module doc). Called once, at
/// dispatch, before a command writes anything; a command added later gets it for free.
pub fn install() -> io::Result<()> {
    // SAFETY: a zeroed `sigaction` is a valid starting point (no flags, empty mask); the
    // handler only makes async-signal-safe calls (poll, signal, raise) and keeps errno.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

extern "C" fn on_sigpipe(_: libc::c_int) {
    // SAFETY: errno is thread-local; it is put back as it was, so the interrupted code sees
    // its own write's error and not one of ours.
    let errno = unsafe { libc::__errno_location() };
    let saved = unsafe { *errno };
    if output_gone() {
        // SAFETY: both are async-signal-safe. SIGPIPE is blocked while its handler runs, so
        // the raised signal stays pending until the handler returns, and is then delivered
        // with the default disposition: the process ends as if it had never been caught.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    unsafe { *errno = saved };
}

/// Whether stdout or stderr has lost its reader: POLLERR is what a pipe's write end reports
/// once its last reader closed, POLLHUP what a stream socket (a journal stream) reports once
/// its peer did. A terminal, a file or /dev/null reports neither; a closed descriptor reports
/// POLLNVAL, which is not a reader going away.
fn output_gone() -> bool {
    let mut fds = [1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll on an array we own, with a zero timeout: it only looks.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    n > 0
        && fds
            .iter()
            .any(|p| p.revents & (libc::POLLERR | libc::POLLHUP) != 0)
}
