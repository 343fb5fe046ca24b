//! The name rule (not hidden, a configured extension, not a partial transfer) and a file's
//! kind by its extension, on raw name bytes: no filesystem access.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Suffixes that transfer tools give a file while it is still being written (Firefox `.part`,
/// WinSCP `.filepart`, Chrome `.crdownload`, many tools `.tmp`). Rejected even if an operator
/// lists one of them in `watch.extensions`.
pub const PARTIAL_SUFFIXES: [&str; 4] = ["part", "tmp", "filepart", "crdownload"];

/// The bytes after the last `.`, if there is one that is neither the first nor the last byte
/// (".jpg" and "x." have no extension, as with `Path::extension`).
fn extension(name: &[u8]) -> Option<&[u8]> {
    let dot = name.iter().rposition(|&b| b == b'.')?;
    let ext = &name[dot + 1..];
    (dot > 0 && !ext.is_empty()).then_some(ext)
}

/// The name rule. A name is a candidate when it is not hidden (no leading `.`: rsync and many
/// uploaders write to hidden temporary names) and its LAST extension is one of `extensions`,
/// compared ASCII case-insensitively (`.JPG` counts), and is not a partial-transfer suffix.
///
/// Only the last extension matters, because transfer tools append their suffix to the final
/// name: "x.jpg.part" is a transfer in progress and is rejected, while "x.part.jpg" is a
/// finished file whose name happens to contain ".part" and is a candidate.
/// Works on raw bytes, so a non-UTF-8 name (CP949 from an old Samba share) is a candidate when
/// its extension matches. Allocates nothing: it runs on every directory entry of a rescan.
pub fn name_is_candidate(name: &OsStr, extensions: &[String]) -> bool {
    let name = name.as_bytes();
    if name.first() == Some(&b'.') {
        return false;
    }
    let Some(ext) = extension(name) else {
        return false;
    };
    if PARTIAL_SUFFIXES
        .iter()
        .any(|p| ext.eq_ignore_ascii_case(p.as_bytes()))
    {
        return false;
    }
    extensions.iter().any(|e| {
        // Tolerate "jpg" and ".jpg" alike; config validation should have settled on the former.
        let e = e.strip_prefix('.').unwrap_or(e);
        ext.eq_ignore_ascii_case(e.as_bytes())
    })
}

/// What the content rule checks a file as, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    /// Another operator-configured extension (e.g. "bmp"): no content check.
    Other,
}

/// By extension, case-insensitively: jpg/jpeg → Jpeg, png → Png, anything else → Other.
pub fn kind_of(name: &OsStr) -> Kind {
    match extension(name.as_bytes()) {
        Some(e) if e.eq_ignore_ascii_case(b"jpg") || e.eq_ignore_ascii_case(b"jpeg") => Kind::Jpeg,
        Some(e) if e.eq_ignore_ascii_case(b"png") => Kind::Png,
        _ => Kind::Other,
    }
}

/// The Content-Type of the file part of the upload.
pub fn content_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Jpeg => "image/jpeg",
        Kind::Png => "image/png",
        Kind::Other => "application/octet-stream",
    }
}
