//! The fault and event kinds the engine can inject, and the set a run turns on
//! (`--faults`, `SEGA_MODEL_FAULTS`): `default` is every kind but `wal`, `all` is every kind;
//! a list names kinds, and `+kind` / `-kind` add to or take from the run's own default
//! (the soak's is `default`, the model test's `all`).

use std::fmt;

/// One kind of fault or event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Endpoint modes: 503 for a fraction, Retry-After, delays, hangs, resets, refusal,
    /// trickled and huge answers.
    Endpoint,
    /// `Mode::Poison`: 500 for the files whose name holds a needle, 200 for the others.
    Poison,
    /// `Mode::Interim`: 1xx answers before the final 200.
    Interim,
    /// SIGKILL, and a restart a little later.
    Kill,
    /// SIGSTOP for a few seconds with a burst of files written meanwhile.
    Stop,
    /// SIGTERM, and a restart.
    Term,
    /// Another connection holds the database's write lock for a while.
    DbLock,
    /// A file moved out of the tree and back (sometimes rewritten meanwhile).
    Vanish,
    /// A file rewritten in place or by rename: a new version.
    Rewrite,
    /// A folder renamed away with an empty directory in its place (a share unmounted).
    Unmount,
    /// A date folder replaced by a symlink to sentinel files outside the tree.
    Symlink,
    /// A complete file hard-linked into a date folder (only IN_CREATE fires).
    Link,
    /// The daemon's wall clock stepped forward or back (`SEGA_TEST_CLOCK_STEP`).
    Clock,
    /// The config narrowed (a folder or an extension removed) and widened again, SIGHUP.
    Reload,
    /// An episode that starts a little before midnight (`SEGA_TEST_NOW`).
    Midnight,
    /// The SQLite `-wal` file removed while the daemon runs.
    Wal,
}

impl Kind {
    /// Every kind, in the order of `--faults` listings.
    pub const ALL: [Kind; 16] = [
        Kind::Endpoint,
        Kind::Poison,
        Kind::Interim,
        Kind::Kill,
        Kind::Stop,
        Kind::Term,
        Kind::DbLock,
        Kind::Vanish,
        Kind::Rewrite,
        Kind::Unmount,
        Kind::Symlink,
        Kind::Link,
        Kind::Clock,
        Kind::Reload,
        Kind::Midnight,
        Kind::Wal,
    ];

    /// Its name in `--faults`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Endpoint => "endpoint",
            Kind::Poison => "poison",
            Kind::Interim => "interim",
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::Term => "term",
            Kind::DbLock => "dblock",
            Kind::Vanish => "vanish",
            Kind::Rewrite => "rewrite",
            Kind::Unmount => "unmount",
            Kind::Symlink => "symlink",
            Kind::Link => "link",
            Kind::Clock => "clock",
            Kind::Reload => "reload",
            Kind::Midnight => "midnight",
            Kind::Wal => "wal",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults(u32);

/// What `--faults` accepts, for usage messages.
pub const FAULTS_SYNTAX: &str =
    "default | all | none | KIND,... | +KIND,-KIND,... with KIND one of \
     endpoint poison interim kill stop term dblock vanish rewrite unmount symlink link clock \
     reload midnight wal (default: all but wal)";

impl Faults {
    /// Every kind but `wal`, which needs a daemon that notices a lost WAL.
    pub fn default_set() -> Faults {
        Faults::all().without(Kind::Wal)
    }

    /// Every kind.
    pub fn all() -> Faults {
        Faults(Kind::ALL.iter().fold(0, |acc, k| acc | k.bit()))
    }

    /// No kind: files arrive, nothing else happens.
    pub fn none() -> Faults {
        Faults(0)
    }

    /// Whether `k` is on.
    pub fn has(self, k: Kind) -> bool {
        self.0 & k.bit() != 0
    }

    /// This set and `k`.
    pub fn with(self, k: Kind) -> Faults {
        Faults(self.0 | k.bit())
    }

    /// This set but `k`.
    pub fn without(self, k: Kind) -> Faults {
        Faults(self.0 & !k.bit())
    }

    /// Parses `default`, `all`, `none`, `kill,stop`, `+wal`, `-clock,-reload`; `+`/`-`
    /// start from `base` (and an empty spec is `base`).
    pub fn parse(spec: &str, base: Faults) -> Result<Faults, String> {
        let mut set: Option<Faults> = None;
        for tok in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let base = |s: Option<Faults>| s.unwrap_or(base);
            match tok {
                "default" => set = Some(Faults::default_set()),
                "all" => set = Some(Faults::all()),
                "none" => set = Some(Faults::none()),
                _ => {
                    let (op, name) = match tok.as_bytes()[0] {
                        b'+' | b'-' => (Some(tok.as_bytes()[0]), &tok[1..]),
                        _ => (None, tok),
                    };
                    let kind = Kind::ALL
                        .into_iter()
                        .find(|k| k.name() == name)
                        .ok_or_else(|| format!("unknown fault kind {name:?}: {FAULTS_SYNTAX}"))?;
                    set = Some(match op {
                        Some(b'+') => base(set).with(kind),
                        Some(_) => base(set).without(kind),
                        None => set.unwrap_or_else(Faults::none).with(kind),
                    });
                }
            }
        }
        Ok(set.unwrap_or(base))
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| self.has(**k))
            .map(|k| k.name())
            .collect();
        if names.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", names.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let d = Faults::default_set();
        assert_eq!(Faults::parse("", d).unwrap(), d);
        assert!(!d.has(Kind::Wal));
        assert!(Faults::parse("+wal", d).unwrap().has(Kind::Wal));
        assert!(Faults::parse("all", d).unwrap().has(Kind::Wal));
        let f = Faults::parse("kill,stop", Faults::all()).unwrap();
        assert!(f.has(Kind::Kill) && f.has(Kind::Stop) && !f.has(Kind::Clock));
        let f = Faults::parse("-clock", d).unwrap();
        assert!(!f.has(Kind::Clock) && f.has(Kind::Kill) && !f.has(Kind::Wal));
        let f = Faults::parse("-clock", Faults::all()).unwrap();
        assert!(!f.has(Kind::Clock) && f.has(Kind::Wal));
        assert_eq!(Faults::parse("none", d).unwrap().to_string(), "none");
        assert!(Faults::parse("kil", d).is_err());
        assert_eq!(
            Faults::parse(&Faults::all().to_string(), d).unwrap(),
            Faults::all()
        );
    }
}
