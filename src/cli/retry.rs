//! `sega-uploader retry`: re-queues failed files, or the given paths, in the ledger; a
//! running daemon picks them up at its next heartbeat.

use std::path::{Path, PathBuf};

use super::setup;
use crate::cli::out::outln;
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::layout::display_name;
use crate::store::{self, Role, Status};
use crate::timestamp::Timestamp;

pub(super) fn retry(path: &Path, failed: bool, paths: &[PathBuf], force: bool) -> Result<i32> {
    let (config, clock) = setup(path, true)?;
    let mut store = store::open(&config, Role::Write)?.ledger;
    let now = Timestamp::new(clock.now_utc());
    if failed {
        let n = store.retry_failed(now)?;
        outln!("re-queued {n} failed file(s)");
        return Ok(EXIT_OK);
    }
    let mut code = EXIT_OK;
    for p in paths {
        let abs = if p.is_absolute() {
            p.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("reading", Path::new("."), e))?
                .join(p)
        };
        // Named through a link to its folder, the file is recorded under the folder's path
        // as configured (`show::as_recorded`).
        let mut found = store.retry_path(&abs, force, now)?;
        if found.is_none() {
            if let Some(recorded) = super::show::as_recorded(&config, p).filter(|r| *r != abs) {
                found = store.retry_path(&recorded, force, now)?;
            }
        }
        match found {
            None => {
                outln!(
                    "not recorded: {} (a scan records it)",
                    display_name(abs.as_os_str())
                );
                code = EXIT_FAILURE;
            }
            Some(st @ (Status::Uploaded | Status::Skipped)) if !force => {
                outln!(
                    "{st}, not re-queued (use --force to send it again): {}",
                    display_name(abs.as_os_str())
                );
                code = EXIT_FAILURE;
            }
            Some(Status::Uploading) => {
                outln!(
                    "being uploaded right now, not re-queued: {}",
                    display_name(abs.as_os_str())
                );
            }
            Some(Status::Unknown(st)) => {
                outln!(
                    "status {st:?} is not one this build knows (set by hand?), not re-queued: {}",
                    display_name(abs.as_os_str())
                );
                code = EXIT_FAILURE;
            }
            Some(st) => outln!("re-queued (was {st}): {}", display_name(abs.as_os_str())),
        }
    }
    Ok(code)
}
