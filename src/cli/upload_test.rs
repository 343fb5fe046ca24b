//! `sega-uploader upload-test`: one file sent now with the configured request, and the
//! whole answer printed. The ledger is not touched.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::setup;
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::identity::Identity;
use crate::layout::{self, display_name, FolderRef, Show};
use crate::upload::{self, Item, RequestSettings};
use crate::work::{classify_status, Class, Outcome};

pub(super) fn upload_test(path: &Path, file: &Path) -> Result<i32> {
    let (config, _clock) = setup(path, false)?;
    let abs = std::fs::canonicalize(file.parent().unwrap_or(Path::new(".")))
        .map(|d| d.join(file.file_name().unwrap_or_default()))
        .map_err(|e| Error::io("resolving", file, e))?;
    let (f, meta) = layout::open_regular(&abs).map_err(|source| Error::Open {
        path: abs.clone(),
        source,
    })?;
    let version = layout::Version::of(&meta);
    let refs: Vec<FolderRef> = config
        .watch
        .folders
        .iter()
        .map(|f| FolderRef {
            label: &f.label,
            dir: &f.path,
        })
        .collect();
    let (folder, date) = match layout::locate(&refs, &abs) {
        Some(loc) => (loc.folder, loc.date_dir),
        None => {
            let parent = abs
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            println!("note: {} is outside the watched folders; sending folder \"\" and date \"{parent}\"", abs.shown());
            (String::new(), parent)
        }
    };
    let name = abs.file_name().unwrap_or_default().to_owned();
    let kind = layout::kind_of(&name);
    if let Ok(c) = layout::check_content(&f, version.size, kind) {
        if c != layout::Content::Image {
            println!("note: the daemon would not send this file as it is ({c:?})");
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
    println!("POST {}", config.upload.url.redacted());
    println!(
        "Idempotency-Key: {}",
        upload::idempotency_key(
            &settings.scope,
            &item.folder,
            &item.date,
            name.as_bytes(),
            version
        )
    );
    println!(
        "file: {} ({} bytes, {})",
        display_name(abs.as_os_str()),
        version.size,
        layout::content_type(kind)
    );
    let t0 = std::time::Instant::now();
    let outcome = upload::send(&settings, &item, kind, f, version.size, None);
    let took = t0.elapsed();
    match outcome {
        Outcome::Answered(r) => {
            println!(
                "\nHTTP {} ({} ms, {:?})",
                r.status,
                took.as_millis(),
                classify_status(r.status)
            );
            for (k, v) in &r.headers {
                println!("{k}: {v}");
            }
            println!("\n{}", r.body);
            if let Some(e) = r.body_error {
                println!("(body cut short: {e})");
            }
            if let Some(m) = &r.mismatch {
                let then = if m.fail { "failed" } else { "retried" };
                println!(
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
            println!("\nno answer after {} ms: {e}", took.as_millis());
            Ok(EXIT_FAILURE)
        }
        other => {
            println!("\nnot sent: {other:?}");
            Ok(EXIT_FAILURE)
        }
    }
}
