//! What an upload is, from its bytes (never from what the client says), and how its name may
//! appear in a `Content-Disposition` header.

/// The image types served inline (and thumbnailed): nothing that can carry script.
pub const INLINE: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The type of the bytes that start with `head`: a known magic number, else UTF-8 text (SVG
/// told apart, for the label), else `application/octet-stream`.
pub fn content_type(head: &[u8]) -> String {
    if head.is_empty() {
        return "application/octet-stream".into();
    }
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    if looks_like_text(head) {
        let lower = String::from_utf8_lossy(&head[..head.len().min(1024)]).to_ascii_lowercase();
        if lower.contains("<svg") {
            return "image/svg+xml".into();
        }
        return "text/plain; charset=utf-8".into();
    }
    "application/octet-stream".into()
}

/// Whether bytes of this type are shown in the browser (`inline`) rather than downloaded.
pub fn is_inline(content_type: &str) -> bool {
    INLINE.contains(&content_type)
}

/// The image format of an inline type, for decoding.
pub fn image_format(content_type: &str) -> Option<image::ImageFormat> {
    match content_type {
        "image/png" => Some(image::ImageFormat::Png),
        "image/jpeg" => Some(image::ImageFormat::Jpeg),
        "image/gif" => Some(image::ImageFormat::Gif),
        "image/webp" => Some(image::ImageFormat::WebP),
        _ => None,
    }
}

/// UTF-8 without NUL, allowing a character cut off at the end of the sample.
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

/// Most characters of a file name.
pub const MAX_FILENAME_CHARS: usize = 255;

/// Checks a file name as given (kept as given, for display): 1 to 255 characters, no NUL.
pub fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.contains('\0') {
        return Err("must not contain NUL characters");
    }
    let n = name.chars().count();
    if n == 0 || n > MAX_FILENAME_CHARS {
        return Err("must be 1 to 255 characters");
    }
    Ok(())
}

/// A name safe to offer in a header and to save under: no path (only what follows the last
/// `/` or `\`), no control characters, quotes or bidirectional overrides, not `.` or `..`;
/// "file" if nothing is left.
pub fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_control() || c == '"' || is_bidi_control(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() {
        "file".into()
    } else {
        trimmed.to_string()
    }
}

/// The characters that reorder text (so `evil\u{202E}gpj.exe` shows as `evilexe.jpg`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `Content-Disposition` for a download: `inline` or `attachment`, an ASCII `filename` and
/// the exact (safe) name as RFC 8187 `filename*`.
pub fn disposition(name: &str, inline: bool) -> String {
    let safe = safe_filename(name);
    let ascii: String = safe
        .chars()
        .map(|c| {
            if c.is_ascii() && c != '\\' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(&safe, RFC8187).to_string();
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// What RFC 8187 `attr-char` does not allow as it is.
const RFC8187: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_from_the_bytes() {
        assert_eq!(content_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(content_type(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), "image/jpeg");
        assert_eq!(content_type(b"GIF89a\x01\0\x01\0"), "image/gif");
        assert_eq!(content_type(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(content_type(b"plain words\n"), "text/plain; charset=utf-8");
        assert_eq!(
            content_type(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>x</script></svg>"),
            "image/svg+xml"
        );
        assert_eq!(content_type(b"<!DOCTYPE html><html>"), "text/html");
        assert_eq!(content_type(b""), "application/octet-stream");
        assert_eq!(
            content_type(b"\x00\x01\x02\x03"),
            "application/octet-stream"
        );
        // "é" cut in half at the end of the sample is still text.
        assert_eq!(content_type(b"caf\xc3"), "text/plain; charset=utf-8");
        for inline in INLINE {
            assert!(is_inline(inline));
        }
        assert!(!is_inline("image/svg+xml"));
        assert!(!is_inline("text/html"));
    }

    #[test]
    fn names_lose_paths_controls_quotes_and_overrides_in_headers() {
        assert_eq!(safe_filename("../../etc/passwd"), "passwd");
        assert_eq!(safe_filename("C:\\Users\\x\\a.txt"), "a.txt");
        assert_eq!(safe_filename("a\"b\r\nc.txt"), "a_b__c.txt");
        assert_eq!(safe_filename("evil\u{202E}gpj.exe"), "evil_gpj.exe");
        assert_eq!(safe_filename(".."), "file");
        assert_eq!(safe_filename("/"), "file");
        assert_eq!(safe_filename(".bashrc"), "bashrc");
        assert_eq!(
            disposition("résumé \"final\".pdf", false),
            "attachment; filename=\"r_sum_ _final_.pdf\"; \
             filename*=UTF-8''r%C3%A9sum%C3%A9%20_final_.pdf"
        );
        assert_eq!(
            disposition("cat.png", true),
            "inline; filename=\"cat.png\"; filename*=UTF-8''cat.png"
        );
        let header = disposition("x\r\nSet-Cookie: a=b", false);
        assert!(!header.contains('\r') && !header.contains('\n'));
        assert!(warp::http::HeaderValue::from_str(&header).is_ok());
    }

    #[test]
    fn names_are_checked_but_kept_as_given() {
        assert!(check_filename("../../etc/passwd").is_ok());
        assert!(check_filename("a\0b").is_err());
        assert!(check_filename("").is_err());
        assert!(check_filename(&"x".repeat(256)).is_err());
        assert!(check_filename(&"é".repeat(255)).is_ok());
    }
}
