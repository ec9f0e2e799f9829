//! Thumbnails: an uploaded image decoded under limits and re-encoded at two sizes, so nothing
//! of the original file (EXIF, GPS, comments, a script appended to a GIF) reaches a viewer.

use std::io::{BufReader, Cursor};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{DynamicImage, GenericImageView, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Most pixels an image may have to be decoded.
pub const MAX_PIXELS: u64 = 40_000_000;
/// Most bytes a decoder may allocate (a 40-megapixel RGBA image takes 160 MB).
pub const MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// The longest side of the two thumbnails.
pub const SMALL: u32 = 320;
pub const LARGE: u32 = 1280;

/// An image's size as shown (after its EXIF orientation) and its two thumbnails.
pub struct Made {
    pub width: u32,
    pub height: u32,
    pub small: Vec<u8>,
    pub large: Vec<u8>,
    /// `image/jpeg`, or `image/png` for an image with transparency.
    pub content_type: &'static str,
}

/// Decodes the image at `path` (of `format`, sniffed) and makes its thumbnails; an error
/// says why it could not (too many pixels, too much memory, not a valid image). An animated
/// image gives its first frame.
pub fn make(path: &Path, format: ImageFormat) -> Result<Made, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut reader = ImageReader::with_format(BufReader::new(file), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "{w} × {h} is more than {} megapixels",
            MAX_PIXELS / 1_000_000
        ));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    let (width, height) = img.dimensions();
    let alpha = img.color().has_alpha();
    let large = fit(&img, LARGE);
    let small = fit(large.as_ref().unwrap_or(&img), SMALL);
    let encode = |img: &DynamicImage| encode(img, alpha);
    Ok(Made {
        width,
        height,
        large: encode(large.as_ref().unwrap_or(&img))?,
        small: encode(small.as_ref().or(large.as_ref()).unwrap_or(&img))?,
        content_type: if alpha { "image/png" } else { "image/jpeg" },
    })
}

/// `img` scaled down so its longest side is `px`; `None` if it is that small already.
fn fit(img: &DynamicImage, px: u32) -> Option<DynamicImage> {
    let (w, h) = img.dimensions();
    (w.max(h) > px).then(|| img.thumbnail(px, px))
}

fn encode(img: &DynamicImage, alpha: bool) -> Result<Vec<u8>, String> {
    let mut out = Cursor::new(Vec::new());
    let result = if alpha {
        DynamicImage::ImageRgba8(img.to_rgba8()).write_with_encoder(PngEncoder::new(&mut out))
    } else {
        DynamicImage::ImageRgb8(img.to_rgb8())
            .write_with_encoder(JpegEncoder::new_with_quality(&mut out, 82))
    };
    result.map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    fn write(img: DynamicImage, format: ImageFormat) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        img.write_to(&mut file, format).unwrap();
        file
    }

    #[test]
    fn a_photo_gets_two_jpeg_thumbnails_within_their_sizes() {
        let img = ImageBuffer::from_fn(2000, 1000, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, 7])
        });
        let file = write(DynamicImage::ImageRgb8(img), ImageFormat::Png);
        let made = make(file.path(), ImageFormat::Png).unwrap();
        assert_eq!((made.width, made.height), (2000, 1000));
        assert_eq!(made.content_type, "image/jpeg");
        let small = image::load_from_memory(&made.small).unwrap();
        let large = image::load_from_memory(&made.large).unwrap();
        assert_eq!(small.dimensions(), (320, 160));
        assert_eq!(large.dimensions(), (1280, 640));
    }

    #[test]
    fn a_small_transparent_image_keeps_its_size_and_transparency() {
        let img = ImageBuffer::from_fn(40, 30, |x, _| Rgba([255, 0, 0, (x * 6) as u8]));
        let file = write(DynamicImage::ImageRgba8(img), ImageFormat::Png);
        let made = make(file.path(), ImageFormat::Png).unwrap();
        assert_eq!(made.content_type, "image/png");
        let small = image::load_from_memory(&made.small).unwrap();
        assert_eq!(small.dimensions(), (40, 30));
        assert!(small.color().has_alpha());
    }

    #[test]
    fn an_image_claiming_too_many_pixels_is_refused_before_it_is_decoded() {
        // A valid PNG header claiming 50,000 × 50,000 pixels (2.5 gigapixels), and no data.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // An IDAT of an empty zlib stream, and the end.
        for (kind, data) in [
            (&b"IDAT"[..], &b"\x78\x9c\x03\x00\x00\x00\x00\x01"[..]),
            (b"IEND", b""),
        ] {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &png).unwrap();
        let err = make(file.path(), ImageFormat::Png).err().unwrap();
        assert!(err.contains("megapixels") || err.contains("limit"), "{err}");
    }

    #[test]
    fn an_animated_gif_gives_its_first_frame_as_a_still_thumbnail() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame, RgbaImage};
        let mut file = tempfile::NamedTempFile::new().unwrap();
        {
            let mut encoder = GifEncoder::new(&mut file);
            for color in [[200, 0, 0, 255], [0, 0, 200, 255]] {
                let frame = Frame::from_parts(
                    RgbaImage::from_pixel(600, 400, image::Rgba(color)),
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                );
                encoder.encode_frame(frame).unwrap();
            }
        }
        let made = make(file.path(), ImageFormat::Gif).unwrap();
        assert_eq!((made.width, made.height), (600, 400));
        // One still image each (a JPEG or PNG has no frames), of the first frame's colour.
        let small = image::load_from_memory(&made.small).unwrap().to_rgba8();
        assert_eq!(small.dimensions(), (320, 213));
        let px = small.get_pixel(160, 100);
        assert!(px[0] > 150 && px[2] < 60, "{px:?}");
    }

    #[test]
    fn garbage_is_not_an_image() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        assert!(make(file.path(), ImageFormat::Png).is_err());
    }

    /// CRC-32 (IEEE), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    0xEDB8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
