//! The inotify thread: it owns the inotify descriptor and the map from watch descriptors to
//! directories, and turns kernel events into messages for the DB owner.
//!
//! Watches: the root (to see folders appear), each folder (to see date folders appear) and
//! each date folder inside the window (for files). A new date folder is watched first and
//! listed second, so a file written between the mkdir and the watch is not missed. Missing
//! directories (a root mounted later) are re-tried at each turn of the loop (below); the
//! window moves at local midnight. IN_Q_OVERFLOW asks the ticker for a full rescan and places the watches again
//! (a date folder created while events were lost has none yet); a watch-limit error (ENOSPC)
//! is reported once with the sysctl to raise, the rescan covers what it cannot watch, and
//! the failed watches are tried again at every scan interval.
//!
//! Files: IN_CLOSE_WRITE and IN_MOVED_TO mean complete now. IN_CREATE of a regular file that
//! already has content is how a file arrives by `link()` (hard-link ingest, `O_TMPFILE` +
//! `linkat`), which raises nothing else: it is recorded like a scan-found file, due once its
//! mtime has settled (a file being written raises IN_CLOSE_WRITE later, which makes it due).
//!
//! The loop polls the descriptor with a timeout of at most `health::max_sleep()` (2 s, or a
//! quarter of the systemd watchdog interval), so it notices control messages and shutdown
//! (its control channel closing) without any other wake-up.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::clock::Clock;
use crate::config::{Config, Folder};
use crate::error::{describe_io, Error, Result};
use crate::health::Beat;
use crate::layout::Show;
use crate::layout::{self, display_name, EntryType, Version, Window};
use crate::live::Live;
use crate::owner::Input;
use crate::scanner;
use crate::timestamp::Timestamp;
use crate::work::Observation;

/// A filesystem type, as far as inotify is concerned.
#[derive(Debug, Clone, Copy)]
pub struct FsKind {
    pub name: &'static str,
    pub gives_events: bool,
}

/// statfs magic numbers of filesystems where changes made by other hosts (or the FUSE
/// daemon) produce no inotify events.
const NO_EVENT_FS: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9P"),
    (0x00C3_6400, "CephFS"),
    (0x0BD0_0BD0, "Lustre"),
];

pub fn fs_kind(path: &Path) -> Option<FsKind> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let magic = st.f_type as i64;
    Some(match NO_EVENT_FS.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => FsKind {
            name,
            gives_events: false,
        },
        None => FsKind {
            name: "local",
            gives_events: true,
        },
    })
}

pub enum WatchControl {
    Reload(Arc<Config>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Role {
    Root,
    Folder(usize),
    DateDir(usize, OsString),
}

pub struct Watcher {
    inotify: Inotify,
    config: Arc<Config>,
    clock: Clock,
    by_wd: HashMap<i32, (WatchDescriptor, Role, PathBuf)>,
    by_role: HashMap<Role, i32>,
    inputs: Sender<Input>,
    rescan: Sender<&'static str>,
    live: Arc<Live>,
    warned: HashSet<PathBuf>,
    warned_limit: bool,
    /// Directories the watch limit kept unwatched at the last sync, tried again at `retry`.
    limited: usize,
    retry_limited: Instant,
    /// When a configured directory missing at the last sync is looked for again.
    retry_missing: Instant,
    window: Window,
    needs_sync: bool,
}

/// How often directories that were missing are looked for again while events flow. One
/// under the root (or under a folder) is seen at once anyway, by its parent's IN_CREATE;
/// this is for the rest (a folder named by an absolute path, a share not yet mounted).
/// Looking on every wake-up instead made each batch of events cost a whole sync (statfs
/// and a listing per folder) while one folder of the config was absent.
const MISSING_RETRY: Duration = Duration::from_secs(1);

const ROOT_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);
/// A folder named under the root, and date folders, are never watched through a link.
const FOLDER_MASK: WatchMask = ROOT_MASK.union(WatchMask::DONT_FOLLOW);
const DATE_MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CREATE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW);

impl Watcher {
    /// Opens the inotify descriptor. `run` places the watches and loops.
    pub fn new(
        config: Arc<Config>,
        clock: Clock,
        inputs: Sender<Input>,
        rescan: Sender<&'static str>,
        live: Arc<Live>,
    ) -> Result<Watcher> {
        let inotify = Inotify::init().map_err(|e| {
            Error::system(
                "cannot start inotify (too many inotify instances? raise fs.inotify.max_user_instances)",
                e,
            )
        })?;
        let window = Window::new(clock.today_local(), config.watch.lookback_days);
        Ok(Watcher {
            inotify,
            config,
            clock,
            by_wd: HashMap::new(),
            by_role: HashMap::new(),
            inputs,
            rescan,
            live,
            warned: HashSet::new(),
            warned_limit: false,
            limited: 0,
            retry_limited: Instant::now(),
            retry_missing: Instant::now(),
            window,
            needs_sync: true,
        })
    }

    /// Places every watch, says so on `ready` (READY=1 may go out: any file created from
    /// now on is seen), then runs until `control` closes.
    pub fn run(
        mut self,
        control: Receiver<WatchControl>,
        ready: Sender<()>,
        beat: Beat,
    ) -> Result<()> {
        self.sync();
        let _ = ready.send(());
        self.watch_loop(&control, &beat)
    }

    fn watch_loop(&mut self, control: &Receiver<WatchControl>, beat: &Beat) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            beat.beat();
            match control.try_recv() {
                Ok(WatchControl::Reload(c)) => {
                    // Folder indexes may mean other directories now: start the watches
                    // afresh. Nothing is missed: sync lists every date folder it watches,
                    // and the ticker rescans after a reload too.
                    for (_, (wd, _, _)) in self.by_wd.drain() {
                        let _ = self.inotify.watches().remove(wd);
                    }
                    self.by_role.clear();
                    self.config = c;
                    self.needs_sync = true;
                }
                Err(TryRecvError::Disconnected) => return Ok(()),
                Err(TryRecvError::Empty) => {}
            }
            let window = Window::new(self.clock.today_local(), self.config.watch.lookback_days);
            if window != self.window {
                log::info!(
                    "date window moved: now {} to {}",
                    layout::format_date(window.first),
                    layout::format_date(window.last)
                );
                self.window = window;
                self.needs_sync = true;
            }
            if self.sync_due(Instant::now()) {
                self.sync();
            }
            // Wake at least every `max_sleep` (control, missing directories, the watchdog
            // beat) and just after local midnight (the window).
            let until_midnight = self.clock.until_local_midnight() + Duration::from_millis(20);
            let timeout = until_midnight.min(crate::health::max_sleep());
            if !self.poll(timeout) {
                continue;
            }
            self.read(&mut buf)?;
        }
    }

    /// Whether the watches are to be made to match the config again now: something
    /// changed (a reload, the window, a directory created, moved or removed), a directory
    /// that was missing may be there by now, or watches the limit refused may be placed
    /// (tried again at every scan interval: the limit may have been raised, or other
    /// watches freed).
    fn sync_due(&self, now: Instant) -> bool {
        let missing = !self.live.watch().missing.is_empty() && now >= self.retry_missing;
        let limited = self.limited > 0 && now >= self.retry_limited;
        self.needs_sync || missing || limited
    }

    /// Waits until the inotify fd is readable or the timeout passes.
    fn poll(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that lives across the call.
        let n = unsafe {
            libc::poll(
                &mut pfd,
                1,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        // EINTR (a signal arrived) counts as "nothing yet": the loop polls again.
        n > 0
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut batch = Vec::new();
        loop {
            let events = match self.inotify.read_events(buf) {
                Ok(ev) => ev,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::system("reading inotify events", e)),
            };
            let mut got = false;
            let owned: Vec<(i32, EventMask, Option<OsString>)> = events
                .map(|e| {
                    (
                        e.wd.get_watch_descriptor_id(),
                        e.mask,
                        e.name.map(OsStr::to_owned),
                    )
                })
                .collect();
            for (wd, mask, name) in owned {
                got = true;
                self.event(wd, mask, name, &mut batch);
            }
            if !got {
                break;
            }
        }
        if !batch.is_empty() && self.inputs.send(Input::Observed(batch)).is_err() {
            return Ok(());
        }
        if self.needs_sync {
            self.sync();
        }
        Ok(())
    }

    fn event(
        &mut self,
        wd: i32,
        mask: EventMask,
        name: Option<OsString>,
        batch: &mut Vec<Observation>,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            let n = {
                let mut st = self.live.watch();
                st.overflows += 1;
                st.overflows
            };
            log::warn!("inotify queue overflowed (events were dropped; overflow #{n}): rescanning everything now");
            let _ = self.rescan.try_send("overflow");
            // A date folder created while events were lost has no watch yet.
            self.needs_sync = true;
            return;
        }
        let Some((_, role, dir)) = self.by_wd.get(&wd).cloned() else {
            return;
        };
        if mask.contains(EventMask::IGNORED) {
            // The kernel removed the watch (directory deleted, unmounted): forget it, and
            // let sync put it back if the directory returns.
            self.by_wd.remove(&wd);
            self.by_role.remove(&role);
            self.needs_sync = true;
            return;
        }
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            if mask.contains(EventMask::MOVE_SELF) {
                // The stored path is stale: drop the watch; sync re-adds the right one.
                if let Some((wdesc, _, _)) = self.by_wd.remove(&wd) {
                    let _ = self.inotify.watches().remove(wdesc);
                }
                self.by_role.remove(&role);
            }
            self.needs_sync = true;
            return;
        }
        let Some(name) = name else { return };
        let is_dir = mask.contains(EventMask::ISDIR);
        match role {
            Role::Root | Role::Folder(_) => {
                if is_dir {
                    self.needs_sync = true;
                }
            }
            Role::DateDir(fi, date_name) => {
                if is_dir || !layout::name_is_candidate(&name, &self.config.watch.extensions) {
                    return;
                }
                let path = dir.join(&name);
                if mask.contains(EventMask::ATTRIB) {
                    let _ = self.inputs.send(Input::Attrib(path));
                    return;
                }
                let created = mask.contains(EventMask::CREATE);
                if !created && !mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO) {
                    return;
                }
                let meta = match std::fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    // Gone already (a temp file renamed away): nothing to upload.
                    Err(_) => return,
                };
                let entry = layout::entry_type(&meta);
                if entry != EntryType::Regular {
                    if self.warned.insert(path.clone()) {
                        log::warn!(
                            "{}: not a regular file ({entry:?}): ignored, never opened",
                            display_name(path.as_os_str())
                        );
                    }
                    return;
                }
                let Some(folder) = self.config.watch.folders.get(fi) else {
                    return;
                };
                let version = Version::of(&meta);
                let now = self.clock.now_utc();
                // IN_CLOSE_WRITE / IN_MOVED_TO mean the writer is done: due now (the JPEG/PNG
                // end check still applies when it is sent). IN_CREATE of an empty file is a
                // writer just starting (IN_CLOSE_WRITE follows); with content, a link() or a
                // write already under way: due once settled, as a scan would find it.
                if created && version.size == 0 {
                    return;
                }
                let ready_at = if created {
                    crate::owner::judge::settle_time(
                        now,
                        version.mtime_ns,
                        self.config.watch.settle,
                    )
                } else {
                    now
                };
                batch.push(Observation {
                    path,
                    folder: folder.label.clone(),
                    date: date_name.to_string_lossy().into_owned(),
                    filename: name,
                    version,
                    ready_at: Timestamp::new(ready_at),
                    via_event: !created,
                });
            }
        }
    }

    fn add(&mut self, role: Role, path: &Path, mask: WatchMask) -> bool {
        if self.by_role.contains_key(&role) {
            return false;
        }
        match self.inotify.watches().add(path, mask) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                // The same directory reached under two roles shares one descriptor; the
                // more specific role wins.
                self.by_wd
                    .insert(id, (wd, role.clone(), path.to_path_buf()));
                self.by_role.insert(role, id);
                self.warned.remove(path);
                true
            }
            Err(e) => {
                let missing = matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR));
                if missing {
                    self.live.watch().missing.push(path.to_path_buf());
                    let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
                    if link && self.warned.insert(path.to_path_buf()) {
                        log::warn!(
                            "{} is a symbolic link, which is not followed below the configured directories: name its target as an absolute folder entry",
                            path.shown()
                        );
                    } else if self.warned.insert(path.to_path_buf()) {
                        log::warn!(
                            "{} does not exist (yet): watching for it to appear",
                            path.shown()
                        );
                    }
                } else if e.raw_os_error() == Some(libc::ENOSPC) {
                    self.limited += 1;
                    if !self.warned_limit {
                        self.warned_limit = true;
                        log::error!(
                            "inotify watch limit reached while watching {}: the minute rescan covers it, but new files there \
                             are seen late; raise it with `sysctl fs.inotify.max_user_watches=524288` \
                             (and in /etc/sysctl.d/ to keep it)",
                            path.shown()
                        );
                    }
                } else if self.warned.insert(path.to_path_buf()) {
                    log::warn!(
                        "cannot watch {}: {} (the minute rescan still covers it)",
                        path.shown(),
                        describe_io(&e)
                    );
                }
                false
            }
        }
    }

    /// Makes the set of watches match the config and the date window; lists every date
    /// folder that has just been watched.
    fn sync(&mut self) {
        self.needs_sync = false;
        self.retry_missing = Instant::now() + MISSING_RETRY;
        self.live.watch().missing.clear();
        let was_limited = self.limited;
        self.limited = 0;
        let config = self.config.clone();
        let mut wanted: HashSet<Role> = HashSet::new();
        wanted.insert(Role::Root);
        self.add(Role::Root, &config.watch.root, ROOT_MASK);
        let mut scan_only = Vec::new();
        let mut fresh: Vec<(usize, OsString)> = Vec::new();
        for (fi, folder) in config.watch.folders.iter().enumerate() {
            wanted.insert(Role::Folder(fi));
            let mask = if folder.below.is_some() {
                FOLDER_MASK
            } else {
                ROOT_MASK
            };
            let new_folder = self.add(Role::Folder(fi), &folder.path, mask);
            if new_folder {
                if let Some(k) = fs_kind(&folder.path).filter(|k| !k.gives_events) {
                    log::warn!(
                        "{} is on {}, which gives no inotify events for changes made elsewhere: the minute scan is the detector there",
                        folder.path.shown(),
                        k.name
                    );
                }
            }
            if fs_kind(&folder.path).is_some_and(|k| !k.gives_events) {
                scan_only.push(label_shown(&folder.label));
            }
            if !self.by_role.contains_key(&Role::Folder(fi)) {
                continue;
            }
            let dirs = match layout::date_dirs_in_window(&folder.path, &self.window) {
                Ok(d) => d,
                Err(e) => {
                    log::warn!("cannot list {}: {}", folder.path.shown(), describe_io(&e));
                    continue;
                }
            };
            for (_, name) in dirs {
                let role = Role::DateDir(fi, name.clone());
                wanted.insert(role.clone());
                if self.add(role, &folder.path.join(&name), DATE_MASK) {
                    fresh.push((fi, name));
                }
            }
        }
        // Watches no longer wanted: date folders that left the window, removed folders.
        let stale: Vec<i32> = self
            .by_wd
            .iter()
            .filter(|(_, (_, role, _))| !wanted.contains(role))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((wd, role, _)) = self.by_wd.remove(&id) {
                self.by_role.remove(&role);
                let _ = self.inotify.watches().remove(wd);
            }
        }
        if self.limited > 0 {
            self.retry_limited = Instant::now() + config.watch.scan_interval;
        } else if was_limited > 0 {
            log::info!("every directory is watched again (the inotify watch limit no longer stands in the way)");
            self.warned_limit = false;
        }
        {
            let mut st = self.live.watch();
            st.watched_dirs = self.by_wd.len();
            st.scan_only = scan_only;
            st.unwatched = self.limited;
        }
        // Watch first, list second: files written before the watch existed are found here.
        let mut summary = scanner::Summary::default();
        for (fi, name) in fresh {
            if let Some(folder) = config.watch.folders.get(fi) {
                log::debug!("watching {}", folder.path.join(&name).shown());
                if scanner::send_listing(
                    folder,
                    &name,
                    &config.watch.extensions,
                    &self.inputs,
                    &mut summary,
                )
                .is_none()
                {
                    return;
                }
            }
        }
    }
}

/// The folder list a STATUS line and the start-up line name. A label is a directory's name:
/// escaped as every name is (a newline in it would start a line of its own in the log, and
/// a new assignment in the sd_notify message).
pub fn describe_folders(folders: &[Folder]) -> String {
    folders
        .iter()
        .map(|f| label_shown(&f.label))
        .collect::<Vec<_>>()
        .join(",")
}

fn label_shown(label: &str) -> String {
    display_name(std::ffi::OsStr::new(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: with one folder of the config absent, every batch of events cost a whole
    /// sync (statfs and a listing of every folder, an add_watch and an lstat for the
    /// absent one). The absent folder is looked for once a `MISSING_RETRY`; created under
    /// the root it is watched at once, from the root's event.
    #[test]
    fn a_missing_folder_is_looked_for_once_a_second_and_watched_when_it_appears() {
        let dir = std::env::temp_dir().join(format!("sega-watch-missing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let clock = Clock::system();
        let today = layout::format_date(clock.today_local());
        std::fs::create_dir_all(dir.join("Sega_1").join(&today)).unwrap();
        let config = crate::config::parse(
            &serde_json::json!({
                "watch": { "root": &dir, "folders": ["Sega_1", "Sega_2"] },
                "upload": { "url": "http://127.0.0.1:9/upload" },
                "database": { "path": dir.join("sega.db") }
            })
            .to_string(),
        )
        .unwrap();
        let (inputs, observed) = crossbeam_channel::unbounded();
        let (rescan, _rescans) = crossbeam_channel::unbounded();
        let live = Arc::new(Live::default());
        let mut w = Watcher::new(Arc::new(config), clock, inputs, rescan, live.clone()).unwrap();
        w.sync();
        assert_eq!(live.watch().missing, [dir.join("Sega_2")]);
        let now = Instant::now();
        assert!(!w.sync_due(now), "not looked for again at every wake-up");
        assert!(
            w.sync_due(now + MISSING_RETRY),
            "looked for again a moment later"
        );

        std::fs::write(dir.join("Sega_1").join(&today).join("a.jpg"), b"x").unwrap();
        std::fs::create_dir(dir.join("Sega_2")).unwrap();
        let mut buf = vec![0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !w.by_role.contains_key(&Role::Folder(1)) && Instant::now() < deadline {
            if w.poll(Duration::from_millis(100)) {
                w.read(&mut buf).unwrap();
            }
        }
        assert!(
            w.by_role.contains_key(&Role::Folder(1)),
            "Sega_2 watched once created"
        );
        assert!(live.watch().missing.is_empty());
        assert!(observed.try_iter().count() > 0, "a.jpg reported meanwhile");
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn folder_labels_are_named_escaped() {
        let folder = |label: &str| Folder {
            label: label.into(),
            path: std::path::PathBuf::from("/data").join(label),
            anchor: std::path::PathBuf::from("/data"),
            below: Some(label.into()),
        };
        assert_eq!(
            describe_folders(&[folder("Sega_1"), folder("cam\nREADY=1\u{202e}")]),
            "Sega_1,cam\\x0aREADY=1\\u{202e}"
        );
    }
}
