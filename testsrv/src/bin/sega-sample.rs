//! `sega-sample`: writes a real, decodable sample image (for `make demo`, the soak run and
//! the benchmarks), optionally padded to an exact size.
//!
//! usage: sega-sample jpeg|png|truncated-jpeg FILE [--size BYTES] [--seed N]

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use sega_testsrv::images;

const USAGE: &str = "usage: sega-sample jpeg|png|truncated-jpeg FILE [--size BYTES] [--seed N]";

struct Args {
    kind: String,
    file: OsString,
    size: Option<u64>,
    seed: u64,
}

/// The options; `None` for `--help`.
fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let (mut kind, mut file) = (None, None);
    let (mut size, mut seed) = (None, 1);
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("size") => size = Some(p.value()?.parse()?),
            Long("seed") => seed = p.value()?.parse()?,
            Short('h') | Long("help") => return Ok(None),
            Value(v) if kind.is_none() => {
                let k: String = v.parse()?;
                if !["jpeg", "png", "truncated-jpeg"].contains(&k.as_str()) {
                    return Err(format!("unknown kind {k:?}").into());
                }
                kind = Some(k);
            }
            Value(v) if file.is_none() => file = Some(v),
            _ => return Err(arg.unexpected()),
        }
    }
    let (Some(kind), Some(file)) = (kind, file) else {
        return Err("a kind and a FILE are needed".into());
    };
    Ok(Some(Args {
        kind,
        file,
        size,
        seed,
    }))
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sega-sample: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let seed = a.seed;
    let result = std::fs::File::create(&a.file).and_then(|f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        match (a.kind.as_str(), a.size) {
            ("jpeg", Some(n)) => images::write_jpeg_of_size(&mut w, n, seed)?,
            ("jpeg", None) => w.write_all(&images::jpeg(320, 240, seed))?,
            ("png", Some(n)) => w.write_all(&images::png_of_size(n as usize, seed))?,
            ("png", None) => w.write_all(&images::png(160, 120, seed))?,
            // truncated-jpeg (the kind was checked)
            _ => w.write_all(&images::truncated_jpeg(seed))?,
        }
        w.flush()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sega-sample: {}: {e}", a.file.to_string_lossy());
            ExitCode::from(1)
        }
    }
}
