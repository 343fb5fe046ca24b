//! Why the config file cannot be read, in words that say what to do: the package installs it
//! root:sega 0640 (DESIGN §6) because it holds secrets, so an operator outside group `sega`
//! running `status` or `check-config` meets "permission denied" first.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// "cannot read: permission denied; it is readable by group sega (0640), which this user
/// is not in: run with sudo, or …". Other errors are said as they are.
pub(super) fn cannot_read(path: &Path, e: &io::Error) -> String {
    let what = format!("cannot read: {}", plain(e));
    if e.kind() != io::ErrorKind::PermissionDenied {
        return what;
    }
    let hint = match std::fs::metadata(path) {
        // Group-readable, and the group is not root's: joining it is the lasting answer.
        Ok(m) if m.mode() & 0o040 != 0 && m.gid() != 0 => {
            let mode = m.mode() & 0o7777;
            match group_name(m.gid()) {
                Some(g) => format!(
                    "it is readable by group {g} (mode {mode:04o}), which this user is not in: \
                     run with sudo, or add yourself to group {g}: sudo usermod -aG {g} $USER \
                     (then log in again)"
                ),
                None => format!(
                    "it is readable by group id {} (mode {mode:04o}), which this user is not \
                     in: run with sudo, or add yourself to that group",
                    m.gid()
                ),
            }
        }
        // Its owner's alone, or the directory cannot even be searched.
        _ => "run with sudo".into(),
    };
    format!("{what}; {hint}")
}

/// `io::Error`'s text without " (os error 13)", as operators read it.
fn plain(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.find(" (os error").map_or(&text[..], |i| &text[..i]);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The name of group `gid`, from the system's group database (NSS: /etc/group, LDAP…).
fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: an all-zero `group` is valid as an out-parameter; getgrgid_r writes into
        // it and into `buf`, whose length it is told, and sets `found` to it or to null.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrgid_r(
                gid,
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || group.gr_name.is_null() {
            return None;
        }
        // SAFETY: gr_name points into `buf`, NUL-terminated, while `buf` lives.
        let name = unsafe { std::ffi::CStr::from_ptr(group.gr_name) };
        return name.to_str().ok().map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_errors_are_said_plainly() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            cannot_read(Path::new("/nonexistent/config.json"), &e),
            "cannot read: no such file or directory"
        );
    }

    #[test]
    fn the_root_group_has_a_name() {
        assert_eq!(group_name(0).as_deref(), Some("root"));
    }
}
