//! Real, decodable sample images for tests, the demo and benchmarks, made by well-kept encoders
//! (`jpeg-encoder`: baseline JFIF, 8-bit grayscale; `png`: 8-bit RGB) from a seed-dependent
//! picture. Output is a pure function of the arguments. The `*_of_size` variants pad to an
//! exact byte count with format-legal filler (JPEG COM segments right after SOI/APP0, PNG
//! ancillary `seGa` chunks before IEND), so files stay valid and keep their end marker last,
//! where the daemon's content check looks for it.

use std::io::{self, Write};

use crate::rng::Rng;

/// Every `size >= MIN_PADDED_SIZE` is hit exactly by [`jpeg_of_size`], [`png_of_size`] and
/// [`write_jpeg_of_size`], whatever the seed. (The real thresholds are lower: JPEG needs the
/// unpadded 64×48 image + 4 bytes; PNG needs its unpadded 16×16 image + 12.)
pub const MIN_PADDED_SIZE: usize = 1024;

/// Picture dimensions used by the `*_of_size` and `truncated_*` helpers.
const JPEG_DIMS: (u16, u16) = (64, 48);
const PNG_DIMS: (u32, u32) = (16, 16);
const JPEG_QUALITY: u8 = 75;

/// A COM segment is at least marker + length field and at most marker + 65535.
const COM_MIN: u64 = 4;
const COM_MAX: u64 = 2 + 65535;
/// A PNG chunk is length + type + CRC = 12 bytes plus data; 64 KiB chunks keep buffers small.
const CHUNK_MIN: u64 = 12;
const CHUNK_MAX: u64 = 65536;
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// A valid baseline JFIF JPEG, `width`×`height` (0 is taken as 1), 8-bit grayscale, picturing a
/// seed-dependent gradient with blocky noise. Starts with SOI and APP0 (FF D8 FF E0), ends
/// with EOI (FF D9).
pub fn jpeg(width: u16, height: u16, seed: u64) -> Vec<u8> {
    let (w, h) = (width.max(1), height.max(1));
    let mut luma = Vec::with_capacity(usize::from(w) * usize::from(h));
    for y in 0..u32::from(h) {
        for x in 0..u32::from(w) {
            let [r, g, b] = pixel(x, y, w.into(), h.into(), seed);
            luma.push(((u32::from(r) + u32::from(g) + 2 * u32::from(b)) / 4) as u8);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY)
        .encode(&luma, w, h, jpeg_encoder::ColorType::Luma)
        .expect("encoding a JPEG into memory");
    out
}

/// [`jpeg`] of 64×48, padded to exactly `size` bytes with COM segments after SOI/APP0, if `size`
/// is at least the natural size + 4 (always so for `size >= MIN_PADDED_SIZE`); else unpadded.
pub fn jpeg_of_size(size: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size.max(MIN_PADDED_SIZE));
    // Writing into a Vec cannot fail.
    let _ = write_jpeg_of_size(&mut out, size as u64, seed);
    out
}

/// Streams [`jpeg_of_size`]'s output to `w` segment by segment (at most 64 KiB in memory), so
/// benchmark files of any size up to gigabytes can be written. Same size rules.
pub fn write_jpeg_of_size<W: Write>(mut w: W, size: u64, seed: u64) -> io::Result<()> {
    let base = jpeg(JPEG_DIMS.0, JPEG_DIMS.1, seed);
    // JFIF requires APP0 to follow SOI immediately: the padding goes after it.
    let head = jpeg_segment_end(&base, 2);
    let gap = size.saturating_sub(base.len() as u64);
    w.write_all(&base[..head])?;
    if gap >= COM_MIN {
        let mut text = Text::new(seed);
        let mut seg = Vec::new();
        for len in split(gap, COM_MIN, COM_MAX) {
            seg.clear();
            seg.extend([0xFF, 0xFE]);
            seg.extend(((len - 2) as u16).to_be_bytes());
            text.fill(&mut seg, (len - COM_MIN) as usize);
            w.write_all(&seg)?;
        }
    }
    w.write_all(&base[head..])
}

/// The 64×48 [`jpeg`] cut off halfway through its entropy-coded data: no EOI, like a file that
/// is still being written.
pub fn truncated_jpeg(seed: u64) -> Vec<u8> {
    let mut out = jpeg(JPEG_DIMS.0, JPEG_DIMS.1, seed);
    let scan_start = jpeg_scan_start(&out);
    out.truncate(scan_start + (out.len() - 2 - scan_start) / 2);
    out
}

/// A valid PNG, `width`×`height` (0 is taken as 1), 8-bit RGB, non-interlaced: IHDR, IDAT,
/// IEND.
pub fn png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    encode_png(width, height, seed, 0)
}

/// [`png`] of 16×16, padded to exactly `size` bytes with private ancillary `seGa` chunks before
/// IEND, if `size` is at least the natural size + 12; else unpadded.
pub fn png_of_size(size: usize, seed: u64) -> Vec<u8> {
    let natural = png(PNG_DIMS.0, PNG_DIMS.1, seed).len() as u64;
    encode_png(
        PNG_DIMS.0,
        PNG_DIMS.1,
        seed,
        (size as u64).saturating_sub(natural),
    )
}

/// The 16×16 [`png`] cut off halfway through its IDAT chunk: no IEND, like a file that is still
/// being written.
pub fn truncated_png(seed: u64) -> Vec<u8> {
    let mut out = png(PNG_DIMS.0, PNG_DIMS.1, seed);
    // After the signature and IHDR (4 + 4 + 13 + 4 bytes): IDAT's length, type and data.
    let idat = PNG_SIGNATURE.len() + 25;
    let len = u32::from_be_bytes(out[idat..idat + 4].try_into().unwrap()) as usize;
    out.truncate(idat + 8 + len / 2);
    out
}

/// The PNG with `gap` bytes of `seGa` chunks before IEND (none if `gap` is below a chunk).
fn encode_png(width: u32, height: u32, seed: u64, gap: u64) -> Vec<u8> {
    let (w, h) = (width.max(1), height.max(1));
    let mut rgb = Vec::with_capacity(3 * w as usize * h as usize);
    for y in 0..h {
        for x in 0..w {
            rgb.extend(pixel(x, y, w, h, seed));
        }
    }
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(png::ColorType::Rgb);
    e.set_depth(png::BitDepth::Eight);
    // Into memory, of a picture we made: nothing here can fail.
    let mut writer = e.write_header().expect("a PNG header");
    writer.write_image_data(&rgb).expect("PNG image data");
    if gap >= CHUNK_MIN {
        let mut text = Text::new(seed);
        let mut data = Vec::new();
        for len in split(gap, CHUNK_MIN, CHUNK_MAX) {
            data.clear();
            text.fill(&mut data, (len - CHUNK_MIN) as usize);
            writer
                .write_chunk(png::chunk::ChunkType(*b"seGa"), &data)
                .expect("a PNG chunk");
        }
    }
    writer.finish().expect("PNG IEND");
    out
}

/// The picture: a gradient whose direction depends on the seed, plus seeded noise in coarse cells.
fn pixel(x: u32, y: u32, w: u32, h: u32, seed: u64) -> [u8; 3] {
    // XOR with 0xFF mirrors a ramp; seed bits 0 and 1 choose the directions.
    let ramp = |v: u32, n: u32, bit: u32| {
        (u64::from(v) * 256 / u64::from(n)) as u8 ^ 0u8.wrapping_sub((seed >> bit) as u8 & 1)
    };
    let cell = (w.max(h) / 6).max(1);
    let noise = Rng::stream(seed, (u64::from(x / cell) << 32) | u64::from(y / cell)).next_u64();
    [ramp(x, w, 0), ramp(y, h, 1), noise as u8]
}

/// Where the JPEG segment starting at `at` (its marker) ends.
fn jpeg_segment_end(b: &[u8], at: usize) -> usize {
    at + 2 + usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]))
}

/// Where a JPEG's entropy-coded data starts: right after its SOS segment.
fn jpeg_scan_start(b: &[u8]) -> usize {
    let mut at = 2;
    loop {
        let end = jpeg_segment_end(b, at);
        if b[at + 1] == 0xDA {
            return end;
        }
        at = end;
    }
}

/// Splits `total >= min` into pieces within `min..=max` (needs `max >= 2 * min`): full pieces,
/// except that the last two share out the remainder so neither falls below `min`.
fn split(mut rest: u64, min: u64, max: u64) -> impl Iterator<Item = u64> {
    std::iter::from_fn(move || {
        let piece = match rest {
            0 => return None,
            r if r <= max => r,
            r if r - max < min => r - min,
            _ => max,
        };
        rest -= piece;
        Some(piece)
    })
}

/// Seeded lowercase letters: printable padding without FF bytes, so even naive marker
/// scanners never see a fake JPEG marker inside a COM segment.
struct Text(Rng);

impl Text {
    fn new(seed: u64) -> Text {
        Text(Rng::stream(seed, u64::MAX))
    }

    /// Appends `n` letters.
    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        let start = out.len();
        out.resize(start + n, 0);
        for group in out[start..].chunks_mut(8) {
            let x = self.0.next_u64();
            for (i, b) in group.iter_mut().enumerate() {
                *b = b'a' + (x >> (8 * i)) as u8 % 26;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a JPEG: returns the (marker, payload) segments up to and including SOS, after
    /// checking that the entropy-coded data is properly stuffed and followed by EOI at the end.
    fn jpeg_segments(b: &[u8]) -> Vec<(u8, &[u8])> {
        assert_eq!(b[..3], [0xFF, 0xD8, 0xFF]);
        let (mut i, mut segs) = (2, Vec::new());
        loop {
            assert_eq!(b[i], 0xFF, "marker expected at {i}");
            let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
            assert!(len >= 2);
            segs.push((b[i + 1], &b[i + 4..i + 2 + len]));
            i += 2 + len;
            if segs[segs.len() - 1].0 == 0xDA {
                break;
            }
        }
        while b[i] != 0xFF || b[i + 1] == 0 {
            i += if b[i] == 0xFF { 2 } else { 1 };
        }
        assert_eq!(
            b[i..],
            [0xFF, 0xD9],
            "EOI must be the only marker after SOS, at the end"
        );
        segs
    }

    /// A PNG's (type, data) chunks in order.
    type Chunks<'a> = Vec<([u8; 4], &'a [u8])>;

    /// Decodes a PNG (the decoder checks every CRC and skips unknown ancillary chunks): its
    /// dimensions and RGB bytes, and its chunks.
    fn png_decoded(b: &[u8]) -> ((u32, u32), Vec<u8>, Chunks<'_>) {
        let mut r = png::Decoder::new(std::io::Cursor::new(b))
            .read_info()
            .unwrap();
        let mut rgb = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut rgb).unwrap();
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        r.finish().unwrap();
        let (mut i, mut kinds) = (8, Vec::new());
        while i < b.len() {
            let len = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
            kinds.push((b[i + 4..i + 8].try_into().unwrap(), &b[i + 8..i + 8 + len]));
            i += 12 + len;
        }
        assert_eq!(i, b.len());
        assert_eq!(kinds.last(), Some(&(*b"IEND", &[][..])));
        ((info.width, info.height), rgb, kinds)
    }

    #[test]
    fn jpeg_structure_and_dimensions() {
        for (w, h) in [(1, 1), (7, 9), (8, 8), (64, 48), (640, 480), (4096, 3)] {
            let img = jpeg(w, h, 42);
            let segs = jpeg_segments(&img);
            assert_eq!(segs[0].0, 0xE0);
            assert_eq!(segs[0].1[..5], *b"JFIF\0");
            let sof: Vec<_> = segs.iter().filter(|s| s.0 == 0xC0).collect();
            assert_eq!(sof.len(), 1, "one baseline frame");
            assert_eq!(
                sof[0].1[..6],
                [8, (h >> 8) as u8, h as u8, (w >> 8) as u8, w as u8, 1]
            );
            let sos_end = 2 + segs.iter().map(|s| 4 + s.1.len()).sum::<usize>();
            assert_eq!(jpeg_scan_start(&img), sos_end);
        }
        assert_eq!(jpeg(0, 0, 1), jpeg(1, 1, 1));
        assert_eq!(jpeg(64, 48, 7), jpeg(64, 48, 7));
        assert_ne!(jpeg(64, 48, 7), jpeg(64, 48, 8));
    }

    #[test]
    fn jpeg_of_size_is_exact_and_valid() {
        for seed in 0..40 {
            assert!(jpeg(64, 48, seed).len() + 4 <= MIN_PADDED_SIZE);
            assert_eq!(jpeg_of_size(MIN_PADDED_SIZE, seed).len(), MIN_PADDED_SIZE);
        }
        let natural = jpeg(64, 48, 3).len();
        let plain_segments = jpeg_segments(&jpeg(64, 48, 3)).len();
        assert_eq!(jpeg_of_size(0, 3), jpeg(64, 48, 3));
        assert_eq!(jpeg_of_size(natural + 3, 3), jpeg(64, 48, 3));
        let big = COM_MAX as usize;
        for extra in [
            4,
            5,
            6,
            7,
            big - 1,
            big,
            big + 1,
            big + 3,
            big + 4,
            3 * big + 2,
            102_400,
        ] {
            let img = jpeg_of_size(natural + extra, 3);
            assert_eq!(img.len(), natural + extra);
            let segs = jpeg_segments(&img);
            assert_eq!(segs[0].0, 0xE0, "APP0 must stay first");
            let com: Vec<_> = segs.iter().filter(|s| s.0 == 0xFE).collect();
            assert!(com.iter().all(|s| s.1.iter().all(u8::is_ascii_lowercase)));
            assert_eq!(segs.len() - com.len(), plain_segments);
        }
        assert_ne!(jpeg_of_size(102_400, 1), jpeg_of_size(102_400, 2));
    }

    #[test]
    fn streamed_jpeg_matches_in_memory() {
        let mut streamed = Vec::new();
        write_jpeg_of_size(&mut streamed, 300_001, 9).unwrap();
        assert_eq!(streamed, jpeg_of_size(300_001, 9));
    }

    #[test]
    fn png_structure_pixels_and_dimensions() {
        for (w, h) in [(1, 1), (7, 9), (16, 16), (640, 480)] {
            let img = png(w, h, 5);
            let (dims, rgb, chunks) = png_decoded(&img);
            let kinds: Vec<_> = chunks.iter().map(|c| c.0).collect();
            assert_eq!(kinds, [*b"IHDR", *b"IDAT", *b"IEND"]);
            assert_eq!(dims, (w, h));
            assert_eq!(rgb[..3], pixel(0, 0, w, h, 5));
        }
        assert_ne!(png(16, 16, 1), png(16, 16, 2));
    }

    #[test]
    fn png_of_size_is_exact_and_valid() {
        let natural = png(16, 16, 4).len();
        assert!(natural + 12 <= MIN_PADDED_SIZE);
        let plain_png = png(16, 16, 4);
        let plain = png_decoded(&plain_png);
        assert_eq!(png_of_size(natural + 11, 4), png(16, 16, 4));
        let big = CHUNK_MAX as usize;
        for extra in [
            12,
            13,
            big - 1,
            big,
            big + 1,
            big + 11,
            big + 12,
            3 * big + 5,
            102_400,
        ] {
            let img = png_of_size(natural + extra, 4);
            assert_eq!(img.len(), natural + extra);
            let (dims, rgb, chunks) = png_decoded(&img);
            assert_eq!((dims, rgb), (plain.0, plain.1.clone()));
            assert_eq!(
                chunks[..2].iter().map(|c| c.0).collect::<Vec<_>>(),
                [*b"IHDR", *b"IDAT"]
            );
            let pad = &chunks[2..chunks.len() - 1];
            assert!(pad
                .iter()
                .all(|c| &c.0 == b"seGa" && c.1.iter().all(u8::is_ascii_lowercase)));
        }
        assert_eq!(png_of_size(MIN_PADDED_SIZE, 8).len(), MIN_PADDED_SIZE);
        assert_ne!(png_of_size(102_400, 1), png_of_size(102_400, 2));
    }

    #[test]
    fn truncated_samples_lack_their_end() {
        for seed in 0..10 {
            let j = truncated_jpeg(seed);
            assert!(j.starts_with(&[0xFF, 0xD8, 0xFF]) && !j.ends_with(&[0xFF, 0xD9]));
            let whole = jpeg(64, 48, seed);
            assert!(whole.starts_with(&j) && j.len() > jpeg_scan_start(&whole));
            let p = truncated_png(seed);
            assert!(png(16, 16, seed).starts_with(&p) && p.len() > 8 + 25 + 12);
            assert!(!p.windows(4).any(|w| w == b"IEND"));
        }
    }
}
