//! The strict, streaming multipart/form-data parser (RFC 7578 on RFC 2046), and the byte
//! search it relies on (`memchr`, `find`).
//!
//! `Parser` is pushed whatever pieces the socket delivers (`feed`), so a delimiter split
//! across reads is found all the same. The file part is hashed as it streams and only a
//! delimiter's length of it is ever buffered: a 1 GiB upload keeps memory flat. Text parts
//! are kept (capped at 1 MiB). The first violation is returned as an error and the parser
//! then ignores the rest of the body, which the caller still drains.

use crate::{hex, FilePart};
use sha2::{Digest, Sha256};

const PART_HEAD_MAX: usize = 16 * 1024;
const TEXT_MAX: usize = 1024 * 1024;

/// The boundary of a `Content-Type` header: `Ok(None)` if it is not multipart/form-data,
/// an error if it is but the boundary is missing or malformed. The boundary may be quoted.
pub(crate) fn boundary(content_type: &str) -> Result<Option<String>, String> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Ok(None);
    }
    for p in params {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("boundary") {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                // RFC 2046 §5.1.1: 1 to 70 characters.
                if v.is_empty() || v.len() > 70 || v.contains(['\r', '\n']) {
                    return Err(format!("bad multipart boundary {v:?} (1 to 70 characters)"));
                }
                return Ok(Some(v.to_string()));
            }
        }
    }
    Err("multipart/form-data without a boundary parameter".into())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Expecting `--boundary\r\n`.
    Start,
    /// Inside a part's header block, up to `\r\n\r\n`.
    Headers,
    /// Inside a part's content, up to `\r\n--boundary`.
    Content,
    /// Just after a delimiter: `\r\n` (another part) or `--` (the end).
    AfterDelim,
    /// After the closing delimiter: only an optional `\r\n` may follow.
    Epilogue,
    /// A violation was reported; the rest is ignored.
    Failed,
}

enum Part {
    Text { name: String, value: Vec<u8> },
    File { info: FilePart, hasher: Sha256 },
}

/// A push parser for one multipart body.
pub(crate) struct Parser {
    /// `\r\n--boundary`: what ends every part's content.
    delim: Vec<u8>,
    state: State,
    /// Bytes received but not yet consumed: at most a part's headers or a delimiter's length.
    buf: Vec<u8>,
    part: Option<Part>,
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) file: Option<FilePart>,
}

impl Parser {
    pub(crate) fn new(boundary: &str) -> Parser {
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary.as_bytes());
        Parser {
            delim,
            state: State::Start,
            buf: Vec::new(),
            part: None,
            fields: Vec::new(),
            file: None,
        }
    }

    /// Consumes the next piece of the body. Returns the first violation once; after it,
    /// later pieces are ignored.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if self.state == State::Failed {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        self.run().inspect_err(|_| {
            self.state = State::Failed;
            self.buf = Vec::new();
        })
    }

    /// Called at the end of the body: it must have ended right after the closing delimiter.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        let r = match self.state {
            State::Failed => Ok(()),
            State::Epilogue if self.buf.is_empty() || self.buf == b"\r\n" => Ok(()),
            State::Epilogue => Err("incomplete CRLF after the closing boundary".into()),
            State::Start => Err("body ended before the first boundary".into()),
            _ => Err("body ended without the closing boundary (--boundary--)".into()),
        };
        self.state = State::Failed;
        r
    }

    fn run(&mut self) -> Result<(), String> {
        loop {
            match self.state {
                State::Start => {
                    let first = &self.delim[2..]; // "--boundary"
                    let n = self.buf.len().min(first.len());
                    if self.buf[..n] != first[..n] {
                        return Err("body does not start with --boundary".into());
                    }
                    if self.buf.len() < first.len() + 2 {
                        return Ok(());
                    }
                    match &self.buf[first.len()..first.len() + 2] {
                        b"\r\n" => {}
                        b"--" => return Err("multipart body has no parts".into()),
                        _ => return Err("the first boundary is not followed by CRLF".into()),
                    }
                    self.buf.drain(..first.len() + 2);
                    self.state = State::Headers;
                }
                State::Headers => {
                    // (end of the header text, bytes to consume)
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some((0, 2))
                    } else {
                        find(&self.buf, b"\r\n\r\n").map(|p| (p, p + 4))
                    };
                    let Some((text_end, consumed)) = end else {
                        if self.buf.len() > PART_HEAD_MAX {
                            return Err("part headers exceed 16 KiB".into());
                        }
                        return Ok(());
                    };
                    self.part = Some(self.start_part(&self.buf[..text_end])?);
                    self.buf.drain(..consumed);
                    self.state = State::Content;
                }
                State::Content => match find(&self.buf, &self.delim) {
                    Some(p) => {
                        emit(&mut self.part, &self.buf[..p])?;
                        self.buf.drain(..p + self.delim.len());
                        self.state = State::AfterDelim;
                    }
                    None => {
                        // Keep only what could be the start of a delimiter split by the read.
                        let cut = self.buf.len() - partial_suffix(&self.buf, &self.delim);
                        emit(&mut self.part, &self.buf[..cut])?;
                        self.buf.drain(..cut);
                        return Ok(());
                    }
                },
                State::AfterDelim => {
                    if self.buf.len() < 2 {
                        return Ok(());
                    }
                    let next = match &self.buf[..2] {
                        b"\r\n" => State::Headers,
                        b"--" => State::Epilogue,
                        _ => return Err("a boundary is followed by neither CRLF nor --".into()),
                    };
                    self.buf.drain(..2);
                    self.finish_part();
                    self.state = next;
                }
                State::Epilogue => {
                    if !b"\r\n".starts_with(&self.buf) {
                        return Err("data after the closing boundary".into());
                    }
                    return Ok(());
                }
                State::Failed => return Ok(()),
            }
        }
    }

    fn start_part(&self, head: &[u8]) -> Result<Part, String> {
        let head = std::str::from_utf8(head).map_err(|_| {
            "part headers are not UTF-8 (non-UTF-8 filename bytes must be percent-encoded)"
        })?;
        if head.is_empty() {
            return Err("a part without headers (Content-Disposition is required)".into());
        }
        let (mut disposition, mut content_type) = (None, None);
        for line in head.split("\r\n") {
            let (name, value) = line
                .split_once(':')
                .filter(|(n, _)| !n.is_empty() && !n.contains([' ', '\t', '\r', '\n']))
                .ok_or_else(|| format!("malformed part header line {line:?}"))?;
            if value.contains(['\r', '\n']) {
                return Err(format!("bare CR or LF in part header {name}"));
            }
            let value = value.trim_matches([' ', '\t']);
            if name.eq_ignore_ascii_case("content-disposition") {
                if disposition.replace(value).is_some() {
                    return Err("a part with two Content-Disposition headers".into());
                }
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value);
            }
        }
        let params = disposition_params(disposition.ok_or("a part without Content-Disposition")?)?;
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let name = param("name")
            .ok_or("Content-Disposition without a name parameter")?
            .to_string();
        let (raw, ext) = (param("filename"), param("filename*"));
        let Some(filename_raw) = raw.or(ext) else {
            return Ok(Part::Text {
                name,
                value: Vec::new(),
            });
        };
        if self.file.is_some() {
            return Err("more than one file part".into());
        }
        let filename = match ext {
            Some(ext) => decode_ext_value(ext)?,
            None => percent_decode(filename_raw)?,
        };
        let content_type = content_type.ok_or("the file part has no Content-Type")?;
        let info = FilePart {
            field: name,
            filename_raw: filename_raw.to_string(),
            filename,
            content_type: content_type.to_string(),
            size: 0,
            sha256: String::new(),
        };
        Ok(Part::File {
            info,
            hasher: Sha256::new(),
        })
    }

    fn finish_part(&mut self) {
        match self.part.take() {
            Some(Part::Text { name, value }) => {
                self.fields
                    .push((name, String::from_utf8_lossy(&value).into_owned()));
            }
            Some(Part::File { mut info, hasher }) => {
                info.sha256 = hex(&hasher.finalize());
                self.file = Some(info);
            }
            None => {}
        }
    }
}

/// Hands content bytes to the current part.
fn emit(part: &mut Option<Part>, data: &[u8]) -> Result<(), String> {
    match part {
        Some(Part::File { info, hasher }) => {
            hasher.update(data);
            info.size += data.len() as u64;
        }
        Some(Part::Text { name, value }) => {
            if value.len() + data.len() > TEXT_MAX {
                return Err(format!("text part {name:?} exceeds 1 MiB"));
            }
            value.extend_from_slice(data);
        }
        None => {}
    }
    Ok(())
}

/// The parameters of `form-data; name="a"; filename="b"`, keys lower-cased. Strict: a
/// quoted value ends at the next `"`, which must be followed by `;` or the end, so a bare
/// `"` inside a value is caught; no backslash escapes; raw control bytes are errors.
fn disposition_params(value: &str) -> Result<Vec<(String, String)>, String> {
    const WS: [char; 2] = [' ', '\t'];
    let (kind, mut rest) = value.split_once(';').unwrap_or((value, ""));
    if !kind.trim_matches(WS).eq_ignore_ascii_case("form-data") {
        return Err(format!("Content-Disposition {kind:?} is not form-data"));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start_matches(WS);
        if rest.is_empty() {
            return Ok(params);
        }
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("Content-Disposition parameter without '=': {rest:?}"))?;
        let key = key.trim_matches(WS).to_ascii_lowercase();
        if key.is_empty() || key.contains(['"', ';', ' ']) {
            return Err(format!("bad Content-Disposition parameter name {key:?}"));
        }
        let after = after.trim_start_matches(WS);
        let (val, tail) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q
                    .find('"')
                    .ok_or_else(|| format!("unterminated quoted {key}"))?;
                (&q[..end], &q[end + 1..])
            }
            None => after.split_at(after.find([';', ' ', '\t']).unwrap_or(after.len())),
        };
        if val.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(format!(
                "raw control byte in {key} (must be percent-encoded)"
            ));
        }
        let tail = tail.trim_start_matches(WS);
        rest = match tail.strip_prefix(';') {
            Some(r) => r,
            None if tail.is_empty() => "",
            None => {
                return Err(format!(
                    "unexpected {tail:?} after the {key} parameter (a bare '\"' inside the value?)"
                ))
            }
        };
        if params.iter().any(|(k, _)| *k == key) {
            return Err(format!("duplicate Content-Disposition parameter {key}"));
        }
        params.push((key, val.to_string()));
    }
}

/// RFC 7578 §4.2 as the uploader applies it: every `%XX` is a byte; a `%` without two hex
/// digits is an error (the uploader encodes `%` itself as `%25`).
pub(crate) fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    fn hexval(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = b
                .get(i + 1..i + 3)
                .and_then(|h| Some(hexval(h[0])? * 16 + hexval(h[1])?));
            out.push(v.ok_or_else(|| format!("bad percent-escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// RFC 5987 `filename*=UTF-8''%E2%82%AC.jpg`.
fn decode_ext_value(v: &str) -> Result<Vec<u8>, String> {
    let mut it = v.splitn(3, '\'');
    match (it.next(), it.next(), it.next()) {
        (Some(cs), Some(_lang), Some(text)) if cs.eq_ignore_ascii_case("utf-8") => {
            percent_decode(text)
        }
        _ => Err(format!("filename* {v:?} is not UTF-8''…")),
    }
}

/// The length of the longest proper prefix of `delim` that `buf` ends with.
fn partial_suffix(buf: &[u8], delim: &[u8]) -> usize {
    let mut i = buf.len().saturating_sub(delim.len() - 1);
    // The delimiter starts with '\r', so only a '\r' can start a partial match.
    while let Some(p) = memchr(b'\r', &buf[i..]) {
        if delim.starts_with(&buf[i + p..]) {
            return buf.len() - (i + p);
        }
        i += p + 1;
    }
    0
}

/// The first position of `b`: eight bytes at a time (the classic "has a zero byte" test
/// on `word ^ pattern`), then a byte loop for the tail and the word that matched.
pub(crate) fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * b as u64;
    let mut start = 0;
    for word in hay.chunks_exact(8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(word);
        let x = u64::from_ne_bytes(a) ^ pattern;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        start += 8;
    }
    hay[start..].iter().position(|&x| x == b).map(|p| start + p)
}

/// The first position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let p = i + memchr(first, &hay[i..hay.len() - rest.len()])?;
        if &hay[p + 1..p + needle.len()] == rest {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "XyZzy42";

    fn body(file_name_param: &str, data: &[u8]) -> Vec<u8> {
        let mut b = format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nSega_1\r\n\
             --{B}\r\nContent-Disposition: form-data; name=\"date\"\r\n\r\n2026-11-26\r\n\
             --{B}\r\nContent-Disposition: form-data; name=\"file\"; {file_name_param}\r\n\
             Content-Type: image/jpeg\r\n\r\n"
        )
        .into_bytes();
        b.extend_from_slice(data);
        b.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
        b
    }

    /// Feeds `body` in pieces of `step` bytes.
    fn parse(body: &[u8], step: usize) -> Result<Parser, String> {
        let mut p = Parser::new(B);
        for piece in body.chunks(step) {
            p.feed(piece)?;
        }
        p.finish()?;
        Ok(p)
    }

    fn sha(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    #[test]
    fn every_split_of_an_awkward_file_gives_the_same_result() {
        // Content that looks like the start of a delimiter, several ways, and ends in '\r'.
        let data = format!("\r\n--\r\n--Xy\r\n--{}\r\r\n-\r", &B[..B.len() - 1]).into_bytes();
        let b = body("filename=\"a.jpg\"", &data);
        for step in 1..=b.len() {
            let p = parse(&b, step).unwrap_or_else(|e| panic!("step {step}: {e}"));
            let f = p.file.as_ref().expect("file part");
            assert_eq!(
                (f.size, f.sha256.as_str()),
                (data.len() as u64, sha(&data).as_str()),
                "step {step}"
            );
            assert_eq!(f.filename, b"a.jpg");
            assert_eq!(f.content_type, "image/jpeg");
            assert_eq!(
                p.fields,
                [
                    ("folder".into(), "Sega_1".into()),
                    ("date".into(), "2026-11-26".into())
                ]
            );
        }
    }

    #[test]
    fn large_binary_file_is_hashed_not_kept() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let p = parse(&body("filename=\"big.jpg\"", &data), 65536).expect("parses");
        let f = p.file.expect("file");
        assert_eq!((f.size, f.sha256), (data.len() as u64, sha(&data)));
        assert!(
            p.buf.capacity() < 200_000,
            "parser buffer grew to {}",
            p.buf.capacity()
        );
    }

    #[test]
    fn filenames_are_percent_decoded() {
        let cases: [(&str, &[u8]); 5] = [
            (
                "filename=\"%22q%22 %0D%0A 100%25.jpg\"",
                b"\"q\" \r\n 100%.jpg",
            ),
            ("filename=\"\u{c0ac}\u{c9c4}.jpg\"", "사진.jpg".as_bytes()),
            ("filename=\"%B0%A1%b3%aa.jpg\"", b"\xb0\xa1\xb3\xaa.jpg"),
            (
                "filename=\"x.jpg\"; filename*=UTF-8''%E2%82%AC.jpg",
                "€.jpg".as_bytes(),
            ),
            ("filename=\"back\\slash.jpg\"", b"back\\slash.jpg"),
        ];
        for (param, want) in cases {
            let p = parse(&body(param, b"data"), 7).unwrap_or_else(|e| panic!("{param}: {e}"));
            let f = p.file.expect("file");
            assert_eq!(f.filename, want, "{param}");
        }
        let p = parse(&body("filename=\"%B0%A1.jpg\"", b""), 3).expect("parses");
        assert_eq!(p.file.expect("file").filename_raw, "%B0%A1.jpg");
    }

    #[test]
    fn violations_are_reported() {
        let bad = |b: &[u8]| {
            parse(b, 5)
                .err()
                .unwrap_or_else(|| panic!("accepted {:?}", String::from_utf8_lossy(b)))
        };
        let ok = body("filename=\"a.jpg\"", b"data");
        let cut = &ok[..ok.len() - 4]; // "\r\n--XyZzy42-" … no closing "--"
        assert!(bad(cut).contains("closing boundary"));
        assert!(bad(&ok[..ok.len() - 12]).contains("closing boundary"));
        let mut junk = ok.clone();
        junk.extend_from_slice(b"junk");
        assert!(bad(&junk).contains("after the closing boundary"));
        assert!(
            parse(&ok[..ok.len() - 2], 5).is_ok(),
            "the final CRLF is optional"
        );
        assert!(bad(&ok[..ok.len() - 1]).contains("incomplete CRLF"));
        assert!(bad(&body("filename=\"a\"b.jpg\"", b"x")).contains("bare"));
        assert!(bad(&body("filename=\"a%2.jpg\"", b"x")).contains("percent"));
        assert!(bad(&body("filename=\"a\x01.jpg\"", b"x")).contains("control"));
        assert!(bad(&body("filename=\"a.jpg\"; filename=\"b.jpg\"", b"x")).contains("duplicate"));
        let part2 = "\r\nContent-Disposition: form-data; name=\"f2\"; filename=\"b\"\r\n\
                     Content-Type: image/png\r\n\r\nx\r\n--XyZzy42--";
        let two = [&ok[..ok.len() - 4], part2.as_bytes()].concat();
        assert!(bad(&two).contains("more than one file"));
        let cd = "Content-Disposition: form-data; name=\"f\"; filename=\"a\"";
        let no_ct = format!("--{B}\r\n{cd}\r\n\r\nx\r\n--{B}--");
        assert!(bad(no_ct.as_bytes()).contains("Content-Type"));
        let no_cd = format!("--{B}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{B}--");
        assert!(bad(no_cd.as_bytes()).contains("Content-Disposition"));
        let no_name = format!("--{B}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{B}--");
        assert!(bad(no_name.as_bytes()).contains("name"));
        assert!(bad(format!("preamble\r\n--{B}\r\n").as_bytes()).contains("start"));
        assert!(bad(format!("--{B}--\r\n").as_bytes()).contains("no parts"));
        let after =
            format!("--{B}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--{B}  \r\n");
        assert!(bad(after.as_bytes()).contains("neither"));
    }

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc"),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            boundary("Multipart/Form-Data;boundary=\"a b:c\""),
            Ok(Some("a b:c".into()))
        );
        assert_eq!(boundary("application/json"), Ok(None));
        assert!(boundary("multipart/form-data").is_err());
        assert!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err());
    }

    #[test]
    fn byte_search() {
        let hay = b"0123456789abcdef\r\n--x0123456789\r\n--bound";
        for i in 0..hay.len() {
            assert_eq!(memchr(hay[i], &hay[i..]), Some(0));
            assert_eq!(memchr(hay[i], hay), hay.iter().position(|&b| b == hay[i]));
        }
        assert_eq!(memchr(b'Q', hay), None);
        assert_eq!(find(hay, b"\r\n--bound"), Some(31));
        assert_eq!(find(hay, b"\r\n--boundary"), None);
        assert_eq!(partial_suffix(hay, b"\r\n--boundary"), 9);
        assert_eq!(partial_suffix(b"abc\r", b"\r\n--b"), 1);
        assert_eq!(partial_suffix(b"abc", b"\r\n--b"), 0);
    }
}
