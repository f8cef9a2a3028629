//! Turning an uploaded file into the two JPEGs a listing shows: recognise the format by
//! its bytes, decode under limits (pixels and allocation, so a decompression bomb is
//! refused before it costs memory), apply the EXIF orientation, and re-encode a card
//! size and a page size. Re-encoding writes pixels only, so EXIF (GPS), XMP, ICC and
//! comments never reach a visitor. CPU-heavy: run it on `PhotoWorkers`, never on a
//! request worker.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use sha2::{Digest, Sha256};

/// The largest file accepted, in bytes (enforced while the upload streams in).
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// The most pixels an image may decode to.
pub const MAX_PIXELS: u64 = 40_000_000;
/// The most bytes a decoder may allocate: one 40-megapixel RGBA8 frame. A 16-bit or
/// animated file needing more is refused as too large.
pub const MAX_DECODE_ALLOC: u64 = MAX_PIXELS * 4;
/// The widest card (list pages) and page (detail page) sizes.
pub const CARD_WIDTH: u32 = 480;
pub const PAGE_WIDTH: u32 = 1600;
/// Tall images are bounded too (at four times the width), so a 1 × 40,000 strip does not
/// become a 40,000-pixel-high "page size".
const MAX_ASPECT: u32 = 4;
const CARD_QUALITY: u8 = 78;
const PAGE_QUALITY: u8 = 82;

/// Why a file was refused: shown to the admin next to the photos field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    #[error("{0} is not a JPEG, PNG or WebP image")]
    NotAnImage(String),
    #[error("{0} is larger than 10 MB")]
    TooLarge(String),
    #[error("{0} has more than 40 megapixels")]
    TooManyPixels(String),
    #[error("{0} could not be read as an image (damaged or truncated?)")]
    Unreadable(String),
}

/// One re-encoded JPEG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// An accepted upload: its content hash (SHA-256 of the file as uploaded, lowercase hex)
/// and its two sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Processed {
    pub hash: String,
    pub card: Encoded,
    pub page: Encoded,
}

/// The content hash of an uploaded file: SHA-256, lowercase hex (64 characters).
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}

/// The format, from the file's first bytes (its "magic"), never from its name or the
/// type the client claimed; only JPEG, PNG and WebP are accepted.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

/// Decodes `bytes` (named `name` in messages) and re-encodes its card and page sizes.
pub fn process(name: &str, bytes: &[u8]) -> Result<Processed, PhotoError> {
    let format = sniff(bytes).ok_or_else(|| PhotoError::NotAnImage(name.into()))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(PhotoError::TooLarge(name.into()));
    }
    let unreadable = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => PhotoError::TooManyPixels(name.into()),
        _ => PhotoError::Unreadable(name.into()),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PhotoError::TooManyPixels(name.into()));
    }
    if width == 0 || height == 0 {
        return Err(PhotoError::Unreadable(name.into()));
    }
    // A missing or malformed orientation tag means "as stored".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    let page = shrink(image, PAGE_WIDTH, orientation);
    let page_jpeg = encode(&page, PAGE_QUALITY)?;
    // A picture no wider than a card is its own card: one size, one URL, the same bytes.
    let card = if page.width() > CARD_WIDTH {
        let card = shrink(
            DynamicImage::ImageRgb8(page),
            CARD_WIDTH,
            Orientation::NoTransforms,
        );
        encode(&card, CARD_QUALITY)?
    } else {
        page_jpeg.clone()
    };
    Ok(Processed {
        hash: content_hash(bytes),
        card,
        page: page_jpeg,
    })
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    // The sides alone are bounded by the pixel count; their product is checked against
    // MAX_PIXELS once the header is read, before any pixel is decoded.
    limits.max_image_width = Some(MAX_PIXELS as u32);
    limits.max_image_height = Some(MAX_PIXELS as u32);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits
}

/// `image` scaled down (never up) to at most `max_width` wide and `MAX_ASPECT` times that
/// high *as displayed*, then turned upright (orientation applied last, on the small
/// image, so a rotation never copies the full-size frame), as opaque RGB (transparent
/// areas on white).
fn shrink(image: DynamicImage, max_width: u32, orientation: Orientation) -> RgbImage {
    let swapped = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (max_w, max_h) = if swapped {
        (max_width * MAX_ASPECT, max_width)
    } else {
        (max_width, max_width * MAX_ASPECT)
    };
    let image = if image.width() > max_w || image.height() > max_h {
        // Box-filter averaging over each target pixel's area: sharp enough for photos
        // shrunk this far, and it works in the image's own pixel type (no f32 copy of a
        // 12-megapixel frame).
        image.thumbnail(max_w, max_h)
    } else {
        image
    };
    let mut upright = DynamicImage::ImageRgb8(opaque_rgb(image));
    upright.apply_orientation(orientation);
    upright.into_rgb8()
}

/// RGB, with any transparency composited onto white (a dropped alpha channel would turn
/// transparent areas black or show junk colours).
fn opaque_rgb(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(px[3]);
        for c in 0..3 {
            out[c] = ((u32::from(px[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    rgb
}

fn encode(image: &RgbImage, quality: u8) -> Result<Encoded, PhotoError> {
    let mut bytes = Vec::with_capacity(64 * 1024);
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(image)
        .map_err(|e| PhotoError::Unreadable(format!("re-encoding failed: {e}")))?;
    Ok(Encoded {
        bytes,
        width: image.width(),
        height: image.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = ImageBuffer::from_fn(width, height, |x, y| {
            Rgba([
                (x % 256) as u8,
                (y % 256) as u8,
                90,
                if x < 4 { 0 } else { 255 },
            ])
        });
        let mut out = Vec::new();
        DynamicImage::ImageRgba8(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn formats_are_recognised_by_their_bytes_only() {
        assert_eq!(sniff(&png(2, 2)), Some(ImageFormat::Png));
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::WebP));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(sniff(b"<svg"), None);
    }

    #[test]
    fn a_large_image_gets_a_card_and_a_page_size_as_jpegs() {
        let processed = process("a.png", &png(2000, 1000)).unwrap();
        assert_eq!((processed.page.width, processed.page.height), (1600, 800));
        assert_eq!((processed.card.width, processed.card.height), (480, 240));
        assert!(processed.page.bytes.starts_with(&[0xFF, 0xD8]));
        assert_eq!(processed.hash.len(), 64);
    }

    #[test]
    fn a_small_image_is_never_scaled_up() {
        let processed = process("a.png", &png(300, 200)).unwrap();
        assert_eq!((processed.page.width, processed.page.height), (300, 200));
        assert_eq!(processed.card, processed.page);
    }

    #[test]
    fn extreme_aspect_ratios_are_bounded_and_never_zero_sized() {
        let wide = process("wide.png", &png(20_000, 3)).unwrap();
        assert_eq!((wide.page.width, wide.card.width), (1600, 480));
        assert!(wide.page.height >= 1 && wide.card.height >= 1);
        let tall = process("tall.png", &png(3, 20_000)).unwrap();
        assert_eq!(tall.page.height, PAGE_WIDTH * MAX_ASPECT);
        assert!(tall.page.width >= 1);
    }

    #[test]
    fn transparency_becomes_white() {
        let processed = process("a.png", &png(40, 10)).unwrap();
        let back = image::load_from_memory(&processed.page.bytes)
            .unwrap()
            .into_rgb8();
        let Rgb([r, g, b]) = *back.get_pixel(0, 5);
        assert!(r > 230 && g > 230 && b > 230, "{r} {g} {b}");
    }

    #[test]
    fn the_same_bytes_have_the_same_hash() {
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
        assert_ne!(content_hash(b"abc"), content_hash(b"abd"));
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
