//! The byte layout of one cached entry (a page body or a query result):
//! `v1\n<generation>\n<stored_at_ms>\n<etag>\n<content_type>\n<body>`.
//! The header is tiny and parsed without copying the body.

use actix_web::web::Bytes;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub generation: String,
    /// Unix time in milliseconds when the entry was built.
    pub stored_at_ms: i64,
    pub etag: String,
    pub content_type: String,
    pub body: Bytes,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 96);
        out.extend_from_slice(b"v1\n");
        for part in [
            self.generation.as_str(),
            &self.stored_at_ms.to_string(),
            self.etag.as_str(),
            self.content_type.as_str(),
        ] {
            out.extend_from_slice(part.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for anything that is not a well-formed entry (treated as a miss).
    pub fn decode(raw: Vec<u8>) -> Option<Self> {
        let raw = Bytes::from(raw);
        let mut fields = [""; 5];
        let mut pos = 0;
        for field in &mut fields {
            let end = raw[pos..].iter().position(|&b| b == b'\n')? + pos;
            *field = std::str::from_utf8(&raw[pos..end]).ok()?;
            pos = end + 1;
        }
        if fields[0] != "v1" {
            return None;
        }
        Some(Self {
            generation: fields[1].to_string(),
            stored_at_ms: fields[2].parse().ok()?,
            etag: fields[3].to_string(),
            content_type: fields[4].to_string(),
            body: raw.slice(pos..),
        })
    }

    pub fn age_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.stored_at_ms).max(0)
    }
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

    #[test]
    fn an_entry_survives_encoding_including_newlines_in_the_body() {
        let entry = Entry {
            generation: "abc".into(),
            stored_at_ms: 1_700_000_000_000,
            etag: etag_for(b"x\ny"),
            content_type: "text/html; charset=utf-8".into(),
            body: Bytes::from_static(b"<p>\nhello\n</p>"),
        };
        assert_eq!(Entry::decode(entry.encode()), Some(entry));
    }

    #[test]
    fn garbage_is_not_an_entry() {
        assert_eq!(Entry::decode(b"hello".to_vec()), None);
        assert_eq!(Entry::decode(b"v2\na\n1\ne\nt\nbody".to_vec()), None);
    }

    #[test]
    fn different_bodies_get_different_etags() {
        assert_ne!(etag_for(b"a"), etag_for(b"b"));
        assert_eq!(etag_for(b"a"), etag_for(b"a"));
    }
}
