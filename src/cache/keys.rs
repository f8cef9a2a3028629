//! Every Redis key the application writes, in one place. Each starts with
//! `PREFIX:` so several apps (or test runs) can share one Redis, and `cache clear`
//! can find exactly this app's keys with `SCAN MATCH PREFIX:*`.

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

    /// Sign-in attempt counter for one client address and user name (any case). The
    /// name is kept as a SHA-256 digest: whatever a visitor types, the key has a fixed
    /// size and holds nothing of it.
    pub fn login_failures(&self, client: std::net::IpAddr, username: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(username.to_lowercase().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:login_failures:{client}:{hex}", self.prefix)
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

/// Which query parameters a cacheable path keeps in its key, or `None` when the path
/// is not page-cached at all (admin, health, metrics, static files…).
pub fn cacheable_params(path: &str) -> Option<&'static [&'static str]> {
    match path {
        "/properties/" | "/api/properties/" => Some(LIST_PARAMS),
        _ => {
            let id = path
                .strip_prefix("/properties/")
                .or_else(|| path.strip_prefix("/api/properties/"))?
                .strip_suffix('/')?;
            (!id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()))
                .then_some(&[][..])
        }
    }
}

/// The page-cache identity of a request: its path plus the known, non-empty query
/// parameters sorted by name (first occurrence wins, as in the handlers). Unknown
/// parameters are dropped, so junk in a URL cannot grow the keyspace.
pub fn normalised_url(path: &str, query: &str) -> Option<String> {
    let known = cacheable_params(path)?;
    if known.is_empty() {
        return Some(path.to_string());
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut kept: Vec<(&str, &str)> = Vec::new();
    for name in known {
        if let Some((_, v)) = pairs.iter().find(|(k, _)| k == name)
            && !v.trim().is_empty()
            && !is_default(name, v.trim())
        {
            kept.push((name, v.trim()));
        }
    }
    if kept.is_empty() {
        return Some(path.to_string());
    }
    let query = serde_urlencoded::to_string(&kept).ok()?;
    Some(format!("{path}?{query}"))
}

/// Defaults spelled out (`sort=newest`, `page=1`, as the search form submits them)
/// name the same page as leaving them out.
fn is_default(name: &str, value: &str) -> bool {
    matches!((name, value), ("sort", "newest") | ("page", "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_counter_key_has_a_fixed_size_and_does_not_hold_the_name() {
        let keys = Keys::new("app");
        let client = "2001:db8::1".parse().unwrap();
        let short = keys.login_failures(client, "Bob");
        let long = keys.login_failures(client, &"x".repeat(60_000));
        assert_eq!(
            short,
            keys.login_failures(client, "bOB"),
            "case does not matter"
        );
        assert_eq!(short.len(), long.len());
        assert!(!short.contains("Bob") && !short.contains("bob"));
        assert!(short.starts_with("app:login_failures:2001:db8::1:"));
    }

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
