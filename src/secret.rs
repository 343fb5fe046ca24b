//! `Secret<T>`: a value that is never printed (DESIGN §6 and §10: every `upload.headers`
//! value, credentials in any URL, the whole `alerts.webhook_url`).
//!
//! Its `Display` and `Debug` both write `<redacted>`, so a `{:?}` of a config, a log line
//! or an error message cannot leak it by accident. The one way to the value is
//! [`Secret::expose`], called where the value is actually used (the request, the
//! connection); `git grep expose` lists every such place.

use std::fmt;

/// What a secret prints as, everywhere.
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself: only where it is sent or connected with, never into a message.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_redacted_every_way() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), format!("Some({REDACTED})"));
        assert_eq!(
            format!("{:#?}", vec![("X-Key", s.clone())])
                .matches("hunter2")
                .count(),
            0
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
