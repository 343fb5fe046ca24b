//! `sega-sample`: writes a real, decodable sample image (for `make demo`, the soak run and
//! the benchmarks), optionally padded to an exact size.
//!
//! usage: sega-sample jpeg|png|truncated-jpeg FILE [--size BYTES] [--seed N]

use std::io::Write;
use std::process::ExitCode;

use sega_testsrv::images;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sega-sample jpeg|png|truncated-jpeg FILE [--size BYTES] [--seed N]";
    let (Some(kind), Some(file)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(64);
    };
    let mut size: Option<u64> = None;
    let mut seed: u64 = 1;
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--size", Some(v)) => size = Some(v),
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(64);
            }
        }
    }
    let result = std::fs::File::create(file).and_then(|f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        match (kind.as_str(), size) {
            ("jpeg", Some(n)) => images::write_jpeg_of_size(&mut w, n, seed)?,
            ("jpeg", None) => w.write_all(&images::jpeg(320, 240, seed))?,
            ("png", Some(n)) => w.write_all(&images::png_of_size(n as usize, seed))?,
            ("png", None) => w.write_all(&images::png(160, 120, seed))?,
            ("truncated-jpeg", _) => w.write_all(&images::truncated_jpeg(seed))?,
            _ => return Err(std::io::Error::other(usage)),
        }
        w.flush()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sega-sample: {file}: {e}");
            ExitCode::from(1)
        }
    }
}
