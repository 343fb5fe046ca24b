//! Names are bytes: how a name or path is written in logs, messages and human output
//! (`path.shown()`), escaped so that no file name can forge a log line; and text from outside
//! (an endpoint's answer, an error it caused) made safe for one terminal line (`text_line`).

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A name or path for logs and terminals: valid UTF-8 as is; each byte that is not valid UTF-8
/// as `\xNN`; ASCII control characters as `\xNN` and other control characters as `\u{NNNN}`
/// (a newline in a name cannot forge a log line); a backslash as `\\`, so the form is
/// unambiguous. For logs only: not reversible for storage.
pub fn display_name(name: &OsStr) -> String {
    Shown(name).to_string()
}

/// A name or path, written the [`display_name`] way without allocating: what every log line,
/// error message and human output uses (`path.shown()`), never `Path::display`, which lets a
/// newline in a file name start a forged log line.
#[derive(Clone, Copy)]
pub struct Shown<'a>(&'a OsStr);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.as_bytes().utf8_chunks() {
            let valid = chunk.valid();
            let mut plain = 0;
            for (i, c) in valid.char_indices() {
                if c != '\\' && !c.is_control() && !moves_text(c) {
                    continue;
                }
                f.write_str(&valid[plain..i])?;
                plain = i + c.len_utf8();
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_ascii_control() => write!(f, "\\x{:02x}", u32::from(c))?,
                    c => write!(f, "\\u{{{:04x}}}", u32::from(c))?,
                }
            }
            f.write_str(&valid[plain..])?;
            for &b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Text that came from outside (an endpoint's answer as stored, an error that quotes it), for
/// one line of human output: control characters (a tab excepted) and the characters that
/// move text are escaped as [`display_name`] escapes them, so an answer cannot clear the
/// screen, forge a line or read backwards. Unlike a name, a backslash is kept as is: this
/// is text to read (JSON's own escapes stay readable), never parsed back.
pub fn text_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push(c),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() || moves_text(c) => {
                out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that are not control characters but move text around on a terminal or in a
/// log viewer: line and paragraph separators (a line break in some viewers) and the
/// bidirectional controls (a name that reads backwards). Written as `\u{NNNN}` too.
fn moves_text(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// `.shown()` on paths and names: see [`Shown`].
pub trait Show {
    fn shown(&self) -> Shown<'_>;
}

impl Show for Path {
    fn shown(&self) -> Shown<'_> {
        Shown(self.as_os_str())
    }
}

impl Show for OsStr {
    fn shown(&self) -> Shown<'_> {
        Shown(self)
    }
}
