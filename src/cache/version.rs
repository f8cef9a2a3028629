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

    /// The version an entry built under this one is stored under (each marker as its
    /// token's value), and the tokens that must be created with their markers.
    pub fn settle(&self) -> (Version, Vec<(String, String)>) {
        if !self.0.contains('~') {
            return (self.clone(), Vec::new());
        }
        let mut missing = Vec::new();
        let settled: Vec<&str> = self
            .0
            .split(' ')
            .map(|part| match marker(part) {
                Some((key, marker)) => {
                    missing.push((key.to_string(), marker.to_string()));
                    marker
                }
                None => part,
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
        let (stored, create) = v.settle();
        assert_eq!(stored, Version::of([Ok("g1"), Ok("m1")]));
        assert_eq!(create, [("app:tok:{x}".to_string(), "m1".to_string())]);
        assert!(stored.matches(bytes(&[Some("g1"), Some("m1")])));
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
