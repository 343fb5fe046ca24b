//! The request's body and names: the multipart form (text fields, then the file streamed
//! from disk with an exact length), the file name as it goes into `filename="…"`, the
//! boundary, and the `Idempotency-Key` that names one version of one file.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Instant;

use attohttpc::body::{Body, BodyKind};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::send::RateLimiter;
use crate::layout::Version;

/// `Idempotency-Key`: hex SHA-256 over (scope, folder label, date, file name bytes, size,
/// mtime_ns). Each text field is prefixed by its length as 8 big-endian bytes so no two
/// different tuples hash the same input; size and mtime_ns are 8 big-endian bytes each.
pub fn idempotency_key(
    scope: &str,
    folder: &str,
    date: &str,
    filename: &[u8],
    v: Version,
) -> String {
    let mut h = Sha256::new();
    for part in [
        scope.as_bytes(),
        folder.as_bytes(),
        date.as_bytes(),
        filename,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(v.size.to_be_bytes());
    h.update(v.mtime_ns.to_be_bytes());
    hex(&h.finalize())
}

/// Lower-case hex. Twice per upload (the idempotency key, the boundary): a `format!` per
/// byte was 64 allocations, most of the workers' formatting time in the profile.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A file name as it goes into `filename="…"` (RFC 7578 §4.2): `"`, `\`, `%`, CR, LF,
/// other control bytes and bytes that are not valid UTF-8 are percent-encoded; valid
/// non-ASCII UTF-8 (Korean names) is sent as is. `%` is encoded too, so the encoding is
/// lossless; `\` is, because a quoted-string parser reads `\x` as `x`.
pub fn encode_filename(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '"' || c == '%' || c == '\\' || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request body: text parts, the file part's header, the file streamed from disk in
/// 64 KiB pieces, the closing boundary. Its length is known up front, so attohttpc sends a
/// `Content-Length` and no chunked encoding.
pub struct MultipartBody {
    boundary: String,
    head: Vec<u8>,
    file: File,
    file_len: u64,
    tail: Vec<u8>,
    limiter: Option<Arc<RateLimiter>>,
    /// The version the file must still be after its last byte is read, before the closing
    /// boundary goes (set when a field holds its checksum: see `checksum`).
    unchanged: Option<Version>,
    /// Set when the file could not be sent as advertised (shrank, changed under a checksum,
    /// or a read failed): the attempt is then about the file, not the network.
    pub file_problem: Option<FileProblem>,
    pub bytes_written: u64,
}

#[derive(Debug)]
pub enum FileProblem {
    Shrank,
    /// No longer the version the body's checksum field was computed for (what it is now).
    Changed(Version),
    Read(io::Error),
}

pub struct Part<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

impl MultipartBody {
    #[allow(clippy::too_many_arguments)] // one argument per piece of the body
    pub fn new(
        boundary: String,
        fields: &[Part<'_>],
        file_field: &str,
        filename: &[u8],
        content_type: &str,
        file: File,
        file_len: u64,
        limiter: Option<Arc<RateLimiter>>,
    ) -> MultipartBody {
        let mut head = Vec::new();
        for p in fields {
            head.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n",
                    p.name
                )
                .as_bytes(),
            );
            head.extend_from_slice(p.value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n",
                encode_filename(filename)
            )
            .as_bytes(),
        );
        let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
        MultipartBody {
            boundary,
            head,
            file,
            file_len,
            tail,
            limiter,
            unchanged: None,
            file_problem: None,
            bytes_written: 0,
        }
    }

    /// The body ends unfinished (no closing boundary: the endpoint has no complete form)
    /// unless the file is still `claimed` once all of it has been read.
    pub fn unless_changed_from(mut self, claimed: Version) -> MultipartBody {
        self.unchanged = Some(claimed);
        self
    }

    /// The file's bytes into `w`, through `buf` (this thread's copy buffer).
    fn copy_file<W: Write>(&mut self, w: &mut W, buf: &mut [u8]) -> io::Result<()> {
        let mut left = self.file_len;
        while left > 0 {
            let want = (left as usize).min(COPY_CHUNK);
            let n = match self.file.read(&mut buf[..want]) {
                Ok(0) => {
                    self.file_problem = Some(FileProblem::Shrank);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while uploading",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let msg = e.to_string();
                    self.file_problem = Some(FileProblem::Read(e));
                    return Err(io::Error::other(msg));
                }
            };
            if let Some(l) = &self.limiter {
                l.take(n);
            }
            w.write_all(&buf[..n])?;
            self.bytes_written += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.file_len + self.tail.len() as u64
    }
}

pub(super) const COPY_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Each upload thread's copy buffer, allocated and zeroed once, not for every file.
    static COPY_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's `COPY_CHUNK`-byte copy buffer: the body's copy and the
/// `{sha256}` pass before it read the file through the same one. Not re-entrant (neither
/// calls the other).
pub(super) fn with_copy_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    COPY_BUF.with_borrow_mut(|buf| {
        buf.resize(COPY_CHUNK, 0);
        f(buf)
    })
}

impl Body for MultipartBody {
    fn kind(&mut self) -> io::Result<BodyKind> {
        Ok(BodyKind::KnownLength(self.len()))
    }

    fn content_type(&mut self) -> io::Result<Option<String>> {
        Ok(Some(format!(
            "multipart/form-data; boundary={}",
            self.boundary
        )))
    }

    fn write<W: Write>(&mut self, mut w: W) -> io::Result<()> {
        // write() runs again if attohttpc retries after a redirect: start from the top.
        self.bytes_written = 0;
        self.file.seek(SeekFrom::Start(0))?;
        w.write_all(&self.head)?;
        self.bytes_written += self.head.len() as u64;
        with_copy_buf(|buf| self.copy_file(&mut w, buf))?;
        if let Some(claimed) = self.unchanged {
            let now = self.file.metadata().map(|m| Version::of(&m)).map_err(|e| {
                let msg = e.to_string();
                self.file_problem = Some(FileProblem::Read(e));
                io::Error::other(msg)
            })?;
            if now != claimed {
                self.file_problem = Some(FileProblem::Changed(now));
                return Err(io::Error::other(
                    "the file changed after its checksum was computed",
                ));
            }
        }
        w.write_all(&self.tail)?;
        self.bytes_written += self.tail.len() as u64;
        Ok(())
    }
}

/// A fresh multipart boundary: 128 bits from the clock, the process and a counter, hashed.
/// It cannot collide with file content by accident.
pub(super) fn boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(std::process::id().to_be_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    h.update(format!("{:?}", Instant::now()).as_bytes());
    h.update(
        OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes(),
    );
    format!("sega-{}", &hex(&h.finalize())[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body with no fields, boundary `B`, file part `x.jpg` of `len` bytes as advertised.
    fn bare(file: File, len: u64) -> MultipartBody {
        MultipartBody::new(
            "B".into(),
            &[],
            "file",
            b"x.jpg",
            "image/jpeg",
            file,
            len,
            None,
        )
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        // The checksum fields' known answer: SHA-256 of "abc".
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn filenames_are_percent_encoded_only_where_needed() {
        assert_eq!(encode_filename(b"IMG_0001.jpg"), "IMG_0001.jpg");
        assert_eq!(encode_filename("사진 1.jpg".as_bytes()), "사진 1.jpg");
        assert_eq!(encode_filename(b"a\"b.jpg"), "a%22b.jpg");
        assert_eq!(encode_filename(b"a\r\nb.jpg"), "a%0D%0Ab.jpg");
        assert_eq!(encode_filename(b"100%.jpg"), "100%25.jpg");
        assert_eq!(encode_filename(b"a\\.jpg"), "a%5C.jpg");
        assert_eq!(encode_filename(b"\xbb\xe7\xc1\xf8.jpg"), "%BB%E7%C1%F8.jpg");
    }

    #[test]
    fn idempotency_key_depends_on_every_field() {
        let v = Version {
            size: 10,
            mtime_ns: 5,
        };
        let base = idempotency_key("s", "Sega_1", "2026-11-26", b"a.jpg", v);
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            idempotency_key("s", "Sega_1", "2026-11-26", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("t", "Sega_1", "2026-11-26", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("s", "Sega_2", "2026-11-26", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("s", "Sega_1", "2026-11-27", b"a.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key("s", "Sega_1", "2026-11-26", b"b.jpg", v)
        );
        assert_ne!(
            base,
            idempotency_key(
                "s",
                "Sega_1",
                "2026-11-26",
                b"a.jpg",
                Version {
                    size: 11,
                    mtime_ns: 5
                }
            )
        );
        assert_ne!(
            base,
            idempotency_key(
                "s",
                "Sega_1",
                "2026-11-26",
                b"a.jpg",
                Version {
                    size: 10,
                    mtime_ns: 6
                }
            )
        );
        // Length prefixes: moving a byte between fields changes the key.
        assert_ne!(
            idempotency_key("ab", "c", "d", b"e", v),
            idempotency_key("a", "bc", "d", b"e", v)
        );
    }

    #[test]
    fn the_body_has_fields_in_order_then_the_streamed_file_and_an_exact_length() {
        let dir = std::env::temp_dir().join(format!("sega-body-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"\xff\xd8\xffDATA\r\n--not-a-boundary\xff\xd9").unwrap();
        let file = File::open(&path).unwrap();
        let fields = [
            Part {
                name: "folder",
                value: "Sega_1",
            },
            Part {
                name: "date",
                value: "2026-11-26",
            },
        ];
        let mut body = MultipartBody::new(
            "BOUND".into(),
            &fields,
            "file",
            b"a\"b\n\xbb.jpg",
            "image/jpeg",
            file,
            27,
            None,
        );
        let mut out = Vec::new();
        body.write(&mut out).unwrap();
        assert!(matches!(body.kind().unwrap(), BodyKind::KnownLength(n) if n == out.len() as u64));
        assert_eq!(
            body.content_type().unwrap().unwrap(),
            "multipart/form-data; boundary=BOUND"
        );
        let text = String::from_utf8_lossy(&out);
        let expected_head = "--BOUND\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nSega_1\r\n\
                             --BOUND\r\nContent-Disposition: form-data; name=\"date\"\r\n\r\n2026-11-26\r\n\
                             --BOUND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%22b%0A%BB.jpg\"\r\n\
                             Content-Type: image/jpeg\r\n\r\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(out.ends_with(b"\xff\xd9\r\n--BOUND--\r\n"));
        // Written twice (a redirect would do that): the same bytes again.
        let mut again = Vec::new();
        body.write(&mut again).unwrap();
        assert_eq!(again, out);
        // The file shrinking under the upload is noticed, not sent short.
        std::fs::write(&path, b"short").unwrap();
        let mut body = bare(File::open(&path).unwrap(), 31);
        assert!(body.write(&mut Vec::new()).is_err());
        assert!(matches!(body.file_problem, Some(FileProblem::Shrank)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With a checksum field, a file that is not the claimed version once read gets no
    /// closing boundary: the endpoint never holds a complete form with a wrong checksum.
    #[test]
    fn a_checked_body_ends_unfinished_when_the_file_changed() {
        let dir = std::env::temp_dir().join(format!("sega-body-v-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        let claimed = Version::of(&file.metadata().unwrap());
        let body = |file: File| bare(file, 10).unless_changed_from(claimed);
        let mut same = body(file.try_clone().unwrap());
        let mut out = Vec::new();
        same.write(&mut out).unwrap();
        assert!(out.ends_with(b"0123456789\r\n--B--\r\n"));
        // Rewritten in place, same size, another mtime: the file bytes go, the end does not.
        let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let mut changed = body(file);
        let mut out = Vec::new();
        assert!(changed.write(&mut out).is_err());
        assert!(out.ends_with(b"0123456789"), "{out:?}");
        match changed.file_problem {
            Some(FileProblem::Changed(now)) => assert_ne!(now, claimed),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 17's review: the copy buffer is one per thread, kept from file to file. No
    /// byte of an earlier file may reach a later request: after a large file, a small one,
    /// one that is shorter than advertised (a short read), and one whose write failed
    /// half-way (the buffer is left full of its bytes, and released), each body holds its
    /// own bytes only. All on this one thread, so all through the same buffer.
    #[test]
    fn the_reused_copy_buffer_never_carries_an_earlier_file() {
        let dir = std::env::temp_dir().join(format!("sega-body-reuse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let body = |name: &str, bytes: &[u8], advertised: u64| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            bare(File::open(&path).unwrap(), advertised)
        };
        let mut big = body(
            "big",
            &vec![0xaa; COPY_CHUNK + 1000],
            (COPY_CHUNK + 1000) as u64,
        );
        big.write(&mut Vec::new()).unwrap();
        let mut small = body("small", b"tiny", 4);
        let mut out = Vec::new();
        small.write(&mut out).unwrap();
        assert!(out.ends_with(b"\r\n\r\ntiny\r\n--B--\r\n"), "{out:?}");
        assert!(!out.contains(&0xaa));
        let mut short = body("short", b"0123456789", COPY_CHUNK as u64);
        let mut out = Vec::new();
        assert!(short.write(&mut out).is_err());
        assert!(matches!(short.file_problem, Some(FileProblem::Shrank)));
        assert!(out.ends_with(b"\r\n\r\n0123456789"), "{out:?}");
        assert!(!out.contains(&0xaa));
        // A writer that fails after the head and a few bytes of the file.
        struct FailAfter(usize, Vec<u8>);
        impl Write for FailAfter {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.1.len() >= self.0 {
                    return Err(io::Error::other("connection reset"));
                }
                let n = b.len().min(self.0 - self.1.len());
                self.1.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut cut = body("cut", &vec![0xbb; COPY_CHUNK], COPY_CHUNK as u64);
        assert!(cut.write(FailAfter(200, Vec::new())).is_err());
        let mut after = body("after", b"fresh", 5);
        let mut out = Vec::new();
        after.write(&mut out).unwrap();
        assert!(out.ends_with(b"\r\n\r\nfresh\r\n--B--\r\n"), "{out:?}");
        assert!(!out.contains(&0xaa) && !out.contains(&0xbb));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
