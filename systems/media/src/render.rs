//! The deterministic renderer: a real PNG (or, for videos, an animated PNG)
//! drawn from the prompt, so the whole generation path runs without a GPU.
//! The same prompt, size and seed always give the same bytes; a different
//! prompt gives a different picture (the colours and shapes come from the
//! prompt's SHA-256).
//!
//! The encoder is ours and small: 8-bit RGB, filter 0 on every row, zlib
//! with stored (uncompressed) deflate blocks, CRC-32 and Adler-32 computed
//! here. Any PNG decoder reads it; it builds for wasm with no dependency.

use sha2::{Digest, Sha256};

/// Pixels on a side, at most (keeps a render within a function's CPU budget).
pub const MAX_SIDE: u32 = 1024;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for part in parts {
        for &b in *part {
            crc ^= u32::from(b);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xedb8_8320 & mask);
            }
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the largest n for which the sums cannot overflow before the modulo.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// zlib stream of `raw` in stored deflate blocks (at most 65535 bytes each).
fn zlib_stored(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 65535 * 5 + 11);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = raw.chunks(65535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let len = block.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(raw).to_be_bytes());
    out
}

/// Scanlines with filter byte 0 in front of each row.
fn scanlines(width: u32, rgb: &[u8]) -> Vec<u8> {
    let row = width as usize * 3;
    let mut raw = Vec::with_capacity(rgb.len() + rgb.len() / row.max(1));
    for line in rgb.chunks(row.max(1)) {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    raw
}

fn ihdr(width: u32, height: u32) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[..4].copy_from_slice(&width.to_be_bytes());
    h[4..8].copy_from_slice(&height.to_be_bytes());
    h[8] = 8; // bit depth
    h[9] = 2; // colour type: RGB
    h
}

/// A PNG of `rgb` (`width * height * 3` bytes, row by row).
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = PNG_SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr(width, height));
    chunk(&mut out, b"IDAT", &zlib_stored(&scanlines(width, rgb)));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An animated PNG (APNG) of `frames`, each shown `delay_ms`, looping.
/// Decoders without APNG support show the first frame.
pub fn encode_apng(width: u32, height: u32, frames: &[Vec<u8>], delay_ms: u16) -> Vec<u8> {
    let mut out = PNG_SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr(width, height));
    let mut actl = (frames.len() as u32).to_be_bytes().to_vec();
    actl.extend_from_slice(&0u32.to_be_bytes());
    chunk(&mut out, b"acTL", &actl);
    let mut seq = 0u32;
    for (i, frame) in frames.iter().enumerate() {
        let mut fctl = seq.to_be_bytes().to_vec();
        seq += 1;
        fctl.extend_from_slice(&width.to_be_bytes());
        fctl.extend_from_slice(&height.to_be_bytes());
        fctl.extend_from_slice(&[0; 8]); // x, y offsets
        fctl.extend_from_slice(&delay_ms.to_be_bytes());
        fctl.extend_from_slice(&1000u16.to_be_bytes());
        fctl.extend_from_slice(&[0, 0]); // dispose none, blend source
        chunk(&mut out, b"fcTL", &fctl);
        let data = zlib_stored(&scanlines(width, frame));
        if i == 0 {
            chunk(&mut out, b"IDAT", &data);
        } else {
            let mut fdat = seq.to_be_bytes().to_vec();
            seq += 1;
            fdat.extend_from_slice(&data);
            chunk(&mut out, b"fdAT", &fdat);
        }
    }
    chunk(&mut out, b"IEND", &[]);
    out
}

/// What to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    seed: [u8; 32],
}

impl Scene {
    /// The scene of `prompt` (with `variant` telling apart several images of one prompt).
    pub fn new(prompt: &str, variant: u32) -> Scene {
        let mut h = Sha256::new();
        h.update(prompt.as_bytes());
        h.update(variant.to_be_bytes());
        Scene {
            seed: h.finalize().into(),
        }
    }

    /// RGB pixels of frame `frame` (0 for a still image) at `width` x `height`.
    pub fn pixels(&self, width: u32, height: u32, frame: u32) -> Vec<u8> {
        let s = &self.seed;
        let top = [s[0], s[1], s[2]];
        let bottom = [s[3], s[4], s[5]];
        // Five discs, each from four seed bytes: centre, radius, colour index.
        let discs: Vec<(i64, i64, i64, [u8; 3])> = (0..5)
            .map(|i| {
                let b = &s[6 + i * 5..11 + i * 5];
                let shift = i64::from(frame) * (i64::from(b[4] % 7) - 3) * i64::from(width.max(1)) / 64;
                let cx = (i64::from(b[0]) * i64::from(width) / 255 + shift).rem_euclid(i64::from(width.max(1)));
                let cy = i64::from(b[1]) * i64::from(height) / 255;
                let r = (i64::from(b[2]) % 64 + 16) * i64::from(width.min(height)) / 256;
                (cx, cy, r, [b[3], b[2] ^ b[4], b[0].wrapping_add(b[1])])
            })
            .collect();
        let mut px = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..i64::from(height) {
            let wy = y * 255 / i64::from(height.max(1));
            for x in 0..i64::from(width) {
                let mut c = [0u8; 3];
                for k in 0..3 {
                    c[k] = ((i64::from(top[k]) * (255 - wy) + i64::from(bottom[k]) * wy) / 255) as u8;
                }
                for (cx, cy, r, colour) in &discs {
                    let (dx, dy) = (x - cx, y - cy);
                    if dx * dx + dy * dy <= r * r {
                        c = *colour;
                    }
                }
                px.extend_from_slice(&c);
            }
        }
        px
    }

    /// A still PNG.
    pub fn png(&self, width: u32, height: u32) -> Vec<u8> {
        let (w, h) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
        encode_png(w, h, &self.pixels(w, h, 0))
    }

    /// An animated PNG of `frames` frames.
    pub fn apng(&self, width: u32, height: u32, frames: u32, delay_ms: u16) -> Vec<u8> {
        let (w, h) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
        let frames: Vec<Vec<u8>> = (0..frames.clamp(1, 120)).map(|f| self.pixels(w, h, f)).collect();
        encode_apng(w, h, &frames, delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PNG reader for the tests: chunk walk with CRC checks, then
    /// stored-block inflate.
    fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        assert_eq!(&png[..8], &PNG_SIGNATURE);
        let mut out = Vec::new();
        let mut i = 8;
        while i < png.len() {
            let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = png[i + 4..i + 8].try_into().unwrap();
            let data = png[i + 8..i + 8 + len].to_vec();
            let crc = u32::from_be_bytes(png[i + 8 + len..i + 12 + len].try_into().unwrap());
            assert_eq!(crc, crc32(&[&kind, &data]), "CRC of {:?}", std::str::from_utf8(&kind));
            out.push((kind, data));
            i += 12 + len;
        }
        out
    }

    fn inflate_stored(z: &[u8]) -> Vec<u8> {
        assert_eq!(z[0], 0x78);
        let mut i = 2;
        let mut out = Vec::new();
        loop {
            let last = z[i] & 1;
            let len = u16::from_le_bytes([z[i + 1], z[i + 2]]) as usize;
            let nlen = u16::from_le_bytes([z[i + 3], z[i + 4]]);
            assert_eq!(!(len as u16), nlen);
            out.extend_from_slice(&z[i + 5..i + 5 + len]);
            i += 5 + len;
            if last == 1 {
                break;
            }
        }
        assert_eq!(u32::from_be_bytes(z[i..i + 4].try_into().unwrap()), adler32(&out));
        out
    }

    #[test]
    fn crc_and_adler_match_their_published_check_values() {
        assert_eq!(crc32(&[b"123456789"]), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_eq!(crc32(&[b"IEND"]), 0xae42_6082);
    }

    #[test]
    fn a_png_decodes_to_the_pixels_it_was_given() {
        let scene = Scene::new("a red fox in the snow", 0);
        let png = scene.png(300, 200);
        let c = chunks(&png);
        assert_eq!(&c[0].0, b"IHDR");
        assert_eq!(u32::from_be_bytes(c[0].1[..4].try_into().unwrap()), 300);
        assert_eq!(&c.last().unwrap().0, b"IEND");
        let raw = inflate_stored(&c[1].1);
        let px = scene.pixels(300, 200, 0);
        assert_eq!(raw.len(), 200 * (1 + 300 * 3));
        for (y, row) in raw.chunks(1 + 900).enumerate() {
            assert_eq!(row[0], 0);
            assert_eq!(&row[1..], &px[y * 900..(y + 1) * 900]);
        }
    }

    #[test]
    fn large_images_span_several_deflate_blocks() {
        let png = Scene::new("x", 0).png(200, 200);
        let c = chunks(&png);
        assert_eq!(inflate_stored(&c[1].1).len(), 200 * 601);
    }

    #[test]
    fn the_same_prompt_renders_the_same_bytes_and_another_prompt_does_not() {
        assert_eq!(Scene::new("a cat", 0).png(64, 64), Scene::new("a cat", 0).png(64, 64));
        assert_ne!(Scene::new("a cat", 0).png(64, 64), Scene::new("a dog", 0).png(64, 64));
        assert_ne!(Scene::new("a cat", 0).png(64, 64), Scene::new("a cat", 1).png(64, 64));
    }

    #[test]
    fn an_apng_has_one_control_chunk_per_frame_in_sequence() {
        let apng = Scene::new("waves", 0).apng(32, 32, 4, 100);
        let c = chunks(&apng);
        let kinds: Vec<&[u8; 4]> = c.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds.iter().filter(|k| **k == b"fcTL").count(), 4);
        assert_eq!(kinds.iter().filter(|k| **k == b"fdAT").count(), 3);
        assert_eq!(kinds[1], b"acTL");
        assert_eq!(u32::from_be_bytes(c[1].1[..4].try_into().unwrap()), 4);
        let seqs: Vec<u32> = c
            .iter()
            .filter(|(k, _)| k == b"fcTL" || k == b"fdAT")
            .map(|(_, d)| u32::from_be_bytes(d[..4].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn sizes_are_clamped() {
        let c = chunks(&Scene::new("x", 0).png(0, 5000));
        assert_eq!(u32::from_be_bytes(c[0].1[..4].try_into().unwrap()), 1);
        assert_eq!(u32::from_be_bytes(c[0].1[4..8].try_into().unwrap()), MAX_SIDE);
    }
}
