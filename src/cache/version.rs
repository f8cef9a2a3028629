//! An entry's version: the values of the tokens it depends on — the generation, then
//! its dependency tokens, in order — read before its inputs (see the module docs of
//! `cache`). Built by a lookup, compared with the tokens' current values, stored with
//! the entry, and parsed back from it: all here.
//!
//! A token found missing has no value to record. A lookup must not create it (a 404 for
//! any id one cares to type would add a key), so its place holds a *marker*: a fresh
//! random value no stored entry carries, with the token's key. `settle` turns such a
//! version into the one an entry is stored under — the markers as the tokens' values —
//! and the tokens to create with them (`SET NX`, with the entry).
//!
//! A token's value may carry a *position* in the source's write log (PostgreSQL: an LSN)
//! after `@`: every write that replaced it committed at or before that position (see
//! "Read replicas" in the module docs of `cache`). `position` is the least position a
//! replica must have replayed for a build under this version to read it; `None` when a
//! value carries none (or is a marker): then only the primary will do.
//!
//! Stored form: the values, space-separated (a marker as `~KEY=MARKER` before settling).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(String);

impl Version {
    /// The version of token values read in order; `None` for a token found missing, which
    /// `marker` names (its key and a fresh marker).
    pub fn of<'a>(values: impl IntoIterator<Item = Result<&'a str, (&'a str, String)>>) -> Self {
        let mut version = String::new();
        for value in values {
            if !version.is_empty() {
                version.push(' ');
            }
            match value {
                Ok(value) => version.push_str(value),
                Err((key, marker)) => {
                    version.push('~');
                    version.push_str(key);
                    version.push('=');
                    version.push_str(&marker);
                }
            }
        }
        Self(version)
    }

    /// A version read back from a stored entry.
    pub fn parse(stored: &str) -> Self {
        Self(stored.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is exactly `values`, in order (a missing value, or a marker, matches
    /// nothing).
    pub fn matches<'a>(&self, values: impl Iterator<Item = Option<&'a [u8]>>) -> bool {
        let mut parts = self.0.split(' ');
        for value in values {
            match (value, parts.next()) {
                (Some(value), Some(part)) if value == part.as_bytes() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }

    /// Whether a token was found missing (its place holds a marker).
    pub fn has_markers(&self) -> bool {
        self.0.contains('~')
    }

    /// The least position of the source a build under this version must read at: the
    /// highest position among the values, or `None` if any value carries none.
    pub fn position(&self) -> Option<u64> {
        self.0.split(' ').try_fold(0, |highest, part| {
            let position = part.rsplit_once('@')?.1.parse::<u64>().ok()?;
            Some(position.max(highest))
        })
    }

    /// The version an entry built under this one is stored under (each marker as its
    /// token's value, carrying `position` if given), and the tokens that must be created
    /// with those values.
    pub fn settle(&self, position: Option<u64>) -> (Version, Vec<(String, String)>) {
        if !self.has_markers() {
            return (self.clone(), Vec::new());
        }
        let mut missing = Vec::new();
        let settled: Vec<String> = self
            .0
            .split(' ')
            .map(|part| match marker(part) {
                Some((key, marker)) => {
                    let value = with_position(marker, position);
                    missing.push((key.to_string(), value.clone()));
                    value
                }
                None => part.to_string(),
            })
            .collect();
        (Self(settled.join(" ")), missing)
    }

    /// The name of a build under this version, for sharing it (single-flight): markers
    /// are random per lookup, so they are left out — callers that all found a token
    /// missing may share one build, as safely as callers with equal versions, since a
    /// write acknowledged before a caller's lookup would have set the token it found
    /// missing.
    pub fn flight_name(&self) -> String {
        self.0
            .split(' ')
            .map(|part| marker(part).map_or(part, |(key, _)| key))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token value: `random`, carrying `position` (`random@position`) if given.
pub fn with_position(random: &str, position: Option<u64>) -> String {
    match position {
        Some(position) => format!("{random}@{position}"),
        None => random.to_string(),
    }
}

/// A marker's token key and value, if `part` is one.
fn marker(part: &str) -> Option<(&str, &str)> {
    part.strip_prefix('~')?.split_once('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<'a>(parts: &'a [Option<&'a str>]) -> impl Iterator<Item = Option<&'a [u8]>> {
        parts.iter().map(|p| p.map(str::as_bytes))
    }

    #[test]
    fn a_version_matches_exactly_its_values_in_order() {
        let v = Version::of([Ok("g1"), Ok("t1")]);
        assert!(v.matches(bytes(&[Some("g1"), Some("t1")])));
        assert!(!v.matches(bytes(&[Some("g1"), Some("t2")])));
        assert!(!v.matches(bytes(&[Some("t1"), Some("g1")])));
        assert!(!v.matches(bytes(&[Some("g1")])));
        assert!(!v.matches(bytes(&[Some("g1"), Some("t1"), Some("x")])));
        assert!(!v.matches(bytes(&[Some("g1"), None])));
        assert_eq!(Version::parse(v.as_str()), v);
    }

    #[test]
    fn a_marker_matches_nothing_until_settled() {
        let v = Version::of([Ok("g1"), Err(("app:tok:{x}", "m1".to_string()))]);
        assert!(!v.matches(bytes(&[Some("g1"), Some("m1")])));
        let (stored, create) = v.settle(None);
        assert_eq!(stored, Version::of([Ok("g1"), Ok("m1")]));
        assert_eq!(create, [("app:tok:{x}".to_string(), "m1".to_string())]);
        assert!(stored.matches(bytes(&[Some("g1"), Some("m1")])));
    }

    #[test]
    fn the_position_is_the_highest_carried_and_none_if_any_value_carries_none() {
        assert_eq!(
            Version::of([Ok("g@7"), Ok("t@12"), Ok("u@9")]).position(),
            Some(12)
        );
        // Numbers, not strings: "9" > "12" as text.
        assert_eq!(Version::of([Ok("g@12"), Ok("t@9")]).position(), Some(12));
        assert_eq!(Version::of([Ok("g@7"), Ok("t")]).position(), None);
        assert_eq!(Version::of([Ok("g@7"), Ok("t@x")]).position(), None);
        let marked = Version::of([Ok("g@7"), Err(("k", "m1".to_string()))]);
        assert!(marked.has_markers());
        assert_eq!(marked.position(), None, "a missing token means the primary");
        let (stored, create) = marked.settle(Some(30));
        assert_eq!(stored, Version::of([Ok("g@7"), Ok("m1@30")]));
        assert_eq!(create, [("k".to_string(), "m1@30".to_string())]);
        assert_eq!(stored.position(), Some(30));
        assert_eq!(
            Version::of([Ok(u64::MAX.to_string().as_str())]).position(),
            None,
            "a value without @ carries no position"
        );
        assert_eq!(
            Version::of([Ok(format!("r@{}", u64::MAX).as_str())]).position(),
            Some(u64::MAX)
        );
    }

    #[test]
    fn builds_for_a_missing_token_share_a_flight_whatever_their_markers() {
        let a = Version::of([Ok("g1"), Err(("k", "m1".to_string()))]);
        let b = Version::of([Ok("g1"), Err(("k", "m2".to_string()))]);
        assert_ne!(a, b);
        assert_eq!(a.flight_name(), b.flight_name());
        assert_ne!(
            a.flight_name(),
            Version::of([Ok("g1"), Ok("m1")]).flight_name()
        );
    }
}
