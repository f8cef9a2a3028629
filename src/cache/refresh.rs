//! The one refresh machine, used by the page cache and the query cache alike: how a
//! key is answered from Redis, refreshed, shared and stored.
//!
//! - a current, fresh entry answers (`Hit`);
//! - a current entry past its TTL (within grace): one caller, of any instance, takes the
//!   refresh lock, looks again (the lock may have just been released by a refresh) and
//!   rebuilds; the others answer with the expired entry meanwhile (`Stale`);
//! - no usable entry: callers of this instance that miss the same key under the same
//!   version share one build (single-flight); the leader looks again first, since a
//!   flight that ended a moment ago may have stored it;
//! - a build that finds its source unavailable (PostgreSQL down) while an expired entry
//!   exists is answered with that entry (`Stale`, stale-if-error);
//! - when Redis cannot be used, the build runs without the cache (`Bypass`).
//!
//! Every build is tagged with the version (the values of the tokens its entry depends
//! on) read *before* it (see the module docs of `cache`): the lookup's, or the one read
//! by the look-again just before building.

use std::sync::Arc;

use super::metrics::{Layer, Outcome};
use super::{Cache, Entry, Freshness, Slot, Version};

/// What a build produced: `O` is the caller's own result (a response, a value).
pub enum Built<O> {
    /// Built for the cache; `Arc<Entry>` is shared with callers waiting on this build
    /// (stored in Redis unless Redis failed meanwhile).
    Stored(O, Arc<Entry>),
    /// Not for the cache (an error page, a response that sets a cookie…).
    NotStored(O),
    /// Built from data past its TTL (PostgreSQL down): sent, counted stale, not stored.
    FromStaleData(O),
    /// The source is unavailable: an expired entry answers instead, if there is one.
    Unavailable(O),
}

impl<O> Built<O> {
    fn entry(&self) -> Option<Arc<Entry>> {
        match self {
            Self::Stored(_, entry) => Some(entry.clone()),
            _ => None,
        }
    }
}

/// How a key was answered; `V` is an entry's value as the layer reads it.
pub enum Fetched<V, O> {
    /// From an entry: fresh (`Hit`), or expired within grace (`Stale`).
    Cached(V, Outcome),
    /// A hit answered from memory, with no command to Redis.
    Memory(V),
    /// By this caller's build (`Miss`, `Stale` when built from stale data, or `Bypass`).
    Built(O, Outcome),
    /// The build found its source unavailable: answered from an expired entry instead.
    StaleInstead(V, O),
}

/// One key, one layer: the parameters of a fetch.
pub struct Spec<'a, D> {
    pub slot: Slot<'a>,
    /// An entry's value, or `None` when the entry cannot be used (a query-cache entry
    /// that does not decode): then it counts as missing.
    pub read: D,
}

/// Answers `spec.slot.key` (see the module docs). `build` gets the version to store its
/// entry under, or `None` when Redis cannot be used (build, but do not store).
pub async fn fetch<V, O, D, B, Fut>(cache: &Cache, spec: Spec<'_, D>, build: B) -> Fetched<V, O>
where
    D: Fn(&Arc<Entry>) -> Option<V>,
    B: FnOnce(Option<Version>) -> Fut,
    Fut: Future<Output = Built<O>>,
{
    let lookup = match cache.lookup(&spec.slot).await {
        Ok(lookup) => lookup,
        Err(_) => {
            let output = match build(None).await {
                Built::Stored(o, _)
                | Built::NotStored(o)
                | Built::FromStaleData(o)
                | Built::Unavailable(o) => o,
            };
            cache.metrics().lookup(spec.slot.layer, Outcome::Bypass);
            return Fetched::Built(output, Outcome::Bypass);
        }
    };
    let memory = lookup.from_memory();
    let entry = lookup
        .entry()
        .and_then(|e| Some((cache.freshness(e, spec.slot.ttl), (spec.read)(e)?)));
    match entry {
        Some((Freshness::Fresh, value)) => {
            cache.metrics().lookup(spec.slot.layer, Outcome::Hit);
            if memory {
                Fetched::Memory(value)
            } else {
                Fetched::Cached(value, Outcome::Hit)
            }
        }
        // Boxed, so that the future of a hit stays small (the page cache moves it into
        // place for every request).
        Some((Freshness::Expired, stale)) => {
            Box::pin(refresh(cache, &spec, lookup.into_version(), stale, build)).await
        }
        None => Box::pin(miss(cache, &spec, lookup.into_version(), build)).await,
    }
}

/// An expired entry: refresh it under the lock, or answer with it.
async fn refresh<V, O, D, B, Fut>(
    cache: &Cache,
    spec: &Spec<'_, D>,
    version: Version,
    stale: V,
    build: B,
) -> Fetched<V, O>
where
    D: Fn(&Arc<Entry>) -> Option<V>,
    B: FnOnce(Option<Version>) -> Fut,
    Fut: Future<Output = Built<O>>,
{
    if !cache.try_refresh_lock(spec.slot.key).await {
        cache.metrics().lookup(spec.slot.layer, Outcome::Stale);
        return Fetched::Cached(stale, Outcome::Stale);
    }
    let fetched = match look_again(cache, spec).await {
        Ok((Some(fresh), _)) => {
            cache.metrics().lookup(spec.slot.layer, Outcome::Hit);
            Fetched::Cached(fresh, Outcome::Hit)
        }
        again => {
            let version = again.map_or(version, |(_, newer)| newer);
            settle(
                cache,
                spec.slot.layer,
                run_build(build, version).await,
                Some(stale),
            )
        }
    };
    cache.release_refresh_lock(spec.slot.key).await;
    fetched
}

/// No usable entry: one build per key and version in this instance.
async fn miss<V, O, D, B, Fut>(
    cache: &Cache,
    spec: &Spec<'_, D>,
    version: Version,
    build: B,
) -> Fetched<V, O>
where
    D: Fn(&Arc<Entry>) -> Option<V>,
    B: FnOnce(Option<Version>) -> Fut,
    Fut: Future<Output = Built<O>>,
{
    // The version is part of the flight's name: a caller that read a newer token (a
    // write was acknowledged meanwhile) must not take a build that may predate it.
    let flight = format!("{}\n{}", version.flight_name(), spec.slot.key);
    let mut build = Some(build);
    let mut leader = None;
    let (shared, _role) = cache
        .flights()
        .run(&flight, || async {
            // Our own closure runs at most once, so the build is still ours here.
            let build = build.take()?;
            let version = match look_again_entry(cache, spec).await {
                Ok((Some((entry, value)), _)) => {
                    cache.metrics().lookup(spec.slot.layer, Outcome::Hit);
                    leader = Some(Fetched::Cached(value, Outcome::Hit));
                    return Some(entry);
                }
                // Read before the build's database read: a valid tag for what it loads.
                Ok((None, newer)) => newer,
                Err(_) => version.clone(),
            };
            let built = run_build(build, version).await;
            let entry = built.entry();
            leader = Some(settle(cache, spec.slot.layer, built, None));
            entry
        })
        .await;
    if let Some(fetched) = leader {
        return fetched;
    }
    // Another caller built it while this one waited: its entry, if the layer can read it.
    if let Some(value) = shared.as_ref().and_then(|entry| (spec.read)(entry)) {
        cache.metrics().lookup(spec.slot.layer, Outcome::Hit);
        return Fetched::Cached(value, Outcome::Hit);
    }
    match build {
        // Its build was not for the cache (an error, say): build for this caller.
        Some(build) => settle(
            cache,
            spec.slot.layer,
            run_build(build, version).await,
            None,
        ),
        None => unreachable!("a caller that did not lead still holds its build"),
    }
}

/// Runs a build under `version`, inside the source scope its tokens require
/// (`source.rs`): its database reads go to a server that has replayed every write
/// those tokens carry.
fn run_build<O, B, Fut>(build: B, version: Version) -> impl Future<Output = Built<O>>
where
    B: FnOnce(Option<Version>) -> Fut,
    Fut: Future<Output = Built<O>>,
{
    super::source::scope(version.position(), build(Some(version)))
}

/// Looks the key up once more: the value of its fresh, readable entry if one was stored
/// meanwhile, and the version current now.
async fn look_again<V, D: Fn(&Arc<Entry>) -> Option<V>>(
    cache: &Cache,
    spec: &Spec<'_, D>,
) -> Result<(Option<V>, Version), super::CacheUnavailable> {
    let (found, version) = look_again_entry(cache, spec).await?;
    Ok((found.map(|(_, value)| value), version))
}

/// `look_again`, with the entry too (to share it with waiting callers).
async fn look_again_entry<V, D: Fn(&Arc<Entry>) -> Option<V>>(
    cache: &Cache,
    spec: &Spec<'_, D>,
) -> Result<(Option<(Arc<Entry>, V)>, Version), super::CacheUnavailable> {
    let again = cache.lookup(&spec.slot).await?;
    let fresh = again
        .entry()
        .filter(|e| cache.freshness(e, spec.slot.ttl) == Freshness::Fresh)
        .and_then(|e| {
            let value = (spec.read)(e)?;
            Some((e.clone(), value))
        });
    Ok((fresh, again.into_version()))
}

/// Counts and answers a build; with `stale`, an unavailable source is answered from it.
fn settle<V, O>(cache: &Cache, layer: Layer, built: Built<O>, stale: Option<V>) -> Fetched<V, O> {
    let (fetched, outcome) = match (built, stale) {
        (Built::Unavailable(o), Some(value)) => (Fetched::StaleInstead(value, o), Outcome::Stale),
        (Built::FromStaleData(o), _) => (Fetched::Built(o, Outcome::Stale), Outcome::Stale),
        (Built::Stored(o, _) | Built::NotStored(o) | Built::Unavailable(o), _) => {
            (Fetched::Built(o, Outcome::Miss), Outcome::Miss)
        }
    };
    cache.metrics().lookup(layer, outcome);
    fetched
}
