//! The `upload.fields` values: text with `{folder}`-style placeholders, parsed once at load
//! into a [`Template`] and rendered for each file by the upload workers. `{sha256}` is the
//! one placeholder that costs something (a read of the whole file before the send): the
//! workers compute it only when a template asks for it ([`Template::uses_sha256`]).

/// A text-part value with `{folder}`-style placeholders, parsed once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub raw: String,
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Folder,
    Date,
    Filename,
    Path,
    Size,
    /// The hex SHA-256 of the file's content.
    Sha256,
}

/// The values a [`Template`] is rendered with, for one file.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    pub folder: &'a str,
    pub date: &'a str,
    pub filename: &'a str,
    pub path: &'a str,
    pub size: u64,
    /// The content's hex SHA-256: computed (and so `Some`) whenever a template uses it.
    pub sha256: Option<&'a str>,
}

impl Template {
    /// Placeholders are `{folder}`, `{date}`, `{filename}`, `{path}`, `{size}` and
    /// `{sha256}`; `{{` and `}}` are literal braces; any other `{name}` is an error naming
    /// it.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' | '}' if chars.peek() == Some(&c) => {
                    chars.next();
                    text.push(c);
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(
                                    "has an unclosed `{` (write `{{` for a literal brace)".into()
                                )
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    let piece = match name.as_str() {
                        "folder" => Piece::Folder,
                        "date" => Piece::Date,
                        "filename" => Piece::Filename,
                        "path" => Piece::Path,
                        "size" => Piece::Size,
                        "sha256" => Piece::Sha256,
                        _ => {
                            return Err(format!(
                                "has an unknown placeholder `{{{name}}}` (known: {{folder}}, \
                                 {{date}}, {{filename}}, {{path}}, {{size}}, {{sha256}})"
                            ))
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                }
                '}' => return Err("has an unmatched `}` (write `}}` for a literal brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template {
            raw: s.to_string(),
            pieces,
        })
    }

    pub fn render(&self, v: &TemplateVars) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Folder => out.push_str(v.folder),
                Piece::Date => out.push_str(v.date),
                Piece::Filename => out.push_str(v.filename),
                Piece::Path => out.push_str(v.path),
                Piece::Size => out.push_str(&v.size.to_string()),
                // `RequestSettings` hashes every file whose templates say `{sha256}`, so
                // `None` here is a bug; an empty value is what an endpoint would refuse.
                Piece::Sha256 => out.push_str(v.sha256.unwrap_or_default()),
            }
        }
        out
    }

    /// Whether rendering needs the content's SHA-256 (a pass over the file).
    pub fn uses_sha256(&self) -> bool {
        self.pieces.contains(&Piece::Sha256)
    }

    /// A template with exactly one placeholder and no text: the defaults.
    pub(super) fn placeholder(raw: &str, piece: Piece) -> Template {
        Template {
            raw: raw.into(),
            pieces: vec![piece],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_render() {
        let vars = TemplateVars {
            folder: "Sega_1",
            date: "2026-11-26",
            filename: "IMG_1.jpg",
            path: "/data/Sega_1/2026-11-26/IMG_1.jpg",
            size: 1234,
            sha256: Some("e3b0c442"),
        };
        let cases = [
            ("{folder}", "Sega_1"),
            ("{folder}/{date}/{filename}", "Sega_1/2026-11-26/IMG_1.jpg"),
            (
                "{path} ({size} bytes)",
                "/data/Sega_1/2026-11-26/IMG_1.jpg (1234 bytes)",
            ),
            ("{{folder}} is {folder}", "{folder} is Sega_1"),
            ("{{{size}}}", "{1234}"),
            ("sha256:{sha256}", "sha256:e3b0c442"),
            ("plain", "plain"),
            ("", ""),
        ];
        for (raw, rendered) in cases {
            let t = Template::parse(raw).unwrap();
            assert_eq!(t.raw, raw);
            assert_eq!(t.render(&vars), rendered, "{raw}");
        }
        let pieces = [
            Piece::Text("a".into()),
            Piece::Date,
            Piece::Text("b".into()),
        ];
        assert_eq!(Template::parse("a{date}b").unwrap().pieces, pieces);
        assert!(Template::parse("x{sha256}").unwrap().uses_sha256());
        assert!(!Template::parse("{{sha256}} {size}").unwrap().uses_sha256());
        let errors = [
            ("{host}", "unknown placeholder `{host}`"),
            ("{date", "unclosed `{`"),
            ("{a{b}", "unclosed `{`"),
            ("a}b", "unmatched `}`"),
        ];
        for (raw, fragment) in errors {
            let err = Template::parse(raw).unwrap_err();
            assert!(err.contains(fragment), "{raw}: {err}");
        }
    }
}
