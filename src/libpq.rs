//! The few libpq calls made directly, beside diesel (which links libpq through pq-sys):
//! the library's version, and whether it can parse a connection string. A leaf module, so
//! the config check and the PostgreSQL ledger share it.

use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int};

extern "C" {
    fn PQlibVersion() -> c_int;
    /// NULL when the string cannot be parsed; the options go back through
    /// `PQconninfoFree`, the message through `PQfreemem`.
    fn PQconninfoParse(conninfo: *const c_char, errmsg: *mut *mut c_char) -> *mut c_void;
    fn PQconninfoFree(options: *mut c_void);
    fn PQfreemem(ptr: *mut c_void);
}

/// libpq's version (e.g. 150004, 100023).
pub fn version() -> i32 {
    // SAFETY: PQlibVersion takes nothing, touches no connection and only returns a constant.
    unsafe { PQlibVersion() }
}

/// Whether libpq can parse `url` (a URL or a conninfo) as a connection would. Its own parse
/// errors quote the token they stop at (`invalid percent-encoded token: "Sup3r%zzSecret"`),
/// which may be the password: the caller says what is wrong without quoting anything.
pub fn parses(url: &str) -> bool {
    let Ok(c) = CString::new(url) else {
        return false;
    };
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: a NUL-terminated string in; both results freed the way libpq says, and the
    // message never read.
    unsafe {
        let options = PQconninfoParse(c.as_ptr(), &mut err);
        if !err.is_null() {
            PQfreemem(err.cast());
        }
        if options.is_null() {
            return false;
        }
        PQconninfoFree(options);
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_failures_are_found_without_connecting() {
        assert!(super::parses(
            "postgres://sega:pw@db.example:5432/sega?sslmode=disable"
        ));
        assert!(super::parses("host=/run/postgresql dbname=sega"));
        assert!(!super::parses("postgres://sega:Sup3r%zzSecret@db/sega"));
        assert!(!super::parses("host=db password='unterminated"));
        assert!(!super::parses("postgres://db/sega?bogus_option=1"));
    }
}
