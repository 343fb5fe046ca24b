//! A FUSE filesystem served by the test process itself, for the hung-mount tests: a
//! read-only tree held in memory in which a READ of a file marked "hanging" is never
//! answered (as a hard NFS or CIFS mount whose server went away never answers) until
//! [`HangingFs::release`]. Everything else (LOOKUP, GETATTR, OPEN, READDIR, STATFS, …) is
//! answered at once, so listing and lstat-ing the tree work as on a healthy mount.
//!
//! It speaks the kernel's protocol (7.x, `<linux/fuse.h>`) over /dev/fuse directly: no
//! libfuse, no crate, nothing for CI to install. One thread reads the requests and answers
//! each in turn; a held READ is simply a request not answered yet.
//!
//! The mount is never the machine's: [`HangingFs::mount_for`] makes a command's child
//! unshare its mount namespace, make every mount in it private (nothing propagates back),
//! mount the filesystem there and only then exec. The mount lives as long as the last
//! process in that namespace; when it is gone the kernel aborts the connection, reading
//! /dev/fuse fails with ENODEV and the serving thread ends.
//!
//! Killing: a request already read by the filesystem ends only when it is answered, whatever
//! signal the waiting process gets (the kernel sends one INTERRUPT and leaves the choice to
//! the filesystem). Here a held READ gives way to SIGKILL (answered EINTR), as an NFS hard
//! mount does, and to nothing else: the thread looks for SIGKILL pending on each INTERRUPT
//! and every 100 ms. So a test that kills its daemon, on any path including a panic, never
//! leaves an unkillable process behind.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod tree;
use tree::{Kind, Out, Tree};

// Opcodes (enum fuse_opcode).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const INTERRUPT: u32 = 36; // fuse_interrupt_in: the unique of the request to interrupt
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;

/// Bypass the page cache: every read(2) is a READ request, answered (or not) here.
const FOPEN_DIRECT_IO: u32 = 1;
/// The protocol minor this server speaks (the kernel takes the lower of its own and ours).
const MINOR: u32 = 31;
/// sizeof(struct fuse_in_header).
const IN_HEADER: usize = 40;
/// The root directory's inode (FUSE_ROOT_ID).
const ROOT: u64 = 1;

/// A mounted-or-not FUSE filesystem whose serving thread runs from `new` on. See the module
/// documentation.
pub struct HangingFs {
    dev: Arc<File>,
    shared: Arc<Shared>,
}

struct Shared {
    tree: Tree,
    state: Mutex<State>,
    /// Dropped before it was ever mounted: the thread stops waiting for a mount.
    dropped: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The hanging files' READs are answered from now on (and the held ones were, EIO).
    released: bool,
    held: Vec<Held>,
}

/// A READ not answered.
struct Held {
    unique: u64,
    /// The waiting thread (fuse_in_header.pid is the thread's id).
    tid: u32,
}

impl HangingFs {
    /// Opens /dev/fuse and starts serving the tree of `files` (paths relative to the mount
    /// point, `a/b/c.jpg`; directories are implied), whose READs hang for every path in
    /// `hanging`. Nothing is mounted yet: see `mount_for`.
    pub fn new(files: &[(&str, &[u8])], hanging: &[&str]) -> io::Result<HangingFs> {
        let dev = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open("/dev/fuse")?,
        );
        let shared = Arc::new(Shared {
            tree: Tree::new(files, hanging),
            state: Mutex::new(State::default()),
            dropped: AtomicBool::new(false),
        });
        let (d, s) = (dev.clone(), shared.clone());
        std::thread::Builder::new()
            .name("fuse".into())
            .spawn(move || serve(&d, &s))?;
        Ok(HangingFs { dev, shared })
    }

    /// Makes `cmd`'s process, between fork and exec, enter a private mount namespace of its
    /// own and mount this filesystem on `mountpoint` there (read-only, nosuid, nodev): what
    /// it execs, and only that process tree, sees the files. A failed mount fails the spawn
    /// with its error. Once: a `HangingFs` serves one mount (its connection ends with it).
    pub fn mount_for(&self, cmd: &mut Command, mountpoint: &Path) {
        let c = |s: &[u8]| CString::new(s).expect("no NUL in a mount argument");
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let data = format!(
            "fd={},rootmode=40000,user_id={uid},group_id={gid},allow_other",
            self.dev.as_raw_fd()
        );
        let (root, source, fstype) = (c(b"/"), c(b"sega-test"), c(b"fuse"));
        let (target, data) = (c(mountpoint.as_os_str().as_bytes()), c(data.as_bytes()));
        // SAFETY: between fork and exec the closure makes system calls only (unshare, mount),
        // on strings prepared beforehand: it neither allocates nor takes a lock. The /dev/fuse
        // descriptor is open in the child until the exec closes it (O_CLOEXEC), so `fd=` names
        // it there; the mount does not keep it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // `unshare -m --propagation private`: nothing mounted here reaches the host.
                let none = std::ptr::null();
                if libc::mount(
                    none,
                    root.as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    none.cast(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    flags,
                    data.as_ptr().cast(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// How many READs are being held (a process is blocked in each).
    pub fn held(&self) -> usize {
        self.shared.lock().held.len()
    }

    /// The mount comes back: the held READs fail with EIO (a hard mount's server that
    /// restarted) and later READs of the hanging files are answered.
    pub fn release(&self) {
        let mut st = self.shared.lock();
        st.released = true;
        for h in st.held.drain(..) {
            reply_error(&self.dev, h.unique, libc::EIO);
        }
    }
}

impl Drop for HangingFs {
    /// Answers what is held (a daemon still running is not left stuck past the test) and
    /// leaves the thread to end with the mount.
    fn drop(&mut self) {
        self.release();
        self.shared.dropped.store(true, Ordering::Relaxed);
    }
}

/// Whether a FUSE filesystem can be mounted here: root (mount in a mount namespace needs
/// CAP_SYS_ADMIN), /dev/fuse, and the kernel's FUSE. Tries it: mounts an empty tree on
/// `scratch` (an empty directory) for `true` in a private namespace. The reason if not.
pub fn check(scratch: &Path) -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("mounting a FUSE filesystem in a private mount namespace needs root".into());
    }
    let fs = HangingFs::new(&[], &[]).map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    let mut c = Command::new("true");
    fs.mount_for(&mut c, scratch);
    match c.status() {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(format!("`true` in the FUSE mount's namespace: {st}")),
        Err(e) => Err(format!(
            "cannot mount FUSE in a private mount namespace: {e}"
        )),
    }
}

impl Shared {
    /// Answers EINTR to the held READs of threads being killed.
    fn free_the_killed(&self, dev: &File) {
        self.lock().held.retain(|h| {
            let dying = sigkill_pending(h.tid);
            if dying {
                reply_error(dev, h.unique, libc::EINTR);
            }
            !dying
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn serve(dev: &File, shared: &Shared) {
    // The kernel wants room for a WRITE of max_write (4 KiB) and never less than 8 KiB.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // The kernel sends one INTERRUPT per request, for the first signal: if that one did
        // not kill, a SIGKILL after it says nothing. So look every 100 ms as well.
        let mut p = libc::pollfd {
            fd: dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        if unsafe { libc::poll(&mut p, 1, 100) } == 0 {
            shared.free_the_killed(dev);
            continue;
        }
        // SAFETY: reading into a buffer we own, of its length.
        let n = unsafe { libc::read(dev.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // Not mounted yet: wait for the mount, unless nobody will mount it.
                Some(libc::EPERM) if !shared.dropped.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                // EINTR: retry. ENOENT: the request was interrupted before we read it.
                Some(libc::EINTR) | Some(libc::ENOENT) | Some(libc::EAGAIN) => continue,
                // ENODEV: the mount is gone (its namespace ended). Anything else: give up.
                _ => return,
            }
        }
        if !shared.handle(dev, &buf[..n as usize]) {
            return;
        }
    }
}

/// Reads fields of a request, native-endian as the kernel writes them.
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn u32(&self, at: usize) -> u32 {
        self.0
            .get(at..at + 4)
            .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()))
    }
    fn u64(&self, at: usize) -> u64 {
        self.0
            .get(at..at + 8)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap()))
    }
    /// A NUL-terminated name at `at`.
    fn name(&self, at: usize) -> &[u8] {
        let rest = self.0.get(at..).unwrap_or_default();
        rest.split(|&b| b == 0).next().unwrap_or_default()
    }
}

impl Shared {
    /// Answers one request (or holds it); false once the connection is over (DESTROY).
    fn handle(&self, dev: &File, req: &[u8]) -> bool {
        if req.len() < IN_HEADER {
            return true;
        }
        let h = Args(req);
        let (opcode, unique, node, tid) = (h.u32(4), h.u64(8), h.u64(16), h.u32(32));
        let a = Args(&req[IN_HEADER..]);
        let tree = &self.tree;
        match opcode {
            INIT => {
                // fuse_init_in: major, minor, max_readahead, flags…
                if a.u32(0) != 7 {
                    reply_error(dev, unique, libc::EPROTO);
                    return true;
                }
                // fuse_init_out: no optional features at all (no async reads, no READDIRPLUS).
                let mut o = Out::default();
                o.u32(7).u32(a.u32(4).min(MINOR)).u32(a.u32(8)).u32(0);
                o.u16(16).u16(12).u32(4096).u32(1).u16(0).u16(0).u32(0);
                o.zeros(7 * 4);
                reply(dev, unique, &o.0);
            }
            LOOKUP => match tree.child(node, a.name(0)) {
                Some(ino) => reply(dev, unique, &tree.entry(ino).0),
                None => reply_error(dev, unique, libc::ENOENT),
            },
            FORGET | BATCH_FORGET => {} // no answer expected
            GETATTR => match tree.get(node) {
                Some(_) => {
                    // fuse_attr_out: attr_valid, attr_valid_nsec, dummy, attr.
                    let mut o = Out::default();
                    o.u64(1).u32(0).u32(0);
                    tree.attr(node, &mut o);
                    reply(dev, unique, &o.0);
                }
                None => reply_error(dev, unique, libc::ENOENT),
            },
            OPEN | OPENDIR => {
                let dir = opcode == OPENDIR;
                match tree.get(node) {
                    Some(n) if n.is_dir() == dir => {
                        // fuse_open_out: fh, open_flags, padding.
                        let mut o = Out::default();
                        o.u64(0).u32(if dir { 0 } else { FOPEN_DIRECT_IO }).u32(0);
                        reply(dev, unique, &o.0);
                    }
                    Some(_) => {
                        reply_error(dev, unique, if dir { libc::ENOTDIR } else { libc::EISDIR })
                    }
                    None => reply_error(dev, unique, libc::ENOENT),
                }
            }
            READ => {
                // fuse_read_in: fh, offset, size…
                let (offset, size) = (a.u64(8), a.u32(16) as usize);
                let Some(Kind::File { data, hangs }) = tree.get(node).map(|n| &n.kind) else {
                    reply_error(dev, unique, libc::EISDIR);
                    return true;
                };
                let mut st = self.lock();
                if *hangs && !st.released {
                    st.held.push(Held { unique, tid });
                    return true;
                }
                drop(st);
                let from = (offset as usize).min(data.len());
                let to = from.saturating_add(size).min(data.len());
                reply(dev, unique, &data[from..to]);
            }
            READDIR => {
                let (offset, size) = (a.u64(8), a.u32(16) as usize);
                match tree.dirents(node, offset, size) {
                    Some(o) => reply(dev, unique, &o.0),
                    None => reply_error(dev, unique, libc::ENOTDIR),
                }
            }
            RELEASE | RELEASEDIR | FLUSH => reply(dev, unique, &[]),
            STATFS => {
                // fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize,
                // padding, spare[6].
                let mut o = Out::default();
                o.u64(1024)
                    .u64(0)
                    .u64(0)
                    .u64(tree.nodes.len() as u64)
                    .u64(0);
                o.u32(4096).u32(255).u32(4096).u32(0).zeros(6 * 4);
                reply(dev, unique, &o.0);
            }
            // Only a process being killed gets its READ back (EINTR); other signals wait, as
            // on a hard mount.
            INTERRUPT => self.free_the_killed(dev),
            DESTROY => {
                reply(dev, unique, &[]);
                return false;
            }
            // GETXATTR, LISTXATTR, ACCESS, and everything a read-only tree does not do.
            _ => reply_error(dev, unique, libc::ENOSYS),
        }
        true
    }
}

/// Whether thread `tid` has SIGKILL pending (its process is being killed or is exiting).
fn sigkill_pending(tid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .any(|mask| mask & (1 << (libc::SIGKILL - 1)) != 0)
}

fn reply(dev: &File, unique: u64, body: &[u8]) {
    send(dev, unique, 0, body);
}

fn reply_error(dev: &File, unique: u64, errno: i32) {
    send(dev, unique, -errno, &[]);
}

/// One answer is one write(2) (fuse_out_header: len, error, unique; then the body).
fn send(dev: &File, unique: u64, error: i32, body: &[u8]) {
    let mut o = Out::default();
    o.u32((16 + body.len()) as u32)
        .u32(error as u32)
        .u64(unique);
    o.0.extend_from_slice(body);
    // SAFETY: writing a buffer we own, of its length.
    let n = unsafe { libc::write(dev.as_raw_fd(), o.0.as_ptr().cast(), o.0.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // ENOENT: the request is gone (interrupted); ENODEV: the mount is. Nothing to do.
        if !matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV)) {
            eprintln!("fuse: answering request {unique}: {e}");
        }
    }
}
