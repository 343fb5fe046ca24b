//! The content checksum behind `{sha256}`: one pass over the file before the request, and
//! the proof that what is then sent is what was hashed.
//!
//! The field goes before the file part, where endpoints that parse a form in order (a
//! streaming parser, an S3-style POST policy) need it, so it must be known before the first
//! byte of the body: the file is read twice, once here, once by the send. Memory stays one
//! 64 KiB buffer. That the file did not change in between is decided the way the rest of
//! the uploader decides it, by its version (size and mtime): here, after the pass, against
//! the version the job was claimed for; and again by the body, on the open descriptor, after
//! the last file byte and before the closing boundary (`MultipartBody`), so a rewrite during
//! the send ends the request unfinished and the endpoint never holds a complete form whose
//! checksum does not match its file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::multipart::{hex, with_copy_buf, COPY_CHUNK};
use crate::layout::Version;

/// Why there is no checksum.
#[derive(Debug)]
pub enum PassError {
    /// The file is no longer the claimed version (the version it is now).
    Changed(Version),
    Read(io::Error),
}

/// The hex SHA-256 of the first `claimed.size` bytes of `file`, provided the file is still
/// the `claimed` version once they have been read.
pub fn content_sha256(file: &File, claimed: Version) -> Result<String, PassError> {
    with_copy_buf(|buf| hash_version(file, claimed, buf))
}

fn hash_version(file: &File, claimed: Version, buf: &mut [u8]) -> Result<String, PassError> {
    let mut h = Sha256::new();
    let mut at = 0u64;
    while at < claimed.size {
        let want = (claimed.size - at).min(COPY_CHUNK as u64) as usize;
        // pread: the descriptor's offset stays where the body expects it (it seeks anyway).
        match file.read_at(&mut buf[..want], at) {
            // Shorter than claimed: it shrank, so it is another version (stat says which).
            Ok(0) => return Err(PassError::Changed(now(file)?)),
            Ok(n) => {
                h.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PassError::Read(e)),
        }
    }
    let version = now(file)?;
    if version != claimed {
        return Err(PassError::Changed(version));
    }
    Ok(hex(&h.finalize()))
}

/// The open file's version now (fstat: the file hashed, even if its name was replaced).
fn now(file: &File) -> Result<Version, PassError> {
    file.metadata()
        .map(|m| Version::of(&m))
        .map_err(PassError::Read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_checksum_is_the_contents_and_a_changed_file_has_none() {
        let dir = std::env::temp_dir().join(format!("sega-sum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        // Over one chunk and not a multiple of it, so the last piece is a short one.
        let content: Vec<u8> = (0..COPY_CHUNK * 2 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        let file = File::open(&path).unwrap();
        let v = Version::of(&file.metadata().unwrap());
        assert_eq!(
            content_sha256(&file, v).unwrap(),
            hex(&Sha256::digest(&content))
        );
        // Empty: the hash of nothing.
        std::fs::write(dir.join("e"), b"").unwrap();
        let empty = File::open(dir.join("e")).unwrap();
        let ev = Version::of(&empty.metadata().unwrap());
        assert_eq!(
            content_sha256(&empty, ev).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // Rewritten in place after it was claimed: another version, no checksum.
        let mtime = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(b"changed").unwrap();
        w.set_modified(mtime).unwrap();
        match content_sha256(&file, v) {
            Err(PassError::Changed(now)) => {
                assert_eq!(now.size, v.size);
                assert_ne!(now.mtime_ns, v.mtime_ns);
            }
            other => panic!("{other:?}"),
        }
        // Shrunk: the pass runs out of bytes.
        w.set_len(10).unwrap();
        match content_sha256(&file, v) {
            Err(PassError::Changed(now)) => assert_eq!(now.size, 10),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
