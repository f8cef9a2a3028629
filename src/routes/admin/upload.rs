//! Reading a listing form that may carry photos. The forms are `multipart/form-data`;
//! a plain web form (`application/x-www-form-urlencoded`, no photos) is still read the
//! way it always was. A multipart body is read as a stream, within bounds:
//!
//! - text fields: `MAX_FORM_BYTES` in all, as for a plain form (413 beyond);
//! - a file: `MAX_FILE_BYTES`; past that its bytes are no longer kept, only counted;
//! - the whole body: `MAX_UPLOAD_BYTES`; past that nothing more is read (413);
//! - the CSRF token is checked as soon as it arrives, and must arrive before any file
//!   (browsers send fields in form order, and the token is the form's first field), so
//!   no file of a forged request is ever decoded.
//!
//! Each file is hashed when complete: a file already stored (the same bytes uploaded
//! before) needs no decoding; any other goes to the photo threads (`PhotoWorkers`), one
//! file at a time per request, before the next is read — so a request holds at most one
//! raw file in memory. Once a file has been refused, later files are read to the end
//! but not decoded: the form comes back with 422 anyway.

use actix_multipart::{Field, Multipart};
use actix_session::Session;
use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use serde::Deserialize;

use super::MAX_FORM_BYTES;
use crate::auth;
use crate::error::AppError;
use crate::models::photo::{self, MAX_PHOTOS_PER_LISTING, NewPhoto};
use crate::models::property::Property;
use crate::photos::process::{self, MAX_FILE_BYTES, PhotoError};
use crate::state::AppState;

/// The raw strings of a submitted listing form.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PropertyForm {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub price: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub csrf_token: String,
}

impl PropertyForm {
    pub fn from_property(p: &Property) -> Self {
        Self {
            title: p.title.clone(),
            description: p.description.clone(),
            price: p.price().to_string(),
            location: p.location.clone(),
            csrf_token: String::new(),
        }
    }
}

/// The most a multipart listing form may send: a full set of photos at the size limit,
/// plus the text fields and the multipart framing.
pub const MAX_UPLOAD_BYTES: usize = MAX_PHOTOS_PER_LISTING * MAX_FILE_BYTES + 1024 * 1024;

/// A submitted listing form: its text fields, and its photo fields read and checked.
#[derive(Debug, Default)]
pub struct Submission {
    pub form: PropertyForm,
    /// Photos to add, in the order they were sent.
    pub photos: Vec<NewPhoto>,
    /// `remove_photo` and `cover_photo` as sent (kept for the form on a 422).
    pub remove_raw: Vec<String>,
    pub cover_raw: Option<String>,
    /// One line per refused file or bad photo field.
    pub photo_errors: Vec<String>,
}

impl Submission {
    /// The `remove_photo` ids (the bad ones are in `photo_errors`).
    pub fn remove_ids(&self) -> Vec<i64> {
        self.remove_raw
            .iter()
            .filter_map(|r| crate::domain::parse_id(r))
            .collect()
    }

    pub fn cover_id(&self) -> Option<i64> {
        self.cover_raw.as_deref().and_then(crate::domain::parse_id)
    }

    fn check_ids(&mut self) {
        for raw in self.remove_raw.iter().chain(self.cover_raw.as_ref()) {
            if crate::domain::parse_id(raw).is_none() {
                self.photo_errors
                    .push(format!("“{}” is not a photo id", shorten(raw)));
            }
        }
    }
}

/// Reads the listing form of this request, checking its CSRF token. Files are decoded
/// only when `process_files` (false while PostgreSQL is down: the form comes back
/// anyway, and a decode would be wasted).
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    session: &Session,
    state: &AppState,
    process_files: bool,
) -> Result<Submission, actix_web::Error> {
    let multipart = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !multipart {
        // A plain web form (no photos), with the config and answers it always had.
        let mut payload: Payload = payload.into_inner();
        let form = web::Form::<PropertyForm>::from_request(req, &mut payload).await?;
        let form = form.into_inner();
        auth::check_csrf(session, &form.csrf_token)?;
        return Ok(Submission {
            form,
            ..Submission::default()
        });
    }
    let mut parts = Multipart::new(req.headers(), payload.into_inner());
    let mut reader = Reader {
        sub: Submission::default(),
        session,
        state,
        process_files,
        csrf_checked: false,
        text_bytes: 0,
        body_bytes: 0,
        files: 0,
    };
    while let Some(field) = parts.next().await {
        let field = field.map_err(|e| AppError::BadForm(format!("multipart: {e}")))?;
        reader.field(field).await?;
    }
    let mut sub = reader.sub;
    auth::check_csrf(session, &sub.form.csrf_token)?;
    sub.check_ids();
    Ok(sub)
}

struct Reader<'a> {
    sub: Submission,
    session: &'a Session,
    state: &'a AppState,
    process_files: bool,
    csrf_checked: bool,
    text_bytes: usize,
    body_bytes: usize,
    files: usize,
}

impl Reader<'_> {
    async fn field(&mut self, mut field: Field) -> Result<(), AppError> {
        let name = field.name().unwrap_or_default().to_string();
        if name == "photos" {
            return self.file(field).await;
        }
        let mut value = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| AppError::BadForm(format!("multipart: {e}")))?;
            self.count(chunk.len())?;
            self.text_bytes += chunk.len();
            if self.text_bytes > MAX_FORM_BYTES {
                return Err(AppError::PayloadTooLarge);
            }
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value)
            .map_err(|_| AppError::BadForm(format!("field `{name}` is not UTF-8 text")))?;
        let form = &mut self.sub.form;
        let slot = match name.as_str() {
            "title" => &mut form.title,
            "description" => &mut form.description,
            "price" => &mut form.price,
            "location" => &mut form.location,
            "csrf_token" => {
                if self.csrf_checked {
                    return Err(AppError::BadForm("duplicate field `csrf_token`".into()));
                }
                auth::check_csrf(self.session, &value)?;
                self.csrf_checked = true;
                form.csrf_token = value;
                return Ok(());
            }
            "remove_photo" => {
                self.sub.remove_raw.push(value);
                return Ok(());
            }
            "cover_photo" => {
                if self.sub.cover_raw.replace(value).is_some() {
                    return Err(AppError::BadForm("duplicate field `cover_photo`".into()));
                }
                return Ok(());
            }
            // Unknown fields are ignored, as in a plain form.
            _ => return Ok(()),
        };
        if !slot.is_empty() {
            return Err(AppError::BadForm(format!("duplicate field `{name}`")));
        }
        *slot = value;
        Ok(())
    }

    /// Counts body bytes against `MAX_UPLOAD_BYTES`.
    fn count(&mut self, n: usize) -> Result<(), AppError> {
        self.body_bytes += n;
        if self.body_bytes > MAX_UPLOAD_BYTES {
            log::warn!("refused a listing form of more than {MAX_UPLOAD_BYTES} bytes");
            return Err(AppError::PayloadTooLarge);
        }
        Ok(())
    }

    async fn file(&mut self, mut field: Field) -> Result<(), AppError> {
        let file_name = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(shorten)
            .unwrap_or_default();
        let label = if file_name.is_empty() {
            "a file".to_string()
        } else {
            format!("“{file_name}”")
        };
        let mut bytes = Vec::new();
        let mut too_large = false;
        let mut seen = 0usize;
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| AppError::BadForm(format!("multipart: {e}")))?;
            self.count(chunk.len())?;
            if seen == 0 && !chunk.is_empty() && !self.csrf_checked {
                // A file before the token: a forged or malformed form. Nothing decoded.
                log::warn!("refused a listing form with a file before its CSRF token");
                return Err(AppError::Forbidden);
            }
            seen += chunk.len();
            if too_large {
                continue;
            }
            if bytes.len() + chunk.len() > MAX_FILE_BYTES {
                // Stop keeping it; the rest is only counted.
                too_large = true;
                bytes = Vec::new();
                continue;
            }
            bytes.extend_from_slice(&chunk);
        }
        // No file chosen: the browser sends an empty part.
        if seen == 0 {
            return Ok(());
        }
        self.files += 1;
        if self.files > MAX_PHOTOS_PER_LISTING {
            if self.files == MAX_PHOTOS_PER_LISTING + 1 {
                self.sub.photo_errors.push(format!(
                    "At most {MAX_PHOTOS_PER_LISTING} photos a listing: {label} is one too many."
                ));
            }
            return Ok(());
        }
        if too_large {
            self.refuse(PhotoError::TooLarge(label));
            return Ok(());
        }
        if process::sniff(&bytes).is_none() {
            self.refuse(PhotoError::NotAnImage(label));
            return Ok(());
        }
        if !self.sub.photo_errors.is_empty() || !self.process_files {
            return Ok(());
        }
        let photo = self.decode(label, bytes).await?;
        match photo {
            Ok(photo) => self.sub.photos.push(photo),
            Err(e) => self.refuse(e),
        }
        Ok(())
    }

    fn refuse(&mut self, e: PhotoError) {
        self.sub.photo_errors.push(capitalised(&e.to_string()));
    }

    /// The stored photo with the same bytes, or the file decoded and re-encoded on a
    /// photo thread.
    async fn decode(
        &self,
        label: String,
        bytes: Vec<u8>,
    ) -> Result<Result<NewPhoto, PhotoError>, AppError> {
        let hash = process::content_hash(&bytes);
        let known = hash.clone();
        // If PostgreSQL cannot say, decode anyway: the write that follows will find out
        // (and the form then comes back with its values, as for any write).
        let stored = crate::db::run(&self.state.db, move |conn| Ok(photo::exists(conn, &known)?))
            .await
            .unwrap_or_else(|e| {
                log::warn!("could not look up an uploaded photo's hash: {e}");
                false
            });
        if stored {
            return Ok(Ok(NewPhoto::Stored(hash)));
        }
        let started = std::time::Instant::now();
        let processed = self
            .state
            .photos
            .workers
            .run(move || process::process(&label, &bytes))
            .await
            .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
        log::info!("photo re-encoded in {:?}", started.elapsed());
        Ok(processed.map(NewPhoto::Encoded))
    }
}

/// At most 80 characters of a client-given name, for messages.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

pub fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
