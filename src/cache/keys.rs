//! Every Redis key the application writes, in one place. Each starts with
//! `PREFIX:` so several apps (or test runs) can share one Redis, and `cache clear`
//! can find exactly this app's keys with `SCAN MATCH PREFIX:*`.

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    generation: String,
    sync: String,
    log: String,
}

/// The hash tag of the keys that must share one slot of a Redis Cluster: the tokens, the
/// instances' leases and the invalidation log (`PREFIX:{sync}:…`), so that a write's
/// replacements and its log entry are one atomic script, and a read of tokens sees them
/// as of one point of the log (see the module docs of `cache`).
const SYNC: &str = "{sync}";

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            generation: format!("{prefix}:{SYNC}:generation"),
            sync: format!("{prefix}:{SYNC}"),
            log: format!("{prefix}:{SYNC}:log"),
            prefix,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The generation: a token every entry depends on, replaced only when an instance
    /// cannot tell which tokens a write it could not report replaced (see "Faults" in the
    /// module docs of `cache`).
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// The hash of the instances' leases and acknowledgments and the log's numbering
    /// (`lease.rs`).
    pub fn sync(&self) -> &str {
        &self.sync
    }

    /// The invalidation log: a stream beside `sync`.
    pub fn log(&self) -> &str {
        &self.log
    }

    /// A dependency token (see the module docs of `cache`): a random value, replaced by
    /// every write that may change what the entries depending on it show. In the slot of
    /// `sync`.
    pub fn token(&self, name: &str) -> String {
        format!("{}:{SYNC}:tok:{name}", self.prefix)
    }

    /// How many entries were stored under a token's current value (see `Cache::put`).
    pub fn token_count(&self, name: &str) -> String {
        format!("{}:{SYNC}:tok:{name}:stored", self.prefix)
    }

    /// An entry the app keeps under a name of its own (`CacheConfig::named_entries`).
    pub fn named(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
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

    /// `SCAN MATCH` patterns of the cache layers' own keys (prefixes cannot hold glob
    /// characters: `config::validate_prefix`). Other keys under the prefix are not cache
    /// and are left alone by `cache clear`.
    pub fn cache_patterns(&self) -> [String; 4] {
        [
            format!("{}:page:*", self.prefix),
            format!("{}:query:*", self.prefix),
            format!("{}:lock:*", self.prefix),
            format!("{}:{SYNC}:tok:*", self.prefix),
        ]
    }

    /// What a key of this app is, from its name: the layer it belongs to (`page`,
    /// `lock`, `query`, `token`: the generation and dependency tokens, `lease`: the
    /// leases' hash and the log), or `other`.
    pub fn kind(&self, key: &str) -> &'static str {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(':'))
        else {
            return "other";
        };
        let mut segments = rest.split(':');
        match (segments.next().unwrap_or_default(), segments.next()) {
            ("page", _) => "page",
            ("lock", _) => "lock",
            ("query", _) => "query",
            (SYNC, Some("generation" | "tok")) => "token",
            (SYNC, None | Some("log")) => "lease",
            _ => "other",
        }
    }

    /// `SCAN MATCH` patterns of the cache entries the dashboard lists — pages and query
    /// result pages; `all_properties` is one known key, read directly. Tokens, locks and
    /// sign-in counters are not entries: matched out by Redis, any number of them cannot
    /// use up the listing's budget (a visitor can create counters at will).
    pub fn entry_patterns(&self) -> [String; 2] {
        [
            format!("{}:page:*", self.prefix),
            format!("{}:query:*", self.prefix),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_after_their_cache_layer() {
        assert_eq!(
            Keys::new("app").kind("app:page:/properties/?page=2"),
            "page"
        );
        assert_eq!(
            Keys::new("app").kind("app:lock:app:page:/properties/"),
            "lock"
        );
        assert_eq!(
            Keys::new("app").kind("app:query:sort=price_asc&page=1"),
            "query"
        );
        let keys = Keys::new("app");
        assert_eq!(keys.kind(keys.generation()), "token");
        assert_eq!(keys.kind(&keys.token("listing:7")), "token");
        assert_eq!(keys.kind(keys.sync()), "lease");
        assert_eq!(keys.kind(keys.log()), "lease");
        assert_eq!(Keys::new("app").kind("app:something_new"), "other");
        assert_eq!(Keys::new("app").kind("apple:page:/"), "other");
    }
}
