//! The content rule: the magic bytes at a file's start and a JPEG EOI / PNG IEND near its
//! end, read with pread and never the whole file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::name::Kind;

/// How far from the end the JPEG end-of-image marker or the PNG IEND chunk may be for a file
/// to count as complete. Cameras may append padding or a short trailer after EOI, which is
/// why the check is "near the end" and not "at the end"; 1 KiB is one small pread. A longer
/// trailer makes the file look incomplete, and it is uploaded with a WARN once
/// `watch.incomplete_max_wait_secs` passes unchanged. Assumed, untested on real cameras: that
/// an embedded EXIF thumbnail's own EOI (near the start) is rarely in the last 1 KiB of a
/// half-written file; the primary completeness signals are IN_CLOSE_WRITE and settle time.
pub const TAIL_WINDOW: u64 = 1024;

const JPEG_SOI: [u8; 3] = [0xFF, 0xD8, 0xFF];
const JPEG_EOI: [u8; 2] = [0xFF, 0xD9];
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
/// The IEND chunk type and its CRC, which never varies (the chunk has no data).
const PNG_IEND: [u8; 8] = [b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
/// Bytes read from the start: the longest signature.
const HEAD_LEN: usize = PNG_SIGNATURE.len();

/// The result of the content rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Image,
    /// Wrong magic bytes or empty: `skipped`, "not an image".
    NotAnImage,
    /// No end marker near the end (or shorter than its signature so far): still being written.
    Incomplete,
}

fn signature(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Jpeg => &JPEG_SOI,
        Kind::Png => &PNG_SIGNATURE,
        Kind::Other => &[],
    }
}

/// Does the file's start carry the kind's magic bytes? (Other: no check.)
pub fn magic_ok(kind: Kind, head: &[u8]) -> bool {
    head.starts_with(signature(kind))
}

/// Does the file's last [`TAIL_WINDOW`] bytes hold the kind's end marker? (Other: yes.)
pub fn looks_complete(kind: Kind, tail: &[u8]) -> bool {
    let marker: &[u8] = match kind {
        Kind::Jpeg => &JPEG_EOI,
        Kind::Png => &PNG_IEND,
        Kind::Other => return true,
    };
    // From the end: a finished image ends with its marker, so the first window looked at
    // is usually the one (the same answer as a search from the start, 1,000 times sooner).
    tail.windows(marker.len()).rev().any(|w| w == marker)
}

/// The content rule on an open file of `size` bytes (from its fstat), reading only the first
/// [`HEAD_LEN`] and the last [`TAIL_WINDOW`] bytes with pread — never the whole file, and
/// without moving the file position, so the upload can stream it from 0 afterwards.
///
/// A 0-byte file is NotAnImage (DESIGN.md §3). A non-empty file shorter than its signature
/// whose bytes so far match it is Incomplete rather than NotAnImage: a write caught early is
/// re-checked instead of being skipped for good. The same holds if the file shrank since fstat.
pub fn check_content(file: &File, size: u64, kind: Kind) -> io::Result<Content> {
    if size == 0 {
        return Ok(Content::NotAnImage);
    }
    if kind == Kind::Other {
        return Ok(Content::Image);
    }
    let mut head = [0u8; HEAD_LEN];
    let n = read_full_at(file, &mut head, 0)?;
    let head = &head[..n];
    if !magic_ok(kind, head) {
        return Ok(if signature(kind).starts_with(head) {
            Content::Incomplete
        } else {
            Content::NotAnImage
        });
    }
    let start = size.saturating_sub(TAIL_WINDOW);
    let mut tail = [0u8; TAIL_WINDOW as usize];
    // size - start <= TAIL_WINDOW, so the cast cannot truncate.
    let len = (size - start) as usize;
    let n = read_full_at(file, &mut tail[..len], start)?;
    Ok(if looks_complete(kind, &tail[..n]) {
        Content::Image
    } else {
        Content::Incomplete
    })
}

/// pread until `buf` is full or end of file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            // End of file early: it was truncated since its fstat.
            Ok(0) => break,
            Ok(n) => done += n,
            // EINTR: retry.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
