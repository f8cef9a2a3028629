//! View models: what templates and JSON show of a property, preformatted (templates
//! have no custom filters, and JSON prices are decimal strings). Nothing here depends
//! on the time of rendering: a page is cached for minutes, so it states dates, never
//! "listed 2 minutes ago" (the browser writes that, see `static/js/relative-time.js`).

use std::fmt;

use askama::filters::HtmlSafe;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::domain::Money;
use crate::models::photo::ListingPhoto;
use crate::models::property::Property;

/// A property as the HTML pages show it: text borrowed from the row; everything
/// derived is a small `Display` value written straight into the page, so building a
/// view allocates only its excerpt. The derived values are marked `HtmlSafe` (digits,
/// fixed words and punctuation), so askama does not run them through the escaper.
pub struct PropertyView<'a> {
    pub id: i64,
    pub title: &'a str,
    pub description: &'a str,
    pub excerpt: String,
    pub price: Money,
    pub location: &'a str,
    pub created_at: Rfc3339,
    /// The date shown; a cached page must not say "2 minutes ago" for 15 minutes, so
    /// the relative form is left to the browser (`static/js/relative-time.js`).
    pub created_date: ShortDate,
    /// Which of the stylesheet's `HUES` picture colours (`.hue-N`): a class, not an
    /// inline style, so the Content-Security-Policy can refuse inline styles.
    pub hue: u32,
    pub url: PropertyUrl,
    /// Its photos, cover first (empty: the placeholder is shown).
    pub photos: &'a [ListingPhoto],
}

/// How many `.hue-N` classes `static/css/site.css` defines.
const HUES: u64 = 24;

impl<'a> PropertyView<'a> {
    pub fn new(p: &'a Property, photos: &'a [ListingPhoto]) -> Self {
        Self {
            id: p.id,
            title: &p.title,
            description: &p.description,
            excerpt: excerpt(&p.description, 160),
            price: p.price().display(),
            location: &p.location,
            created_at: Rfc3339(p.created_at),
            created_date: ShortDate(p.created_at),
            hue: (p.id.unsigned_abs().wrapping_mul(7) % HUES) as u32,
            url: PropertyUrl(p.id),
            photos,
        }
    }

    /// The cover photo, if it has photos.
    pub fn cover(&self) -> Option<&'a ListingPhoto> {
        self.photos.first()
    }
}

impl HtmlSafe for Money {}

/// What `DateTime::to_rfc3339` gives (`2026-03-07T09:05:00.123456+00:00`; fractions of a
/// second as 0, 3, 6 or 9 digits).
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub DateTime<Utc>);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )?;
        match at.nanosecond() {
            0 => {}
            n if n % 1_000_000 == 0 => write!(f, ".{:03}", n / 1_000_000)?,
            n if n % 1_000 == 0 => write!(f, ".{:06}", n / 1_000)?,
            n => write!(f, ".{n:09}")?,
        }
        f.write_str("+00:00")
    }
}

impl HtmlSafe for Rfc3339 {}

/// `7 Mar 2026` (what `%-d %b %Y` gives).
#[derive(Clone, Copy, Debug)]
pub struct ShortDate(pub DateTime<Utc>);

impl fmt::Display for ShortDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let at = self.0;
        write!(
            f,
            "{} {} {}",
            at.day(),
            MONTHS[at.month0() as usize],
            at.year()
        )
    }
}

impl HtmlSafe for ShortDate {}

/// `/properties/42/`.
#[derive(Clone, Copy, Debug)]
pub struct PropertyUrl(pub i64);

impl fmt::Display for PropertyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/properties/{}/", self.0)
    }
}

impl HtmlSafe for PropertyUrl {}

/// A property as the JSON API shows it.
#[derive(Serialize)]
pub struct PropertyJson {
    pub id: i64,
    pub title: String,
    pub description: String,
    /// Decimal string with two places, e.g. `"1250.00"` (never a float).
    pub price: String,
    pub location: String,
    /// RFC 3339.
    pub created_at: String,
    /// The cover first; each in its page size (≤ 1600 px wide).
    pub photos: Vec<PhotoJson>,
}

/// A photo in the JSON API: its page size.
#[derive(Serialize)]
pub struct PhotoJson {
    pub url: String,
    pub width: i32,
    pub height: i32,
}

impl PropertyJson {
    pub fn new(p: &Property, photos: &[ListingPhoto]) -> Self {
        Self {
            id: p.id,
            title: p.title.clone(),
            description: p.description.clone(),
            price: p.price().to_string(),
            location: p.location.clone(),
            created_at: p
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            photos: photos
                .iter()
                .map(|ph| PhotoJson {
                    url: ph.page_url(),
                    width: ph.page_width,
                    height: ph.page_height,
                })
                .collect(),
        }
    }
}

/// The first `max` characters (runs of whitespace counted as one space), cut at a word
/// boundary, with an ellipsis when cut. Reads no further into `text` than it needs; an
/// ASCII text (the usual case) is collapsed in one pass over its bytes.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(text.len()) + 4);
    let cut = if text.is_ascii() {
        collapse_ascii(text, max, &mut out)
    } else {
        collapse_chars(text, max, &mut out)
    };
    if !cut {
        return out;
    }
    let end = match out.rfind(' ') {
        Some(i) if i > max / 2 => i,
        _ => out.len(),
    };
    out.truncate(end);
    let kept = out.trim_end_matches([',', '.', ';', ':']).len();
    out.truncate(kept);
    out.push('…');
    out
}

/// Appends the words of `text` joined by single spaces, up to `max` characters; `true`
/// when something was left out. For ASCII text, where a character is a byte and
/// whitespace is exactly what `char::is_whitespace` says of ASCII: one pass over the
/// bytes, stopping at `max`.
fn collapse_ascii(text: &str, max: usize, out: &mut String) -> bool {
    let bytes = text.as_bytes();
    let head = &bytes[..bytes.len().min(max)];
    if is_collapsed(head) {
        // Nothing to collapse in what is kept (the usual prose): copy it.
        out.push_str(&text[..head.len()]);
        return bytes[head.len()..]
            .iter()
            .any(|b| !matches!(b, b' ' | b'\t'..=b'\r'));
    }
    let mut kept: Vec<u8> = Vec::with_capacity(max.min(text.len()));
    let mut space_pending = false;
    let mut cut = false;
    for &b in text.as_bytes() {
        if matches!(b, b' ' | b'\t'..=b'\r') {
            space_pending = !kept.is_empty();
            continue;
        }
        if kept.len() == max {
            cut = true;
            break;
        }
        if space_pending {
            kept.push(b' ');
            space_pending = false;
            if kept.len() == max {
                cut = true;
                break;
            }
        }
        kept.push(b);
    }
    // ASCII in, ASCII out: this cannot fail.
    out.push_str(std::str::from_utf8(&kept).unwrap_or_default());
    cut
}

/// Whether collapsing whitespace leaves `head` as it is: words separated by single
/// spaces, none before the first or after the last.
fn is_collapsed(head: &[u8]) -> bool {
    let mut after_space = true;
    for &b in head {
        match b {
            b' ' if after_space => return false,
            b' ' => after_space = true,
            b'\t'..=b'\r' => return false,
            _ => after_space = false,
        }
    }
    !after_space
}

/// `collapse_ascii` for any text.
fn collapse_chars(text: &str, max: usize, out: &mut String) -> bool {
    let mut chars = 0;
    for word in text.split_whitespace() {
        let needed = word.chars().count() + usize::from(chars > 0);
        if chars + needed > max {
            if chars < max {
                if chars > 0 {
                    out.push(' ');
                    chars += 1;
                }
                out.extend(word.chars().take(max - chars));
            }
            return true;
        }
        if chars > 0 {
            out.push(' ');
        }
        out.push_str(word);
        chars += needed;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_descriptions_are_cut_at_a_word() {
        assert_eq!(excerpt("short one", 160), "short one");
        let long = "word ".repeat(100);
        let e = excerpt(&long, 20);
        assert!(e.ends_with('…') && e.chars().count() <= 21, "{e}");
    }

    /// The definition `excerpt` must agree with: collapse all whitespace, then cut.
    fn excerpt_by_definition(text: &str, max: usize) -> String {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.chars().count() <= max {
            return text;
        }
        let cut: String = text.chars().take(max).collect();
        let cut = match cut.rfind(' ') {
            Some(i) if i > max / 2 => &cut[..i],
            _ => &cut,
        };
        format!("{}…", cut.trim_end_matches([',', '.', ';', ':']))
    }

    #[test]
    fn the_single_pass_excerpt_agrees_with_its_definition() {
        let texts = [
            "",
            "   ",
            "one",
            "  spaced\t\n out   words  here ",
            "Sunny flat, close to the sea. Garden; parking: yes.",
            "tab\tvertical\u{0B}tab\u{0C}feed\r\ncr  lf and\u{A0}no-break\u{2003}em space",
            "a".repeat(200).as_str(),
            "ünïcödé wörds ".repeat(30).as_str(),
            "word, ".repeat(40).as_str(),
            "Plain prose with single spaces, long enough to be cut somewhere in the middle.",
            "ends at a space exactly here and then goes on",
            "trailing whitespace only  \t\n",
            "abcdefghij\u{0B}klm",
        ]
        .map(str::to_string);
        for text in &texts {
            for max in [0, 1, 5, 9, 10, 11, 20, 37, 160] {
                assert_eq!(
                    excerpt(text, max),
                    excerpt_by_definition(text, max),
                    "{text:?} at {max}"
                );
            }
        }
    }

    #[test]
    fn timestamps_are_written_as_to_rfc3339_writes_them() {
        let base = DateTime::from_timestamp(1_798_675_200, 0).unwrap();
        for nanos in [0, 123_000_000, 123_456_000, 123_456_789, 1_000] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            assert_eq!(Rfc3339(at).to_string(), at.to_rfc3339());
        }
    }

    #[test]
    fn short_dates_match_the_strftime_form() {
        for ts in [0, 951_782_400, 1_700_000_000, 1_798_675_200] {
            let at = DateTime::from_timestamp(ts, 0).unwrap();
            assert_eq!(
                ShortDate(at).to_string(),
                at.format("%-d %b %Y").to_string()
            );
        }
    }
}
