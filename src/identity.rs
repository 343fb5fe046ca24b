//! Who this daemon is: the idempotency scope its requests carry and the host name it claims
//! rows under in a shared ledger, each resolved here and nowhere else. The upload workers
//! take the scope (`RequestSettings`), the ledger takes both (`store::open`).

use crate::config::Config;

/// The identity a daemon claims rows under in a shared ledger.
#[derive(Debug, Clone)]
pub struct Identity {
    pub scope: String,
    pub host: String,
}

impl Identity {
    pub fn from_config(config: &Config) -> Identity {
        Identity {
            scope: resolve_scope(config.database.scope.as_deref()),
            host: config.database.host.clone().unwrap_or_else(host_name),
        }
    }
}

/// The idempotency scope: `database.scope`, else this host's /etc/machine-id (stable across
/// reinstalls of the package and database loss), else the host name.
fn resolve_scope(configured: Option<&str>) -> String {
    if let Some(s) = configured {
        return s.to_owned();
    }
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(id) = std::fs::read_to_string(p) {
            let id = id.trim();
            if !id.is_empty() {
                return id.to_owned();
            }
        }
    }
    log::warn!(
        "no /etc/machine-id: using the host name as the idempotency scope; set database.scope"
    );
    kernel_host_name()
}

/// The kernel's host name (what `hostname` prints).
fn host_name() -> String {
    match kernel_host_name() {
        n if n.is_empty() => "localhost".to_owned(),
        n => n,
    }
}

/// /proc/sys/kernel/hostname, trimmed; empty when it cannot be read.
fn kernel_host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    name.trim().to_owned()
}
