//! Real, decodable sample images for tests, the demo and benchmarks, made without any image
//! crate or external tool: a tiny baseline JPEG encoder (grayscale, DC coefficients only, so
//! every 8×8 block is flat) and a PNG writer (RGB, stored deflate blocks). Output is a pure
//! function of the arguments. The `*_of_size` variants pad to an exact byte count with
//! format-legal filler (JPEG COM segments, PNG ancillary `seGa` chunks) so files stay valid.

use std::io::{self, Write};

/// Every `size >= MIN_PADDED_SIZE` is hit exactly by [`jpeg_of_size`], [`png_of_size`] and
/// [`write_jpeg_of_size`], whatever the seed. (The real thresholds are lower: JPEG needs the
/// unpadded 64×48 image + 4 bytes, at most 546 in total; PNG needs its unpadded 16×16 image
/// (852 bytes) + 12.)
pub const MIN_PADDED_SIZE: usize = 1024;

/// Picture dimensions used by the `*_of_size` and `truncated_*` helpers.
const JPEG_DIMS: (u16, u16) = (64, 48);
const PNG_DIMS: (u32, u32) = (16, 16);

// ITU T.81 Annex K.3 tables: the standard luminance DC and AC Huffman tables. The full AC table
// is sent although only EOB is used, because decoders may reject degenerate tables.
const DC_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const AC_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
/// SOI + APP0 (JFIF 1.01, no density unit, no thumbnail): padding goes right after it, because
/// JFIF requires APP0 to follow SOI immediately.
const JPEG_HEAD: [u8; 20] = [
    0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
];
/// A COM segment is at least marker + length field and at most marker + 65535.
const COM_MIN: u64 = 4;
const COM_MAX: u64 = 2 + 65535;
/// A PNG chunk is length + type + CRC = 12 bytes plus data; 64 KiB chunks keep buffers small.
const CHUNK_MIN: u64 = 12;
const CHUNK_MAX: u64 = 65536;
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// A valid baseline JFIF JPEG, `width`×`height` (0 is taken as 1), 8-bit grayscale, picturing a
/// seed-dependent gradient with blocky noise in flat 8×8 blocks. Starts with FF D8 FF, ends with
/// FF D9.
pub fn jpeg(width: u16, height: u16, seed: u64) -> Vec<u8> {
    encode_jpeg(width, height, seed).0
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
    let gap = size.saturating_sub(base.len() as u64);
    w.write_all(&base[..JPEG_HEAD.len()])?;
    if gap >= COM_MIN {
        let mut rng = Rng(seed);
        let mut seg = Vec::new();
        for len in split(gap, COM_MIN, COM_MAX) {
            seg.clear();
            seg.extend([0xFF, 0xFE]);
            seg.extend(((len - 2) as u16).to_be_bytes());
            rng.fill_text(&mut seg, (len - COM_MIN) as usize);
            w.write_all(&seg)?;
        }
    }
    w.write_all(&base[JPEG_HEAD.len()..])
}

/// The 64×48 [`jpeg`] cut off halfway through its entropy-coded data: no EOI, like a file that
/// is still being written.
pub fn truncated_jpeg(seed: u64) -> Vec<u8> {
    let (mut out, scan_start) = encode_jpeg(JPEG_DIMS.0, JPEG_DIMS.1, seed);
    out.truncate(scan_start + (out.len() - 2 - scan_start) / 2);
    out
}

/// A valid PNG, `width`×`height` (0 is taken as 1), 8-bit RGB, non-interlaced: IHDR, one IDAT
/// (zlib of stored deflate blocks), IEND. Meant for small images: the data is uncompressed.
pub fn png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let (w, h) = (width.max(1), height.max(1));
    let mut raw = Vec::with_capacity(h as usize * (1 + 3 * w as usize));
    for y in 0..h {
        raw.push(0); // filter type None
        for x in 0..w {
            raw.extend(pixel(x, y, w, h, seed));
        }
    }
    // zlib: CMF 0x78 (deflate, 32 KiB window), FLG 0x01 makes the header a multiple of 31.
    let mut z = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65535).peekable();
    while let Some(block) = blocks.next() {
        z.push(u8::from(blocks.peek().is_none())); // BFINAL bit, BTYPE 00 = stored
        let len = block.len() as u16;
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend(block);
    }
    z.extend(adler32(&raw).to_be_bytes());
    // Depth 8, truecolor, deflate, adaptive filtering, no interlace.
    let ihdr = [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
    let mut out = PNG_SIGNATURE.to_vec();
    put_chunk(&mut out, b"IHDR", &ihdr);
    put_chunk(&mut out, b"IDAT", &z);
    put_chunk(&mut out, b"IEND", &[]);
    out
}

/// [`png`] of 16×16, padded to exactly `size` bytes with private ancillary `seGa` chunks before
/// IEND, if `size` is at least the natural size (852) + 12; else unpadded.
pub fn png_of_size(size: usize, seed: u64) -> Vec<u8> {
    let mut out = png(PNG_DIMS.0, PNG_DIMS.1, seed);
    let gap = size.saturating_sub(out.len()) as u64;
    if gap >= CHUNK_MIN {
        let iend = out.split_off(out.len() - CHUNK_MIN as usize);
        out.reserve(size - out.len());
        let mut rng = Rng(seed);
        let mut data = Vec::new();
        for len in split(gap, CHUNK_MIN, CHUNK_MAX) {
            data.clear();
            rng.fill_text(&mut data, (len - CHUNK_MIN) as usize);
            put_chunk(&mut out, b"seGa", &data);
        }
        out.extend(iend);
    }
    out
}

/// The 16×16 [`png`] cut off halfway through its IDAT chunk: no IEND, like a file that is still
/// being written.
pub fn truncated_png(seed: u64) -> Vec<u8> {
    let mut out = png(PNG_DIMS.0, PNG_DIMS.1, seed);
    let idat_start = PNG_SIGNATURE.len() + 25; // after the IHDR chunk
    let idat_len = out.len() - idat_start - CHUNK_MIN as usize;
    out.truncate(idat_start + idat_len / 2);
    out
}

/// The picture: a gradient whose direction depends on the seed, plus seeded noise in coarse cells.
fn pixel(x: u32, y: u32, w: u32, h: u32, seed: u64) -> [u8; 3] {
    // XOR with 0xFF mirrors a ramp; seed bits 0 and 1 choose the directions.
    let ramp = |v: u32, n: u32, bit: u32| {
        (u64::from(v) * 256 / u64::from(n)) as u8 ^ 0u8.wrapping_sub((seed >> bit) as u8 & 1)
    };
    let cell = (w.max(h) / 6).max(1);
    let noise = mix(seed ^ (u64::from(x / cell) << 32) ^ u64::from(y / cell)) as u8;
    [ramp(x, w, 0), ramp(y, h, 1), noise]
}

/// Returns the JPEG and the offset where its entropy-coded data starts.
fn encode_jpeg(width: u16, height: u16, seed: u64) -> (Vec<u8>, usize) {
    let (w, h) = (width.max(1), height.max(1));
    let mut out = JPEG_HEAD.to_vec();
    // Quantizer 8 everywhere: the quantized DC is then exactly `level - 128` (the DC coefficient
    // of a flat block is 8 × (level - 128)); AC entries are irrelevant, all AC are zero.
    let mut dqt = vec![0u8; 65]; // Pq 0 (8-bit), Tq 0
    dqt[1..].fill(8);
    put_segment(&mut out, 0xDB, &dqt);
    let [hh, hl] = h.to_be_bytes();
    let [wh, wl] = w.to_be_bytes();
    // SOF0: precision 8, one component (id 1, sampling 1×1, quant table 0).
    put_segment(&mut out, 0xC0, &[8, hh, hl, wh, wl, 1, 1, 0x11, 0]);
    let mut dht = vec![0x00]; // class DC, id 0
    dht.extend(DC_BITS.iter().chain(&DC_VALS));
    dht.push(0x10); // class AC, id 0
    dht.extend(AC_BITS.iter().chain(&AC_VALS));
    put_segment(&mut out, 0xC4, &dht);
    // SOS: component 1 with tables 0/0, spectral selection 0..=63, no approximation.
    put_segment(&mut out, 0xDA, &[1, 1, 0x00, 0, 63, 0]);
    let scan_start = out.len();

    let dc = huffman_codes(&DC_BITS, &DC_VALS);
    let eob = huffman_codes(&AC_BITS, &AC_VALS)[0];
    let mut bits = BitWriter { out, acc: 0, n: 0 };
    let mut pred = 0i32;
    for by in 0..h.div_ceil(8) {
        for bx in 0..w.div_ceil(8) {
            // Sample at the block centre, clamped into the image for partial edge blocks (the
            // decoder crops the rest).
            let x = (u32::from(bx) * 8 + 4).min(u32::from(w) - 1);
            let y = (u32::from(by) * 8 + 4).min(u32::from(h) - 1);
            let [r, g, b] = pixel(x, y, w.into(), h.into(), seed);
            let level = (u32::from(r) + u32::from(g) + 2 * u32::from(b)) / 4;
            let dc_value = level as i32 - 128;
            let diff = dc_value - pred;
            pred = dc_value;
            let cat = 32 - diff.unsigned_abs().leading_zeros();
            let (code, len) = dc[cat as usize];
            bits.put(code, len.into());
            // Negative differences are sent as diff - 1 in `cat` bits (T.81 F.1.2.1.1).
            let extra = if diff < 0 { diff - 1 } else { diff };
            bits.put(extra as u32 & ((1 << cat) - 1), cat);
            bits.put(eob.0, eob.1.into());
        }
    }
    let mut out = bits.finish();
    out.extend([0xFF, 0xD9]);
    (out, scan_start)
}

/// Canonical Huffman codes (T.81 Annex C) as `(code, length)`, indexed by symbol.
fn huffman_codes(bits: &[u8; 16], vals: &[u8]) -> [(u32, u8); 256] {
    let mut table = [(0, 0); 256];
    let (mut code, mut k) = (0u32, 0usize);
    for (len, &count) in (1u8..).zip(bits) {
        for _ in 0..count {
            table[usize::from(vals[k])] = (code, len);
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    table
}

/// MSB-first bit packer for entropy-coded data.
struct BitWriter {
    out: Vec<u8>,
    acc: u8,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((code >> i) & 1) as u8;
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc);
                // A data byte FF would read as a marker prefix: stuff a zero after it.
                if self.acc == 0xFF {
                    self.out.push(0);
                }
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    /// Pads the last byte with 1-bits, as T.81 F.1.2.3 requires.
    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1);
        }
        self.out
    }
}

fn put_segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend([0xFF, marker]);
    out.extend((payload.len() as u16 + 2).to_be_bytes());
    out.extend(payload);
}

fn put_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    out.extend((!crc32_update(crc32_update(!0, kind), data)).to_be_bytes());
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

/// CRC-32 (ISO-HDLC, as in PNG) register update, bitwise: PNGs here are small. Start with `!0`
/// and invert the result.
fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the longest run whose sums cannot overflow u32 before reducing (as in zlib).
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// SplitMix64 finalizer: a cheap, well-mixed hash for pictures and padding.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    /// Appends `n` seeded lowercase letters: printable padding without FF bytes, so even naive
    /// marker scanners never see a fake JPEG marker inside a COM segment.
    fn fill_text(&mut self, out: &mut Vec<u8>, n: usize) {
        let start = out.len();
        out.resize(start + n, 0);
        for group in out[start..].chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let x = mix(self.0);
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

    /// Walks a PNG, checking every CRC; IEND must be the last chunk, at the very end.
    fn png_chunks(b: &[u8]) -> Vec<([u8; 4], &[u8])> {
        assert_eq!(b[..8], PNG_SIGNATURE);
        let (mut i, mut chunks) = (8, Vec::new());
        while i < b.len() {
            let len = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
            let (kind, data) = (&b[i + 4..i + 8], &b[i + 8..i + 8 + len]);
            let crc = u32::from_be_bytes(b[i + 8 + len..i + 12 + len].try_into().unwrap());
            assert_eq!(crc, !crc32_update(crc32_update(!0, kind), data));
            chunks.push((kind.try_into().unwrap(), data));
            i += 12 + len;
        }
        assert_eq!(i, b.len());
        assert_eq!(chunks[chunks.len() - 1], (*b"IEND", &[][..]));
        chunks
    }

    /// Inflates a zlib stream made only of stored blocks, verifying header and Adler-32.
    fn inflate_stored(z: &[u8]) -> Vec<u8> {
        assert_eq!((u16::from(z[0]) << 8 | u16::from(z[1])) % 31, 0);
        let (mut i, mut raw) = (2, Vec::new());
        loop {
            let last = z[i] & 1 == 1;
            assert_eq!(z[i] >> 1, 0, "stored block expected");
            let len = usize::from(u16::from_le_bytes([z[i + 1], z[i + 2]]));
            assert_eq!(u16::from_le_bytes([z[i + 3], z[i + 4]]), !(len as u16));
            raw.extend(&z[i + 5..i + 5 + len]);
            i += 5 + len;
            if last {
                break;
            }
        }
        assert_eq!(z[i..], adler32(&raw).to_be_bytes());
        raw
    }

    #[test]
    fn tables_and_checksums_match_known_values() {
        let dc = huffman_codes(&DC_BITS, &DC_VALS);
        assert_eq!(
            (dc[0], dc[1], dc[5], dc[11]),
            ((0, 2), (2, 3), (6, 3), (0x1FE, 9))
        );
        assert_eq!(huffman_codes(&AC_BITS, &AC_VALS)[0], (0b1010, 4)); // EOB
        assert_eq!(
            AC_BITS.iter().map(|&n| usize::from(n)).sum::<usize>(),
            AC_VALS.len()
        );
        assert_eq!(!crc32_update(!0, b"IEND"), 0xAE42_6082);
        assert_eq!(!crc32_update(!0, b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // Long input exercises the deferred modulo (value from Python zlib.adler32).
        assert_eq!(adler32(&vec![0xFF; 100_000]), 0x149A_302C);
    }

    #[test]
    fn jpeg_structure_and_dimensions() {
        for (w, h) in [(1, 1), (7, 9), (8, 8), (64, 48), (640, 480), (4096, 3)] {
            let img = jpeg(w, h, 42);
            let segs = jpeg_segments(&img);
            let markers: Vec<u8> = segs.iter().map(|s| s.0).collect();
            assert_eq!(markers, [0xE0, 0xDB, 0xC0, 0xC4, 0xDA]);
            assert_eq!(segs[0].1[..5], *b"JFIF\0");
            assert_eq!(
                segs[2].1[..5],
                [8, (h >> 8) as u8, h as u8, (w >> 8) as u8, w as u8]
            );
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
            assert_eq!(segs.len() - com.len(), 5);
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
            let chunks = png_chunks(&img);
            let kinds: Vec<_> = chunks.iter().map(|c| c.0).collect();
            assert_eq!(kinds, [*b"IHDR", *b"IDAT", *b"IEND"]);
            assert_eq!(
                chunks[0].1[..8],
                [w.to_be_bytes(), h.to_be_bytes()].concat()
            );
            let raw = inflate_stored(chunks[1].1);
            let row = 1 + 3 * w as usize;
            assert_eq!(raw.len(), h as usize * row);
            assert!(raw.chunks(row).all(|r| r[0] == 0));
        }
        assert_ne!(png(16, 16, 1), png(16, 16, 2));
    }

    #[test]
    fn png_of_size_is_exact_and_valid() {
        let natural = png(16, 16, 0).len();
        assert_eq!(natural + 12, 864);
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
            let chunks = png_chunks(&img);
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
            assert!(jpeg(64, 48, seed).starts_with(&j) && j.len() > 324);
            let p = truncated_png(seed);
            assert!(png(16, 16, seed).starts_with(&p) && p.len() > 8 + 25 + 12);
            assert!(!p.windows(4).any(|w| w == b"IEND"));
        }
    }
}
