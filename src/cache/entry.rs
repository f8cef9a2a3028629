//! The byte layout of one cached entry (a page body or a query result), with the body
//! stored pre-compressed too, so a hit never compresses:
//! `v2\n<version>\n<stored_at_ms>\n<etag>\n<content_type>\n<n> <g> <b>\n` followed by
//! the identity body (n bytes), its gzip form (g bytes, 0 = none) and its brotli form.
//! The header is tiny and parsed without copying the bodies.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;

use super::version::Version;

/// Bodies smaller than this are not worth compressing.
const COMPRESS_MIN_BYTES: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The token values it was built under (`Cache::lookup`'s version).
    pub version: Version,
    /// Unix time in milliseconds when the entry was built.
    pub stored_at_ms: i64,
    /// The strong ETag of the identity body; encoded variants add a suffix.
    pub etag: String,
    pub content_type: String,
    pub body: Bytes,
    pub gzip: Option<Bytes>,
    pub brotli: Option<Bytes>,
    /// The body decoded (a query-cache value), once: the in-process tier hands the same
    /// entry to many requests, and decoding rows on every use cost more than rendering.
    decoded: Decoded,
    /// `etag` and `content_type` as header values, made once, not per hit.
    pub etag_header: Option<HeaderValue>,
    pub content_type_header: Option<HeaderValue>,
}

/// A value decoded from an entry's body; not part of the entry's identity.
#[derive(Clone, Default)]
struct Decoded(OnceLock<Arc<dyn Any + Send + Sync>>);

impl fmt::Debug for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Decoded(..)"
        } else {
            "Decoded(-)"
        })
    }
}

impl PartialEq for Decoded {
    /// Derived from the body, so it never tells two entries apart.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Decoded {}

/// A content coding the client accepts and we store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    pub fn header(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some("gzip"),
            Self::Brotli => Some("br"),
        }
    }

    /// The best coding an `Accept-Encoding` value allows: brotli, then gzip, then none.
    /// A coding named with `q=0` is refused even when `*` would allow it (RFC 9110
    /// §12.5.3); `*` stands only for codings the header does not name.
    pub fn negotiate(accept_encoding: Option<&str>) -> Self {
        let Some(accept) = accept_encoding else {
            return Self::Identity;
        };
        // The q-value the header gives `name` (1 when it has none), if it names it.
        let q_of = |name: &str| {
            accept.split(',').find_map(|part| {
                let mut pieces = part.split(';');
                let token = pieces.next().unwrap_or("").trim();
                token.eq_ignore_ascii_case(name).then(|| {
                    pieces
                        .find_map(|p| p.trim().strip_prefix("q="))
                        .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0))
                })
            })
        };
        let accepts = |name: &str| q_of(name).or_else(|| q_of("*")).is_some_and(|q| q > 0.0);
        if accepts("br") {
            Self::Brotli
        } else if accepts("gzip") {
            Self::Gzip
        } else {
            Self::Identity
        }
    }
}

impl Entry {
    /// Builds an entry; with `compress`, also the gzip and brotli forms of a body that
    /// is text worth compressing.
    pub fn build(version: &Version, content_type: &str, body: Bytes, compress: bool) -> Self {
        let compressible = compress
            && body.len() >= COMPRESS_MIN_BYTES
            && (content_type.starts_with("text/") || content_type.contains("json"));
        let (gzip, brotli) = if compressible {
            (gzip(&body), brotli(&body))
        } else {
            (None, None)
        };
        let etag = etag_for(&body);
        Self {
            version: version.clone(),
            stored_at_ms: now_ms(),
            etag_header: HeaderValue::from_str(&etag).ok(),
            content_type_header: HeaderValue::from_str(content_type).ok(),
            etag,
            content_type: content_type.to_string(),
            body,
            gzip,
            brotli,
            decoded: Decoded::default(),
        }
    }

    /// The body decoded by `decode` as a `T`, decoded on first use and then shared by
    /// every holder of this entry. `None` when the body does not decode.
    pub fn decoded<T: Any + Send + Sync>(
        &self,
        decode: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Option<Arc<T>> {
        if let Some(value) = self.decoded.0.get()
            && let Ok(value) = value.clone().downcast::<T>()
        {
            return Some(value);
        }
        let value = Arc::new(decode(&self.body)?);
        let _ = self.decoded.0.set(value.clone());
        Some(value)
    }

    /// Records `value` as this entry's decoded body (its builder has it already), so
    /// that no holder decodes it again.
    pub fn remember_decoded<T: Any + Send + Sync>(&self, value: Arc<T>) {
        let _ = self.decoded.0.set(value);
    }

    /// The body and ETag for a coding (identity when that coding is not stored).
    pub fn variant(&self, coding: Coding) -> (Coding, &Bytes, Cow<'_, str>) {
        let tagged =
            |suffix: &str| Cow::Owned(format!("{}.{suffix}\"", self.etag.trim_end_matches('"')));
        match (coding, &self.gzip, &self.brotli) {
            (Coding::Brotli, _, Some(brotli)) => (Coding::Brotli, brotli, tagged("br")),
            (Coding::Gzip, Some(gzip), _) => (Coding::Gzip, gzip, tagged("gz")),
            _ => (Coding::Identity, &self.body, Cow::Borrowed(&self.etag)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        let mut out =
            Vec::with_capacity(self.body.len() + len(&self.gzip) + len(&self.brotli) + 128);
        out.extend_from_slice(b"v2\n");
        for part in [
            self.version.as_str(),
            &self.stored_at_ms.to_string(),
            self.etag.as_str(),
            self.content_type.as_str(),
            &format!(
                "{} {} {}",
                self.body.len(),
                len(&self.gzip),
                len(&self.brotli)
            ),
        ] {
            out.extend_from_slice(part.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        for variant in [&self.gzip, &self.brotli].into_iter().flatten() {
            out.extend_from_slice(variant);
        }
        out
    }

    /// `None` for anything that is not a well-formed entry (treated as a miss).
    pub fn decode(raw: Vec<u8>) -> Option<Self> {
        let raw = Bytes::from(raw);
        let mut fields = [""; 6];
        let mut pos = 0;
        for field in &mut fields {
            let end = raw[pos..].iter().position(|&b| b == b'\n')? + pos;
            *field = std::str::from_utf8(&raw[pos..end]).ok()?;
            pos = end + 1;
        }
        if fields[0] != "v2" {
            return None;
        }
        let mut lens = fields[5].split(' ').map(|n| n.parse::<usize>().ok());
        let (n, g, b) = (lens.next()??, lens.next()??, lens.next()??);
        if pos.checked_add(n)?.checked_add(g)?.checked_add(b)? != raw.len() {
            return None;
        }
        let piece = |from: usize, len: usize| (len > 0).then(|| raw.slice(from..from + len));
        Some(Self {
            version: Version::parse(fields[1]),
            stored_at_ms: fields[2].parse().ok()?,
            etag: fields[3].to_string(),
            content_type: fields[4].to_string(),
            etag_header: HeaderValue::from_str(fields[3]).ok(),
            content_type_header: HeaderValue::from_str(fields[4]).ok(),
            body: raw.slice(pos..pos + n),
            gzip: piece(pos + n, g),
            brotli: piece(pos + n + g, b),
            decoded: Decoded::default(),
        })
    }

    pub fn age_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.stored_at_ms).max(0)
    }
}

fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::new(6),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

fn brotli(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len() / 4);
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin: 22,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
    Some(Bytes::from(out))
}

/// A strong ETag from the body: identical bodies get identical tags on every
/// instance, because the tag is computed once and stored with the entry.
pub fn etag_for(body: &[u8]) -> String {
    // FNV-1a 64 twice with different offsets: cheap, stable across builds and hosts.
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for &byte in body {
        a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{a:016x}{b:016x}-{}\"", body.len())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::version::Version;

    #[test]
    fn an_entry_survives_encoding_including_newlines_in_the_body() {
        let small = Entry::build(
            &Version::parse("abc"),
            "text/html; charset=utf-8",
            Bytes::from_static(b"<p>\nhi\n</p>"),
            true,
        );
        assert_eq!(small.gzip, None, "too small to compress");
        assert_eq!(Entry::decode(small.encode()), Some(small));
        let page = "<li>listing\n</li>".repeat(200);
        let large = Entry::build(
            &Version::parse("abc"),
            "text/html; charset=utf-8",
            Bytes::from(page),
            true,
        );
        assert!(large.gzip.is_some() && large.brotli.is_some());
        assert_eq!(Entry::decode(large.encode()), Some(large));
    }

    #[test]
    fn an_entry_is_decoded_once_and_shared_by_its_holders() {
        let entry = Arc::new(Entry::build(
            &Version::parse("g"),
            "application/json",
            Bytes::from("[1,2,3]"),
            false,
        ));
        let decodes = std::cell::Cell::new(0);
        let decode = |body: &[u8]| {
            decodes.set(decodes.get() + 1);
            serde_json::from_slice::<Vec<u32>>(body).ok()
        };
        let first = entry.decoded(decode).unwrap();
        let holder = entry.clone();
        let second = holder.decoded(decode).unwrap();
        assert_eq!(*first, vec![1, 2, 3]);
        assert!(Arc::ptr_eq(&first, &second), "the same decoded value");
        assert_eq!(decodes.get(), 1);
        let unreadable = Entry::build(
            &Version::parse("g"),
            "application/json",
            Bytes::from("{"),
            false,
        );
        assert_eq!(unreadable.decoded(decode), None);
    }

    #[test]
    fn stored_variants_decompress_to_the_body() {
        use std::io::Read;
        let page = "<li>listing\n</li>".repeat(200);
        let entry = Entry::build(
            &Version::parse("g"),
            "application/json",
            Bytes::from(page.clone()),
            true,
        );
        let plain = Entry::build(
            &Version::parse("g"),
            "application/json",
            Bytes::from(page.clone()),
            false,
        );
        assert_eq!(plain.gzip, None, "query results are not compressed");
        let (coding, gz, gz_tag) = entry.variant(Coding::Gzip);
        assert_eq!(coding, Coding::Gzip);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, page);
        let (_, br, br_tag) = entry.variant(Coding::Brotli);
        let mut out = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut out).unwrap();
        assert_eq!(out, page.as_bytes());
        assert!(gz_tag != br_tag && gz_tag != entry.etag && gz_tag.ends_with(".gz\""));
    }

    #[test]
    fn the_best_accepted_coding_is_chosen() {
        assert_eq!(Coding::negotiate(None), Coding::Identity);
        assert_eq!(Coding::negotiate(Some("gzip, deflate, br")), Coding::Brotli);
        assert_eq!(Coding::negotiate(Some("gzip")), Coding::Gzip);
        assert_eq!(Coding::negotiate(Some("br;q=0, gzip")), Coding::Gzip);
        assert_eq!(Coding::negotiate(Some("br;q=0, *")), Coding::Gzip);
        assert_eq!(Coding::negotiate(Some("*")), Coding::Brotli);
        assert_eq!(Coding::negotiate(Some("*;q=0, gzip")), Coding::Gzip);
        assert_eq!(
            Coding::negotiate(Some("gzip;q=0, br;q=0, *")),
            Coding::Identity
        );
        assert_eq!(Coding::negotiate(Some("identity")), Coding::Identity);
    }

    #[test]
    fn garbage_is_not_an_entry() {
        assert_eq!(Entry::decode(b"hello".to_vec()), None);
        assert_eq!(Entry::decode(b"v1\na\n1\ne\nt\nbody".to_vec()), None);
        assert_eq!(
            Entry::decode(b"v2\na\n1\ne\nt\n9 0 0\nshort".to_vec()),
            None
        );
    }

    #[test]
    fn different_bodies_get_different_etags() {
        assert_ne!(etag_for(b"a"), etag_for(b"b"));
        assert_eq!(etag_for(b"a"), etag_for(b"a"));
    }
}
