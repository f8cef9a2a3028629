//! Writes a photo-like JPEG for the upload benchmark (`scripts/bench-photos`): smooth
//! gradients, a few shapes and sensor-like noise, so it compresses (and decodes) like a
//! camera's picture rather than like a flat test card.
//!
//! Usage: `bench_photo OUT WIDTH HEIGHT [SEED]`.

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_photo OUT WIDTH HEIGHT [SEED]";
    let out = args.next().expect(usage);
    let width: u32 = args.next().expect(usage).parse().expect(usage);
    let height: u32 = args.next().expect(usage).parse().expect(usage);
    let seed: u32 = args.next().map_or(1, |s| s.parse().expect(usage));
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let mut noise = move || {
        // xorshift32: cheap, reproducible noise.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 23) as i32 - 11
    };
    let img = RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let sky = fy < 0.45;
        let base = if sky {
            [90.0 + 120.0 * fy, 140.0 + 100.0 * fy, 220.0 - 20.0 * fx]
        } else if (fx - 0.5).abs() < 0.2 && fy < 0.8 {
            [200.0 - 60.0 * fy, 160.0 + 30.0 * fx, 120.0]
        } else {
            [70.0 + 40.0 * fx, 130.0 - 40.0 * fy, 60.0]
        };
        let n = noise();
        Rgb(base.map(|c| (c as i32 + n).clamp(0, 255) as u8))
    });
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 92)
        .encode_image(&img)
        .expect("encodes");
    std::fs::write(&out, &bytes).expect("written");
    println!("{out}: {width}×{height}, {} bytes", bytes.len());
}
