//! The file rules on literal names and dates, and on real files in a temp dir: FIFOs,
//! symlinks, sockets, tiny JPEGs and PNGs, a large date folder.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration as StdDuration, Instant, UNIX_EPOCH};

use time::Date;

use super::content::{looks_complete, magic_ok, TAIL_WINDOW};
use super::list::PARALLEL_LSTAT_MIN;
use super::open::open_no_follow;
use super::*;

/// A per-test directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sega-layout-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
}

fn exts() -> Vec<String> {
    vec!["jpg".into(), "jpeg".into(), "png".into()]
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn day(s: &str) -> Date {
    parse_date_dir(os(s)).unwrap()
}

fn folder<'a>(label: &'a str, dir: &'a Path) -> FolderRef<'a> {
    FolderRef { label, dir }
}

/// The outcome of `f(path)` as text: "ok" or the OpenError's Display.
fn outcome(f: fn(&Path) -> Result<(File, Metadata), OpenError>, path: &Path) -> String {
    f(path).map_or_else(|e| e.to_string(), |_| "ok".into())
}

/// A complete 1×1 greyscale baseline JPEG: SOI, APP0 (JFIF), DQT, SOF0, DHT ×2, SOS,
/// one byte of entropy-coded data, EOI. (`file` reports it as a 1x1 JPEG.)
fn tiny_jpeg() -> Vec<u8> {
    let mut j = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0,
    ];
    j.extend([1, 1, 0, 0, 1, 0, 1, 0, 0]);
    j.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    j.extend([0xFF, 0xC0, 0x00, 0x0B, 0x08, 0, 1, 0, 1, 1, 1, 0x11, 0]);
    for class in [0x00, 0x10] {
        // One code of length 1 for symbol 0 (DC: category 0; AC: end of block).
        j.extend([0xFF, 0xC4, 0x00, 0x14, class, 1]);
        j.extend([0u8; 16]);
    }
    j.extend([0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    j.extend([0x3F, 0xFF, 0xD9]);
    j
}

/// A complete 1×1 greyscale PNG: signature, IHDR, IDAT (zlib of one scanline), IEND,
/// with real CRCs (checked with Python's zlib and `file`).
const TINY_PNG: [u8; 70] = [
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, // signature
    0x00, 0x00, 0x00, 0x0D, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0x3A,
    0x7E, 0x9B, 0x55, // IHDR
    0x00, 0x00, 0x00, 0x0D, b'I', b'D', b'A', b'T', 0x78, 0x01, 0x01, 0x02, 0x00, 0xFD, 0xFF, 0x00,
    0x00, 0x00, 0x02, 0x00, 0x01, 0x7E, 0x05, 0x0D, 0xD2, // IDAT
    0x00, 0x00, 0x00, 0x00, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82, // IEND
];

#[test]
fn window_holds_lookback_today_and_tomorrow() {
    let w = Window::new(day("2026-11-26"), 0);
    assert_eq!(w.dates(), [day("2026-11-26"), day("2026-11-27")]);
    assert!(!w.contains(day("2026-11-25")) && !w.contains(day("2026-11-28")));
    let w = Window::new(day("2026-11-26"), 7);
    assert_eq!((w.first, w.last), (day("2026-11-19"), day("2026-11-27")));
    assert_eq!(w.dates().len(), 9);
    assert!(w.contains(day("2026-11-19")) && !w.contains(day("2026-11-18")));
}

#[test]
fn window_moves_at_midnight_and_across_month_and_year_ends() {
    let (before, after) = (
        Window::new(day("2026-11-26"), 1),
        Window::new(day("2026-11-27"), 1),
    );
    assert!(before.contains(day("2026-11-25")) && !after.contains(day("2026-11-25")));
    assert!(!before.contains(day("2026-11-28")) && after.contains(day("2026-11-28")));
    assert_eq!(Window::new(day("2026-01-31"), 0).last, day("2026-02-01"));
    let w = Window::new(day("2026-12-31"), 7);
    assert_eq!((w.first, w.last), (day("2026-12-24"), day("2027-01-01")));
    let w = Window::new(day("2027-01-01"), 1);
    let all = [day("2026-12-31"), day("2027-01-01"), day("2027-01-02")];
    assert_eq!(w.dates(), all);
    assert_eq!(Window::new(day("2028-03-01"), 1).first, day("2028-02-29"));
    // Saturation at the ends of the calendar.
    assert_eq!(Window::new(Date::MAX, 1).dates().len(), 2);
    assert_eq!(Window::new(Date::MIN, 5).first, Date::MIN);
}

#[test]
fn date_dir_names_are_strict() {
    assert_eq!(day("2028-02-29").to_string(), "2028-02-29");
    let bad = "2026-02-29 2026-02-30 2026-13-01 2026-00-10 2026-01-00 2026-1-05 2026-01-5 \
               26-01-05 2026/01/05 2026-01-05x +026-01-05 2026-+1-05 2026-01-0a 20260105";
    for name in bad.split(' ').chain([" 2026-01-05", "2026-01-05 ", ""]) {
        assert_eq!(parse_date_dir(os(name)), None, "{name:?}");
    }
    assert_eq!(parse_date_dir(OsStr::from_bytes(b"2026-01-\xff5")), None);
    assert_eq!(format_date(day("2026-01-05")), "2026-01-05");
}

#[test]
fn locate_accepts_exactly_folder_date_name() {
    let folders = [
        folder("Sega_1", Path::new("/data/Sega_1")),
        folder("Sega_2", Path::new("/mnt/other/Sega_2/")),
        folder("Dup", Path::new("/data/Sega_1")),
    ];
    let loc = locate(&folders, Path::new("/data/Sega_1/2026-11-26/IMG_0001.jpg"));
    let want = Location {
        folder: "Sega_1".into(),
        date: day("2026-11-26"),
        date_dir: "2026-11-26".into(),
        name: "IMG_0001.jpg".into(),
    };
    assert_eq!(loc, Some(want));
    let loc = locate(&folders, Path::new("/mnt/other/Sega_2/2026-11-27/c.PNG")).unwrap();
    assert_eq!(
        (loc.folder.as_str(), loc.date),
        ("Sega_2", day("2026-11-27"))
    );
    for rejected in [
        "/data/Sega_1/IMG_0001.jpg",          // directly in the folder
        "/data/Sega_1/2026-11-26/sub/x.jpg",  // deeper
        "/data/Sega_1/2026-11-26/a/b/x.jpg",  // deeper still
        "/data/Sega_1/holiday/x.jpg",         // not a date
        "/data/Sega_1/2026-02-30/x.jpg",      // not a real date
        "/data/Sega_3/2026-11-26/x.jpg",      // not a watched folder
        "/data/2026-11-26/x.jpg",             // the root itself
        "/data/Sega_1/2026-11-26",            // the date dir itself
        "/data/Sega_1/2026-11-26/..",         // not a name
        "/data/Sega_1/x/../2026-11-26/y.jpg", // not canonical
    ] {
        assert_eq!(locate(&folders, Path::new(rejected)), None, "{rejected}");
    }
    assert_eq!(
        locate(&[], Path::new("/data/Sega_1/2026-11-26/a.jpg")),
        None
    );
}

#[test]
fn name_rule() {
    let e = exts();
    for ok in "IMG_0001.jpg a.JPG b.Jpeg c.png x.part.jpg x.tmp.PNG a+b.jpg".split(' ') {
        assert!(name_is_candidate(os(ok), &e), "{ok}");
    }
    let no = ".hidden.jpg .jpg x.jpg.part x.JPG.PART x.tmp x.jpg.tmp x.filepart \
              x.jpg.crdownload notes.txt jpg noext x. x.jpgx x.jpg~";
    for name in no.split(' ').chain([""]) {
        assert!(!name_is_candidate(os(name), &e), "{name}");
    }
    // CP949 "사진.jpg": not UTF-8, still a candidate.
    assert!(name_is_candidate(
        OsStr::from_bytes(b"\xbb\xe7\xc1\xf8.jpg"),
        &e
    ));
    assert!(!name_is_candidate(OsStr::from_bytes(b"\xbb\xe7.txt"), &e));
    // An operator's own extension, with or without the dot; partial suffixes never count.
    let custom = vec![".bmp".to_string(), "tmp".to_string()];
    assert!(name_is_candidate(os("a.BMP"), &custom));
    assert!(!name_is_candidate(os("a.tmp"), &custom) && !name_is_candidate(os("a.jpg"), &custom));
}

#[test]
fn kinds_and_content_types() {
    for (name, kind) in [
        ("a.jpg", Kind::Jpeg),
        ("a.JPEG", Kind::Jpeg),
        ("a.Png", Kind::Png),
    ] {
        assert_eq!(kind_of(os(name)), kind, "{name}");
    }
    assert_eq!(kind_of(os("a.bmp")), Kind::Other);
    assert_eq!(kind_of(os("jpg")), Kind::Other);
    assert_eq!(kind_of(OsStr::from_bytes(b"\xbb.jpg")), Kind::Jpeg);
    assert_eq!(content_type(Kind::Jpeg), "image/jpeg");
    assert_eq!(content_type(Kind::Png), "image/png");
    assert_eq!(content_type(Kind::Other), "application/octet-stream");
}

#[test]
fn magic_and_end_markers() {
    let jpeg = tiny_jpeg();
    assert!(magic_ok(Kind::Jpeg, &jpeg) && looks_complete(Kind::Jpeg, &jpeg));
    assert!(magic_ok(Kind::Png, &TINY_PNG) && looks_complete(Kind::Png, &TINY_PNG));
    assert!(!magic_ok(Kind::Png, &jpeg) && !magic_ok(Kind::Jpeg, &TINY_PNG));
    assert!(!looks_complete(Kind::Jpeg, &jpeg[..jpeg.len() - 1]));
    assert!(!looks_complete(Kind::Png, &TINY_PNG[..TINY_PNG.len() - 1]));
    assert!(!magic_ok(Kind::Jpeg, b"hello") && !magic_ok(Kind::Jpeg, &[0xFF, 0xD8]));
    assert!(magic_ok(Kind::Other, b"") && looks_complete(Kind::Other, b""));
}

#[test]
fn content_rule_on_files() {
    use Content::{Image, Incomplete, NotAnImage};
    let t = TempDir::new();
    let jpeg = tiny_jpeg();
    // A trailer after EOI: within the window still complete; one byte beyond, not.
    let mut trailer = jpeg.clone();
    trailer.resize(jpeg.len() + TAIL_WINDOW as usize - 2, 0);
    let mut long_trailer = trailer.clone();
    long_trailer.push(0);
    // Large files: the start and the end are read, not the middle.
    let mut big_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
    big_jpeg.resize(1 << 20, 0x55);
    big_jpeg.extend([0xFF, 0xD9]);
    let mut big_png = TINY_PNG[..33].to_vec();
    big_png.resize(1 << 20, 0);
    big_png.extend(&TINY_PNG[TINY_PNG.len() - 12..]);
    let cases: [(&[u8], Kind, Content); 14] = [
        (&jpeg, Kind::Jpeg, Image),
        (&TINY_PNG, Kind::Png, Image),
        (&jpeg[..100], Kind::Jpeg, Incomplete),
        (&TINY_PNG[..60], Kind::Png, Incomplete),
        (&[0xFF, 0xD8], Kind::Jpeg, Incomplete),
        (b"hello, world\n", Kind::Jpeg, NotAnImage),
        (&jpeg, Kind::Png, NotAnImage),
        (b"", Kind::Jpeg, NotAnImage),
        (b"", Kind::Other, NotAnImage),
        (b"BM anything", Kind::Other, Image),
        (&trailer, Kind::Jpeg, Image),
        (&long_trailer, Kind::Jpeg, Incomplete),
        (&big_jpeg, Kind::Jpeg, Image),
        (&big_png, Kind::Png, Image),
    ];
    for (i, (bytes, kind, want)) in cases.into_iter().enumerate() {
        let path = t.0.join(format!("{i}"));
        fs::write(&path, bytes).unwrap();
        let (file, meta) = open_regular(&path).unwrap();
        assert_eq!(
            check_content(&file, meta.len(), kind).unwrap(),
            want,
            "case {i}"
        );
    }
    // Shrunk since its fstat: re-checked later, not skipped.
    let path = t.0.join("shrunk.jpg");
    fs::write(&path, &jpeg).unwrap();
    let (file, meta) = open_regular(&path).unwrap();
    for now in [&[0xFF, 0xD8, 0xFF, 0xE0][..], b""] {
        fs::write(&path, now).unwrap();
        assert_eq!(
            check_content(&file, meta.len(), Kind::Jpeg).unwrap(),
            Incomplete
        );
    }
}

#[test]
fn open_regular_opens_a_regular_file_for_blocking_reads() {
    let t = TempDir::new();
    let path = t.0.join("a.jpg");
    fs::write(&path, tiny_jpeg()).unwrap();
    let (file, meta) = open_regular(&path).unwrap();
    let lstat = fs::symlink_metadata(&path).unwrap();
    assert_eq!(Version::of(&meta), Version::of(&lstat));
    assert_eq!((meta.dev(), meta.ino()), (lstat.dev(), lstat.ino()));
    // SAFETY: F_GETFL on an open descriptor.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0, "O_NONBLOCK left set");
}

#[test]
fn open_regular_refuses_symlinks_without_touching_the_target() {
    let t = TempDir::new();
    let target = t.0.join("target.jpg");
    fs::write(&target, tiny_jpeg()).unwrap();
    let fifo = t.0.join("fifo");
    mkfifo(&fifo);
    // Were a target followed, the dangling link would be "vanished" and the FIFO's a FIFO.
    for (link, to) in [
        ("link.jpg", target),
        ("dangling.jpg", t.0.join("no")),
        ("f.jpg", fifo),
    ] {
        let link = t.0.join(link);
        symlink(&to, &link).unwrap();
        assert_eq!(outcome(open_regular, &link), "not a regular file (symlink)");
        // The race path, with no lstat first: O_NOFOLLOW refuses it with ELOOP.
        assert_eq!(
            outcome(open_no_follow, &link),
            "not a regular file (symlink)"
        );
    }
}

#[test]
fn open_regular_never_blocks_on_a_fifo() {
    let t = TempDir::new();
    let fifo = t.0.join("f.jpg");
    mkfifo(&fifo);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let gated = outcome(open_regular, &fifo);
        // Also the race path, where the FIFO really is opened: O_NONBLOCK returns at once.
        let raced = outcome(open_no_follow, &fifo);
        let _ = tx.send((gated, raced, started.elapsed()));
    });
    let (gated, raced, took) = rx
        .recv_timeout(StdDuration::from_secs(5))
        .expect("timeout: opening a FIFO blocked");
    assert_eq!(
        (gated.as_str(), raced.as_str()),
        ("not a regular file (FIFO)", "not a regular file (FIFO)")
    );
    assert!(took < StdDuration::from_secs(1), "{took:?}");
}

#[test]
fn open_regular_classifies_the_rest() {
    let t = TempDir::new();
    fs::create_dir(t.0.join("d.jpg")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(t.0.join("s.jpg")).unwrap();
    fs::write(t.0.join("f.jpg"), b"x").unwrap();
    for (path, want) in [
        (t.0.join("d.jpg"), "not a regular file (directory)"),
        (t.0.join("s.jpg"), "not a regular file (socket)"),
        (t.0.join("missing.jpg"), "vanished"),
        (t.0.join("f.jpg/x.jpg"), "vanished"), // ENOTDIR
        (
            PathBuf::from("/dev/null"),
            "not a regular file (character device)",
        ),
    ] {
        assert_eq!(outcome(open_regular, &path), want, "{path:?}");
        if path.starts_with(&t.0) {
            assert_eq!(outcome(open_no_follow, &path), want, "{path:?}");
        }
    }
}

#[test]
fn open_errors_read_well_and_permission_is_retryable() {
    assert_eq!(OpenError::Vanished.to_string(), "vanished");
    let e = OpenError::Unreadable(io::Error::from_raw_os_error(libc::EACCES));
    assert_eq!(e.to_string(), "unreadable: Permission denied (os error 13)");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("EACCES case skipped: root reads files whatever their mode");
        return;
    }
    let t = TempDir::new();
    let path = t.0.join("locked.jpg");
    fs::write(&path, b"x").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    let e = open_regular(&path).unwrap_err();
    assert!(matches!(e, OpenError::Unreadable(_)), "{e}");
    assert_eq!(e.to_string(), "unreadable: Permission denied (os error 13)");
}

#[test]
fn entry_types_and_versions_from_lstat() {
    let t = TempDir::new();
    let d = &t.0;
    let f = File::create(d.join("r")).unwrap();
    f.set_len(5).unwrap();
    f.set_modified(UNIX_EPOCH + StdDuration::new(1_764_115_200, 123_456_789))
        .unwrap();
    drop(f);
    symlink(d.join("r"), d.join("l")).unwrap();
    mkfifo(&d.join("f"));
    let lstat = |n: &str| fs::symlink_metadata(d.join(n)).unwrap();
    assert_eq!(entry_type(&lstat("r")), EntryType::Regular);
    assert_eq!(entry_type(&lstat("l")), EntryType::Symlink);
    assert_eq!(entry_type(&lstat("f")), EntryType::Fifo);
    assert_eq!(entry_type(&lstat("")), EntryType::Directory);
    let v = Version::of(&lstat("r"));
    assert_eq!((v.size, v.mtime_ns), (5, 1_764_115_200_123_456_789));
}

#[test]
fn names_for_display() {
    assert_eq!(
        display_name(OsStr::from_bytes(b"\xbb\xe7\xc1\xf8.jpg")),
        r"\xbb\xe7\xc1\xf8.jpg"
    );
    assert_eq!(display_name(os("사진.jpg")), "사진.jpg");
    assert_eq!(
        display_name(os("a\nb\\c\u{85}.jpg")),
        r"a\x0ab\\c\u{0085}.jpg"
    );
    // A UTF-8 name spelled like an escape reads apart from the bytes it spells.
    assert_eq!(display_name(os(r"\xbb.jpg")), r"\\xbb.jpg");
    // Separators and bidirectional controls would break or reverse the line in a viewer.
    assert_eq!(
        display_name(os("a\u{2028}b\u{202e}gpj.exe")),
        r"a\u{2028}b\u{202e}gpj.exe"
    );
    // An answer's text: escaped the same way, but its backslashes and tabs kept.
    assert_eq!(
        text_line("{\"a\":\"x\\\"y\"}\t\u{1b}[2J\u{7f}\u{85}\u{202e}ok \u{fffd}"),
        "{\"a\":\"x\\\"y\"}\t\\x1b[2J\\x7f\\u{0085}\\u{202e}ok \u{fffd}"
    );
}

#[test]
fn list_date_dir_returns_candidates_with_types() {
    let t = TempDir::new();
    let folder_dir = t.0.join("Sega_1");
    let dir = folder_dir.join("2026-11-26");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.jpg"), tiny_jpeg()).unwrap();
    fs::write(dir.join("B.PNG"), TINY_PNG).unwrap();
    fs::write(dir.join(OsStr::from_bytes(b"\xbb\xe7.jpg")), b"x").unwrap();
    symlink(dir.join("a.jpg"), dir.join("link.jpg")).unwrap();
    mkfifo(&dir.join("pipe.jpg"));
    fs::create_dir(dir.join("dir.jpg")).unwrap();
    for skipped in [
        "notes.txt",
        ".hidden.jpg",
        "c.jpg.part",
        "noext",
        "sub/deep.jpg",
    ] {
        fs::write(dir.join(skipped), b"x").unwrap();
    }
    let f = folder("Sega_1", &folder_dir);
    let mut seen = list_date_dir(&f, os("2026-11-26"), &exts()).unwrap();
    seen.sort_by(|a, b| a.location.name.cmp(&b.location.name));
    let got: Vec<_> = seen
        .iter()
        .map(|s| {
            (
                s.location.name.as_bytes(),
                s.entry,
                s.version.map(|v| v.size),
            )
        })
        .collect();
    let want: [(&[u8], _, _); 6] = [
        (b"B.PNG", EntryType::Regular, Some(TINY_PNG.len() as u64)),
        (b"a.jpg", EntryType::Regular, Some(tiny_jpeg().len() as u64)),
        (b"dir.jpg", EntryType::Directory, None),
        (b"link.jpg", EntryType::Symlink, None),
        (b"pipe.jpg", EntryType::Fifo, None),
        (b"\xbb\xe7.jpg", EntryType::Regular, Some(1)),
    ];
    assert_eq!(got, want);
    for s in &seen {
        assert_eq!(s.path, dir.join(&s.location.name));
        assert_eq!(locate(&[f], &s.path).as_ref(), Some(&s.location));
    }
    // Not a date name: an error. Missing, or a symlink (not followed): empty.
    let err = list_date_dir(&f, os("holiday"), &exts()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    symlink(&dir, folder_dir.join("2026-11-25")).unwrap();
    let nowhere = t.0.join("nowhere");
    for (f, name) in [
        (f, "2026-11-27"),
        (f, "2026-11-25"),
        (folder("X", &nowhere), "2026-11-26"),
    ] {
        assert!(
            list_date_dir(&f, os(name), &exts()).unwrap().is_empty(),
            "{name}"
        );
    }
}

#[test]
fn list_date_dir_stats_a_large_directory_in_parallel() {
    let t = TempDir::new();
    let dir = t.0.join("2026-11-26");
    fs::create_dir(&dir).unwrap();
    let n = PARALLEL_LSTAT_MIN + 11;
    for i in 0..n {
        fs::write(dir.join(format!("{i:05}.jpg")), vec![0u8; i % 7]).unwrap();
    }
    let seen = list_date_dir(&folder("S", &t.0), os("2026-11-26"), &exts()).unwrap();
    assert_eq!(seen.len(), n);
    for s in &seen {
        let i: usize = s.location.name.to_str().unwrap()[..5].parse().unwrap();
        let size = s.version.map(|v| v.size);
        assert_eq!(
            (s.entry, size),
            (EntryType::Regular, Some((i % 7) as u64)),
            "{i}"
        );
    }
}

#[test]
fn date_dirs_in_window_lists_real_date_dirs_in_order() {
    let t = TempDir::new();
    for d in "2026-11-27 2026-11-25 2026-11-26 2026-11-24 2026-11-28 holiday 2026-02-30".split(' ')
    {
        fs::create_dir(t.0.join(d)).unwrap();
    }
    fs::write(t.0.join("2026-11-26.jpg"), b"x").unwrap();
    let w = Window::new(day("2026-11-26"), 1);
    let got = date_dirs_in_window(&t.0, &w).unwrap();
    let want: Vec<_> = ["2026-11-25", "2026-11-26", "2026-11-27"]
        .map(|d| (day(d), OsString::from(d)))
        .into();
    assert_eq!(got, want);
    // A symlink named like a date is not a date directory; a regular file neither.
    let t2 = TempDir::new();
    symlink(t.0.join("2026-11-26"), t2.0.join("2026-11-26")).unwrap();
    fs::write(t2.0.join("2026-11-25"), b"").unwrap();
    assert!(date_dirs_in_window(&t2.0, &w).unwrap().is_empty());
    assert!(date_dirs_in_window(&t.0.join("missing"), &w)
        .unwrap()
        .is_empty());
}

/// `cargo test --release -- --ignored rescan_speed --nocapture`: 100,000 files in one date
/// folder, all candidates, listed with a warm cache.
#[test]
#[ignore]
fn rescan_speed() {
    let t = TempDir::new();
    let dir = t.0.join("2026-11-26");
    fs::create_dir(&dir).unwrap();
    for i in 0..100_000 {
        File::create(dir.join(format!("IMG_{i:06}.jpg"))).unwrap();
    }
    let mut best = StdDuration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let seen = list_date_dir(&folder("S", &t.0), os("2026-11-26"), &exts()).unwrap();
        best = best.min(started.elapsed());
        assert_eq!(seen.len(), 100_000);
    }
    eprintln!("list_date_dir of 100,000 files: {best:?}");
    assert!(best < StdDuration::from_millis(200), "{best:?}");
}
