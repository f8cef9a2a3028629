//! Every Redis key the application writes, in one place. Each starts with
//! `PREFIX:` so several apps (or test runs) can share one Redis, and `cache clear`
//! can find exactly this app's keys with `SCAN MATCH PREFIX:*`.

use std::borrow::Cow;

/// Query parameters of the listing routes: the only ones that form a page key.
pub const LIST_PARAMS: &[&str] = &["location", "max_price", "min_price", "page", "q", "sort"];

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    /// Built once: every hit reads it.
    generation: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            generation: format!("{prefix}:generation"),
            prefix,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The current cache generation: a random token, replaced after every write.
    /// Every cached entry carries the token it was built under (see the `cache` module docs).
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// The seed's low-level cache of every property.
    pub fn all_properties(&self) -> String {
        format!("{}:all_properties", self.prefix)
    }

    /// Whether `key` is a page-cache entry.
    pub fn is_page(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with(":page:"))
    }

    /// One cached page of a listing query (see `cache::query`).
    pub fn query(&self, query_id: &str) -> String {
        format!("{}:query:{query_id}", self.prefix)
    }

    /// A cached page, by normalised URL (see `normalised_url`).
    pub fn page(&self, normalised_url: &str) -> String {
        // Built for every request to a cacheable page: no formatting machinery.
        let mut key = String::with_capacity(self.prefix.len() + 6 + normalised_url.len());
        key.push_str(&self.prefix);
        key.push_str(":page:");
        key.push_str(normalised_url);
        key
    }

    /// The lock that lets one request refresh an expired page while others get it stale.
    pub fn refresh_lock(&self, cache_key: &str) -> String {
        format!("{}:lock:{cache_key}", self.prefix)
    }

    /// Failed sign-in counter for one client address and user name.
    pub fn login_failures(&self, client: &str, username: &str) -> String {
        format!("{}:login_failures:{client}:{username}", self.prefix)
    }

    /// `SCAN MATCH` patterns of the cache layers' own keys (prefixes cannot hold glob
    /// characters: `config::validate_prefix`). Sign-in throttling counters are not cache
    /// and are left alone by `cache clear`.
    pub fn cache_patterns(&self) -> [String; 3] {
        [
            format!("{}:page:*", self.prefix),
            format!("{}:query:*", self.prefix),
            format!("{}:lock:*", self.prefix),
        ]
    }

    /// `SCAN MATCH` pattern of every key of this app (for the dashboard's key list).
    pub fn all_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

/// A cacheable path in its one canonical spelling, and the query parameters its key
/// keeps; `None` when the path is not page-cached at all (admin, health, static
/// files…). Percent-encoded bytes are decoded as the router decodes them (an encoded
/// `/` never joins segments) and a listing id is written without leading zeros, so
/// `/api/%70roperties/0004/` is `/api/properties/4/`. An id the handler would not
/// accept (`+1`) is no cacheable path: the handler answers 404 without a database read.
pub fn cacheable_path(path: &str) -> Option<(Cow<'_, str>, &'static [&'static str])> {
    let path = if path.contains('%') {
        let mut decoded = String::with_capacity(path.len());
        for (i, segment) in path.split('/').enumerate() {
            let segment = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()?;
            if segment.contains('/') {
                return None;
            }
            if i > 0 {
                decoded.push('/');
            }
            decoded.push_str(&segment);
        }
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(path)
    };
    match path.as_ref() {
        "/properties/" | "/api/properties/" => Some((path, LIST_PARAMS)),
        p => {
            let (base, rest) = match p.strip_prefix("/api/properties/") {
                Some(rest) => ("/api/properties/", rest),
                None => ("/properties/", p.strip_prefix("/properties/")?),
            };
            let raw = rest.strip_suffix('/')?;
            let id = crate::domain::parse_id(raw)?;
            if raw.starts_with('0') || matches!(path, Cow::Owned(_)) {
                return Some((Cow::Owned(format!("{base}{id}/")), &[]));
            }
            Some((path, &[]))
        }
    }
}

/// The page-cache identity of a request: its canonical path plus the known query
/// parameters in canonical form (parsed values: `page=02` is `page=2`, `min_price=0005`
/// is `min_price=5`; empty and default values dropped), sorted by name, first
/// occurrence winning as in the handlers. Unknown parameters are dropped, so junk in a
/// URL cannot grow the keyspace, and every spelling of one page shares its key. A value
/// the handler would refuse makes the request uncacheable: it gets a 400 that reads
/// nothing from the database.
pub fn normalised_url(path: &str, query: &str) -> Option<String> {
    let (path, known) = cacheable_path(path)?;
    if known.is_empty() || query.is_empty() {
        return Some(path.into_owned());
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    let mut kept: Vec<(&str, String)> = Vec::new();
    for name in known {
        let Some((_, v)) = pairs.iter().find(|(k, _)| k == name) else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let canonical = match *name {
            "page" => match v.parse::<usize>().ok()? {
                1 => continue,
                n => n.to_string(),
            },
            "sort" => match v {
                "newest" => continue,
                "price_asc" | "price_desc" => v.to_string(),
                _ => return None,
            },
            "min_price" | "max_price" => crate::domain::Price::parse(v).ok()?.query_value(),
            _ => v.to_string(),
        };
        kept.push((name, canonical));
    }
    if kept.is_empty() {
        return Some(path.into_owned());
    }
    let query = serde_urlencoded::to_string(&kept).ok()?;
    Some(format!("{path}?{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_do_not_change_the_key() {
        assert_eq!(
            normalised_url("/properties/", "utm=1&sort=price_asc&page=2&zz=3").as_deref(),
            Some("/properties/?page=2&sort=price_asc")
        );
        assert_eq!(
            normalised_url("/properties/", "junk=1").as_deref(),
            Some("/properties/")
        );
    }

    #[test]
    fn spelled_out_defaults_are_the_same_as_absent_ones() {
        assert_eq!(
            normalised_url("/properties/", "sort=newest&page=1").as_deref(),
            Some("/properties/")
        );
    }

    #[test]
    fn empty_values_are_the_same_as_absent_ones() {
        assert_eq!(
            normalised_url("/properties/", "q=&location=&sort=price_asc").as_deref(),
            Some("/properties/?sort=price_asc")
        );
    }

    #[test]
    fn every_spelling_of_a_page_has_the_canonical_key() {
        for (spelling, canonical) in [
            ("/properties/007/", "/properties/7/"),
            ("/properties/%37/", "/properties/7/"),
            ("/api/%70roperties/%30%37/", "/api/properties/7/"),
            ("/api/%70roperties/", "/api/properties/"),
        ] {
            assert_eq!(normalised_url(spelling, "").as_deref(), Some(canonical));
        }
        assert_eq!(
            normalised_url("/properties/", "page=02&min_price=0005.0&max_price=9.50").as_deref(),
            Some("/properties/?max_price=9.5&min_price=5&page=2")
        );
        assert_eq!(
            normalised_url("/properties/", "page=01&sort=newest").as_deref(),
            Some("/properties/")
        );
    }

    #[test]
    fn a_value_the_handler_refuses_or_a_joined_segment_is_not_cached() {
        for (path, query) in [
            ("/properties/+7/", ""),
            ("/properties%2F7/", ""),
            ("/properties/%2F7/", ""),
            ("/properties/%FF/", ""),
            ("/properties/", "page=abc"),
            ("/properties/", "sort=cheapest"),
            ("/properties/", "min_price=-1"),
        ] {
            assert_eq!(normalised_url(path, query), None, "{path}?{query}");
        }
    }

    #[test]
    fn detail_pages_ignore_every_parameter_and_other_paths_are_not_cached() {
        assert_eq!(
            normalised_url("/api/properties/42/", "x=1").as_deref(),
            Some("/api/properties/42/")
        );
        assert_eq!(normalised_url("/admin/", ""), None);
        assert_eq!(normalised_url("/properties/abc/", ""), None);
        assert_eq!(normalised_url("/cache/", ""), None);
    }
}
