//! View models: what templates and JSON show of a property, preformatted (templates
//! have no custom filters, and JSON prices are decimal strings).

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::models::property::Property;

/// A property as the HTML pages show it: text borrowed from the row, the rest
/// preformatted.
pub struct PropertyView<'a> {
    pub id: i64,
    pub title: &'a str,
    pub description: &'a str,
    pub excerpt: String,
    pub price: String,
    pub location: &'a str,
    pub created_at: String,
    pub created_date: String,
    pub listed_ago: String,
    pub hue: u32,
    pub url: String,
}

impl<'a> PropertyView<'a> {
    pub fn new(p: &'a Property, now: DateTime<Utc>) -> Self {
        Self {
            id: p.id,
            title: &p.title,
            description: &p.description,
            excerpt: excerpt(&p.description, 160),
            price: p.price().display(),
            location: &p.location,
            created_at: p.created_at.to_rfc3339(),
            created_date: short_date(p.created_at),
            listed_ago: time_ago(p.created_at, now),
            hue: (p.id.unsigned_abs().wrapping_mul(47) % 360) as u32,
            url: format!("/properties/{}/", p.id),
        }
    }
}

/// `7 Mar 2026` (what `%-d %b %Y` gives, without parsing a format string per call).
pub fn short_date(at: DateTime<Utc>) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {}",
        at.day(),
        MONTHS[at.month0() as usize],
        at.year()
    )
}

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
}

impl From<&Property> for PropertyJson {
    fn from(p: &Property) -> Self {
        Self {
            id: p.id,
            title: p.title.clone(),
            description: p.description.clone(),
            price: p.price().to_string(),
            location: p.location.clone(),
            created_at: p
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }
}

/// The first `max` characters (runs of whitespace counted as one space), cut at a word
/// boundary, with an ellipsis when cut. Reads no further into `text` than it needs.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(text.len()) + 4);
    let mut chars = 0;
    let mut cut = false;
    for word in text.split_whitespace() {
        let needed = word.chars().count() + usize::from(chars > 0);
        if chars + needed > max {
            if chars < max {
                // Fill up to `max` characters; a word boundary is chosen below.
                if chars > 0 {
                    out.push(' ');
                    chars += 1;
                }
                out.extend(word.chars().take(max - chars));
            }
            cut = true;
            break;
        }
        if chars > 0 {
            out.push(' ');
        }
        out.push_str(word);
        chars += needed;
    }
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

/// "just now", "5 minutes ago", "3 days ago", …
pub fn time_ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        0..60 => "just now".into(),
        60..3600 => plural(secs / 60, "minute"),
        3600..86_400 => plural(secs / 3600, "hour"),
        86_400..2_592_000 => plural(secs / 86_400, "day"),
        2_592_000..31_536_000 => plural(secs / 2_592_000, "month"),
        _ => plural(secs / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

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
            "a".repeat(200).as_str(),
            "ünïcödé wörds ".repeat(30).as_str(),
            "word, ".repeat(40).as_str(),
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
    fn short_dates_match_the_strftime_form() {
        for ts in [0, 951_782_400, 1_700_000_000, 1_798_675_200] {
            let at = DateTime::from_timestamp(ts, 0).unwrap();
            assert_eq!(short_date(at), at.format("%-d %b %Y").to_string());
        }
    }

    #[test]
    fn ages_read_naturally() {
        let now = Utc::now();
        assert_eq!(time_ago(now, now), "just now");
        assert_eq!(time_ago(now - Duration::minutes(1), now), "1 minute ago");
        assert_eq!(time_ago(now - Duration::days(3), now), "3 days ago");
    }
}
