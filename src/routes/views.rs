//! View models: what templates and JSON show of a property, preformatted (templates
//! have no custom filters, and JSON prices are decimal strings).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::models::property::Property;

/// A property as the HTML pages show it.
pub struct PropertyView {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub excerpt: String,
    pub price: String,
    pub location: String,
    pub created_at: String,
    pub created_date: String,
    pub listed_ago: String,
    pub hue: u32,
    pub url: String,
}

impl PropertyView {
    pub fn new(p: &Property, now: DateTime<Utc>) -> Self {
        Self {
            id: p.id,
            title: p.title.clone(),
            description: p.description.clone(),
            excerpt: excerpt(&p.description, 160),
            price: p.price().display(),
            location: p.location.clone(),
            created_at: p.created_at.to_rfc3339(),
            created_date: p.created_at.format("%-d %b %Y").to_string(),
            listed_ago: time_ago(p.created_at, now),
            hue: (p.id.unsigned_abs().wrapping_mul(47) % 360) as u32,
            url: format!("/properties/{}/", p.id),
        }
    }
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

/// The first `max` characters, cut at a word boundary, with an ellipsis when cut.
pub fn excerpt(text: &str, max: usize) -> String {
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

    #[test]
    fn ages_read_naturally() {
        let now = Utc::now();
        assert_eq!(time_ago(now, now), "just now");
        assert_eq!(time_ago(now - Duration::minutes(1), now), "1 minute ago");
        assert_eq!(time_ago(now - Duration::days(3), now), "3 days ago");
    }
}
