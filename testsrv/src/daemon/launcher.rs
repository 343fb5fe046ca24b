//! The thread that spawns daemons which must not outlive our process. If it ends (killed, or
//! a panic), the kernel kills each daemon it spawned (PR_SET_PDEATHSIG): an orphan would run
//! on, stopped or not. That signal follows the *thread* that forked, so every such daemon is
//! spawned by one `launcher` thread that lives as long as the [`Launcher`], not by whichever
//! thread happens to restart it.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Sender};
use std::thread;

/// A command to spawn, and where to send the child.
type Job = (Command, Sender<io::Result<Child>>);

/// The launcher thread; it ends when this is dropped.
pub struct Launcher(Sender<Job>);

impl Launcher {
    /// Starts the launcher thread.
    pub fn new() -> io::Result<Launcher> {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })?;
        Ok(Launcher(tx))
    }

    /// Spawns `cmd` on the launcher thread, with SIGKILL as its parent-death signal.
    pub fn spawn(&self, mut cmd: Command) -> io::Result<Child> {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Our process died between fork and prctl: no signal will come, so go now.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let gone = || io::Error::other("the launcher thread is gone");
        let (tx, rx) = mpsc::channel();
        self.0.send((cmd, tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}
