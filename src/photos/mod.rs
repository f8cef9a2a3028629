//! Listing photos (issue 22), the app's side: re-encoding uploads (`process`) on threads
//! of their own (`workers`), and the bounded in-process cache of `/media/` bytes
//! (`media_cache`). Rows live in `models::photo`; the upload form in
//! `routes::admin::upload`; the `/media/` route in `routes::media`.

pub mod media_cache;
pub mod process;
pub mod workers;

use media_cache::MediaCache;
use workers::PhotoWorkers;

/// What the photo routes share (one field of `AppState`).
pub struct Photos {
    pub workers: PhotoWorkers,
    pub media: MediaCache,
}

impl Photos {
    pub fn new(workers: usize, media_cache_bytes: usize) -> std::io::Result<Self> {
        Ok(Self {
            workers: PhotoWorkers::new(workers)?,
            media: MediaCache::new(media_cache_bytes),
        })
    }
}
