//! `sega-uploader upload-test`: one file sent now with the configured request, what is sent
//! printed first (the form fields and the headers, secrets redacted), then the whole answer.
//! The ledger is not touched. A file from outside the watched folders is refused unless
//! `--force`: the daemon would never send it, and a mistyped path must not send a private
//! file to the endpoint.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::setup;
use crate::cli::out::outln;
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::identity::Identity;
use crate::layout::{self, display_name, text_line, FolderRef, Show};
use crate::upload::{self, HeaderText, Item, RequestSettings};
use crate::work::{classify_status, Class, Outcome};

pub(super) fn upload_test(path: &Path, file: &Path, force: bool) -> Result<i32> {
    let (config, _clock) = setup(path, false)?;
    let abs = resolve(file)?;
    // The file's directory is resolved (symbolic links included), so the folders are too: an
    // absolute folder entry may be reached through a link, as `watch.root` may.
    let dirs: Vec<PathBuf> = config
        .watch
        .folders
        .iter()
        .map(|f| std::fs::canonicalize(&f.path).unwrap_or_else(|_| f.path.clone()))
        .collect();
    let refs: Vec<FolderRef> = config
        .watch
        .folders
        .iter()
        .zip(&dirs)
        .map(|(f, dir)| FolderRef {
            label: &f.label,
            dir,
        })
        .collect();
    let located = layout::locate(&refs, &abs);
    let (folder, date) = match &located {
        Some(loc) => (loc.folder.clone(), loc.date_dir.clone()),
        None => {
            let parent = abs
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let as_sent = format!("folder \"\" and date \"{}\"", text_line(&parent));
            if !force {
                return Err(Error::Usage(format!(
                    "{} is not in a watched folder (<folder>/<YYYY-MM-DD>/<name> under one of \
                     watch.folders): the daemon would never send it, and upload-test will not send \
                     a file from elsewhere to the endpoint by mistake. --force sends it anyway, \
                     with {as_sent}",
                    abs.shown()
                )));
            }
            outln!(
                "note: {} is outside the watched folders (--force): sending {as_sent}",
                abs.shown()
            );
            (String::new(), parent)
        }
    };
    // A file of a watched folder is opened as the daemon opens it: walking down from the
    // configured directory, no link followed (a date folder swapped for a link to /etc after
    // the path was resolved is refused, not followed). One from elsewhere (--force) as named.
    let target = located.as_ref().and_then(|loc| {
        let f = config
            .watch
            .folders
            .iter()
            .find(|f| f.label == loc.folder)?;
        Some(layout::Target {
            anchor: f.anchor.clone(),
            below: f.below.clone(),
            date: loc.date_dir.clone().into(),
            name: loc.name.clone(),
            path: f.path.join(&loc.date_dir).join(&loc.name),
        })
    });
    let opened = match &target {
        Some(t) => layout::open_beneath(t),
        None => layout::open_regular(&abs),
    };
    let (f, meta) = opened.map_err(|source| Error::Open {
        path: abs.clone(),
        source,
    })?;
    let version = layout::Version::of(&meta);
    let name = abs.file_name().unwrap_or_default().to_owned();
    if !layout::name_is_candidate(&name, &config.watch.extensions) {
        outln!(
            "note: the daemon would not upload a file of this name (hidden, partial, or not one of watch.extensions)"
        );
    }
    let kind = layout::kind_of(&name);
    if let Ok(c) = layout::check_content(&f, version.size, kind) {
        if c != layout::Content::Image {
            outln!("note: the daemon would not send this file as it is ({c:?})");
        }
    }
    let settings = RequestSettings::new(&config, Identity::from_config(&config).scope)
        .map_err(|e| e.in_config(path))?;
    let item = Item {
        path: abs.clone(),
        folder,
        date,
        filename: name.clone(),
        version,
    };
    print_request(&config, &settings, &item, kind);
    let t0 = std::time::Instant::now();
    let outcome = upload::send(&settings, &item, kind, f, version.size, None, None);
    let took = t0.elapsed();
    match outcome {
        Outcome::Answered(r) => {
            outln!(
                "\nHTTP {} ({} ms, {:?})",
                r.status,
                took.as_millis(),
                classify_status(r.status)
            );
            for (k, v) in &r.headers {
                outln!("{k}: {}", text_line(v));
            }
            outln!();
            for line in r.body.lines() {
                outln!("{}", text_line(line));
            }
            if let Some(e) = r.body_error {
                outln!("(body cut short: {e})");
            }
            if let Some(m) = &r.mismatch {
                let then = if m.fail { "failed" } else { "retried" };
                outln!(
                    "not a success by upload.success: {} (the daemon: {then})",
                    m.why
                );
            }
            Ok(
                if classify_status(r.status) == Class::Success && r.mismatch.is_none() {
                    EXIT_OK
                } else {
                    EXIT_FAILURE
                },
            )
        }
        Outcome::Transport(e) => {
            outln!("\nno answer after {} ms: {e}", took.as_millis());
            Ok(EXIT_FAILURE)
        }
        other => {
            outln!("\nnot sent: {other:?}");
            Ok(EXIT_FAILURE)
        }
    }
}

/// FILE as an absolute path, its directory resolved (links included), the file itself not
/// followed. `a.jpg` alone is in the working directory (its parent is the empty path, which
/// does not resolve); `/`, `..` or `dir/..` have no name of their own and are resolved whole.
fn resolve(file: &Path) -> Result<PathBuf> {
    let resolved = match file.file_name() {
        Some(name) => {
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::canonicalize(dir).map(|d| d.join(name))
        }
        None => std::fs::canonicalize(file),
    };
    resolved.map_err(|e| Error::io("resolving", file, e))
}

/// What is about to be sent: the request line, the headers (`upload.headers` values and the
/// URL's credentials redacted: they are secrets), the form fields and the file part.
fn print_request(
    config: &crate::config::Config,
    settings: &RequestSettings,
    item: &Item,
    kind: layout::Kind,
) {
    outln!("POST {}", config.upload.url.redacted());
    if let Some(proxy) = &config.upload.proxy {
        outln!(
            "(through the proxy {}; its credentials go to the proxy only)",
            proxy.redacted()
        );
    }
    let key = upload::idempotency_key(
        &settings.scope,
        &item.folder,
        &item.date,
        item.filename.as_bytes(),
        item.version,
    );
    let mut shown: Vec<(&str, String)> = Vec::new();
    for h in upload::headers(settings, &key) {
        let value = match h.value {
            HeaderText::Plain(v) => text_line(v),
            // Display of a Secret is `<redacted>`. `auth` is only set when upload.headers has
            // no Authorization of its own: then this one is the URL's user and password.
            HeaderText::Secret(s) if h.name == "Authorization" && settings.auth.is_some() => {
                format!("{s} (Basic: the user and password in upload.url)")
            }
            HeaderText::Secret(s) => s.to_string(),
        };
        if h.set {
            shown.retain(|(k, _)| !k.eq_ignore_ascii_case(h.name));
        }
        shown.push((h.name, value));
    }
    for (k, v) in &shown {
        outln!("{k}: {v}");
    }
    outln!("Content-Type: multipart/form-data; boundary=… (a new boundary for every request)");
    outln!("\nform fields (upload.fields, in this order, before the file):");
    // `send` hashes the file as it opens it; here `{sha256}` says where its value goes.
    let sha256 = settings
        .hash_content
        .then_some("<the content's SHA-256, computed as it is sent>");
    let fields = upload::form_fields(settings, item, item.version.size, sha256);
    if fields.is_empty() {
        outln!("  (none)");
    }
    for (k, v) in &fields {
        outln!("  {} = {}", text_line(k), text_line(v));
    }
    outln!(
        "file part {:?}: filename=\"{}\", {}, {} bytes from {}",
        settings.file_field,
        text_line(&upload::encode_filename(item.filename.as_bytes())),
        layout::content_type(kind),
        item.version.size,
        display_name(item.path.as_os_str())
    );
}
