//! What this binary is: its version and the optional features compiled into it. `--version`
//! and the metrics file's `sega_build_info` both read them from here, so the two can never
//! disagree about what is built in.

/// The crate's version (Cargo.toml), as `--version` and the metrics name it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The optional features compiled in, in a fixed order. A feature that becomes optional (a
/// cargo feature) or is always built in adds its name here, and `--version` says so.
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "postgres")]
    "postgres",
    // https (rustls) is always built in: named so that a script can tell this build from
    // one before it.
    "tls",
];

/// The `--version` line: `sega-uploader 0.1.0 (features: postgres, tls)`, or `(features: tls)`.
/// One line, the feature names separated by ", ", so that a script can grep for one.
pub fn version_line() -> String {
    let features = if FEATURES.is_empty() {
        "none".to_owned()
    } else {
        FEATURES.join(", ")
    };
    format!("sega-uploader {VERSION} (features: {features})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_every_compiled_feature() {
        let line = version_line();
        assert!(line.starts_with(&format!("sega-uploader {VERSION} (features: ")));
        assert_eq!(
            line.contains("postgres"),
            cfg!(feature = "postgres"),
            "{line}"
        );
        assert!(
            line.ends_with(", tls)") || line.ends_with("(features: tls)"),
            "{line}"
        );
    }
}
