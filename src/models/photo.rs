//! The `photos` and `property_photos` tables. `photos` is content-addressed: one row per
//! distinct uploaded file (its SHA-256), holding the card and page JPEGs made from it once,
//! inserted with `ON CONFLICT DO NOTHING` and never updated — so the bytes behind a
//! `/media/` URL never change. `property_photos` says which listing shows which photo,
//! in which order, and which one is the cover. Photo changes are written inside the
//! listing's own transaction (see `Property::insert_with_photos`/`update_with_photos`).

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{Bytea, Integer, Text};
use serde::{Deserialize, Serialize};

use crate::photos::process::{Encoded, Processed};
use crate::schema::{photos, property_photos};

/// The most photos a listing may have.
pub const MAX_PHOTOS_PER_LISTING: usize = 12;

/// A photo as a listing shows it (and as query-cache entries hold it): no bytes, only
/// what its `<img>` and URLs need.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Serialize, Deserialize)]
pub struct ListingPhoto {
    /// The `property_photos` row (what `remove_photo` and `cover_photo` name).
    pub id: i64,
    pub property_id: i64,
    pub hash: String,
    pub cover: bool,
    pub position: i32,
    pub card_width: i32,
    pub card_height: i32,
    pub page_width: i32,
    pub page_height: i32,
}

impl ListingPhoto {
    pub fn card_url(&self) -> String {
        media_url(&self.hash, self.card_width)
    }

    pub fn page_url(&self) -> String {
        media_url(&self.hash, self.page_width)
    }
}

/// `/media/<hash>-<width>.jpg`.
pub fn media_url(hash: &str, width: i32) -> String {
    format!("/media/{hash}-{width}.jpg")
}

/// The photos of several listings, each listing's cover first, then in upload order.
pub type PhotosByListing = BTreeMap<i64, Vec<ListingPhoto>>;

/// A photo to add to a listing: freshly re-encoded, or already stored under its hash
/// (the same file uploaded before: nothing to decode or store again).
#[derive(Clone, Debug)]
pub enum NewPhoto {
    Encoded(Processed),
    Stored(String),
}

impl NewPhoto {
    pub fn hash(&self) -> &str {
        match self {
            Self::Encoded(p) => &p.hash,
            Self::Stored(hash) => hash,
        }
    }
}

/// What a form submission changes about a listing's photos.
#[derive(Clone, Debug, Default)]
pub struct PhotoChanges {
    pub add: Vec<NewPhoto>,
    /// `property_photos` ids to remove.
    pub remove: Vec<i64>,
    /// The `property_photos` id to make the cover.
    pub cover: Option<i64>,
}

impl PhotoChanges {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.cover.is_none()
    }
}

/// Why a photo change was refused (nothing written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhotoRuleError {
    #[error("a listing can have at most 12 photos ({0} would be too many)")]
    TooMany(usize),
    #[error("photo {0} is not one of this listing's photos")]
    UnknownPhoto(i64),
    #[error("the cover must be one of this listing's photos")]
    BadCover,
}

/// A transaction's error: a refused change (rolled back, nothing written) or the database's.
#[derive(Debug)]
pub enum TxError {
    Refused(PhotoRuleError),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}

#[derive(Insertable)]
#[diesel(table_name = photos)]
struct PhotoRow<'a> {
    hash: &'a str,
    card: &'a [u8],
    card_width: i32,
    card_height: i32,
    page: &'a [u8],
    page_width: i32,
    page_height: i32,
}

#[derive(Insertable)]
#[diesel(table_name = property_photos)]
pub struct NewLink<'a> {
    pub property_id: i64,
    pub photo_hash: &'a str,
    pub position: i32,
    pub cover: bool,
}

fn dim(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Stores a re-encoded photo unless a row with its hash exists (then that row is kept as
/// it is: rows are never updated).
pub fn store(conn: &mut PgConnection, p: &Processed) -> QueryResult<()> {
    let (card, page): (&Encoded, &Encoded) = (&p.card, &p.page);
    diesel::insert_into(photos::table)
        .values(PhotoRow {
            hash: &p.hash,
            card: &card.bytes,
            card_width: dim(card.width),
            card_height: dim(card.height),
            page: &page.bytes,
            page_width: dim(page.width),
            page_height: dim(page.height),
        })
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

/// Whether a photo with this hash is stored.
pub fn exists(conn: &mut PgConnection, hash: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(photos::table.find(hash))).get_result(conn)
}

/// Adds link rows.
pub fn link(conn: &mut PgConnection, links: &[NewLink<'_>]) -> QueryResult<()> {
    diesel::insert_into(property_photos::table)
        .values(links)
        .execute(conn)?;
    Ok(())
}

/// The photos of the listings `ids`, cover first (listings without photos are absent).
pub fn of_listings(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<PhotosByListing> {
    if ids.is_empty() {
        return Ok(PhotosByListing::new());
    }
    let rows: Vec<ListingPhoto> = property_photos::table
        .inner_join(photos::table)
        .filter(property_photos::property_id.eq_any(ids))
        .select((
            property_photos::id,
            property_photos::property_id,
            property_photos::photo_hash,
            property_photos::cover,
            property_photos::position,
            photos::card_width,
            photos::card_height,
            photos::page_width,
            photos::page_height,
        ))
        .order_by((
            property_photos::property_id,
            property_photos::cover.desc(),
            property_photos::position,
            property_photos::id,
        ))
        .load(conn)?;
    let mut out = PhotosByListing::new();
    for row in rows {
        out.entry(row.property_id).or_default().push(row);
    }
    Ok(out)
}

/// One listing's photos, cover first.
pub fn of_listing(conn: &mut PgConnection, id: i64) -> QueryResult<Vec<ListingPhoto>> {
    Ok(of_listings(conn, &[id])?.remove(&id).unwrap_or_default())
}

/// Applies `changes` to listing `property_id` inside the caller's transaction (which
/// holds the listing's row lock): checks every rule first against the rows as they are,
/// then removes, stores, links and sets the cover. A listing with photos always has
/// exactly one cover: the one asked for (unless it is being removed), else the one it
/// had, else its first photo.
pub fn apply(
    conn: &mut PgConnection,
    property_id: i64,
    changes: &PhotoChanges,
) -> Result<(), TxError> {
    if changes.is_empty() {
        return Ok(());
    }
    let current: Vec<(i64, i32)> = property_photos::table
        .filter(property_photos::property_id.eq(property_id))
        .select((property_photos::id, property_photos::position))
        .load(conn)?;
    let known = |id: i64| current.iter().any(|(c, _)| *c == id);
    if let Some(unknown) = changes.remove.iter().copied().find(|id| !known(*id)) {
        return Err(TxError::Refused(PhotoRuleError::UnknownPhoto(unknown)));
    }
    if changes.cover.is_some_and(|cover| !known(cover)) {
        return Err(TxError::Refused(PhotoRuleError::BadCover));
    }
    // The edit form always sends the ticked cover; when that photo is being removed,
    // the choice falls to the first photo kept (below), not to a refusal.
    let cover = changes.cover.filter(|c| !changes.remove.contains(c));
    let kept = current
        .iter()
        .filter(|(id, _)| !changes.remove.contains(id))
        .count();
    let total = kept + changes.add.len();
    if total > MAX_PHOTOS_PER_LISTING {
        return Err(TxError::Refused(PhotoRuleError::TooMany(total)));
    }
    if !changes.remove.is_empty() {
        diesel::delete(property_photos::table.filter(property_photos::id.eq_any(&changes.remove)))
            .execute(conn)?;
    }
    let next = current.iter().map(|(_, p)| *p + 1).max().unwrap_or(0);
    for photo in &changes.add {
        if let NewPhoto::Encoded(p) = photo {
            store(conn, p)?;
        }
    }
    let links: Vec<NewLink<'_>> = changes
        .add
        .iter()
        .enumerate()
        .map(|(i, photo)| NewLink {
            property_id,
            photo_hash: photo.hash(),
            position: next + i as i32,
            cover: false,
        })
        .collect();
    if !links.is_empty() {
        link(conn, &links)?;
    }
    if let Some(cover) = cover {
        diesel::update(
            property_photos::table.filter(
                property_photos::property_id
                    .eq(property_id)
                    .and(property_photos::cover),
            ),
        )
        .set(property_photos::cover.eq(false))
        .execute(conn)?;
        diesel::update(property_photos::table.find(cover))
            .set(property_photos::cover.eq(true))
            .execute(conn)?;
    }
    // No cover (none yet, or it was removed): the first photo becomes it.
    let has_cover: bool = diesel::select(diesel::dsl::exists(
        property_photos::table.filter(
            property_photos::property_id
                .eq(property_id)
                .and(property_photos::cover),
        ),
    ))
    .get_result(conn)?;
    if !has_cover {
        let first: Option<i64> = property_photos::table
            .filter(property_photos::property_id.eq(property_id))
            .order_by((property_photos::position, property_photos::id))
            .select(property_photos::id)
            .first(conn)
            .optional()?;
        if let Some(first) = first {
            diesel::update(property_photos::table.find(first))
                .set(property_photos::cover.eq(true))
                .execute(conn)?;
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Variant {
    #[diesel(sql_type = Bytea)]
    bytes: Vec<u8>,
}

/// The JPEG of photo `hash` that is `width` wide (its card or its page size); `None`
/// when no photo has that hash or neither size has that width.
pub fn variant(conn: &mut PgConnection, hash: &str, width: i32) -> QueryResult<Option<Vec<u8>>> {
    let row: Option<Variant> = diesel::sql_query(
        "SELECT CASE WHEN card_width = $2 THEN card ELSE page END AS bytes \
         FROM photos WHERE hash = $1 AND (card_width = $2 OR page_width = $2)",
    )
    .bind::<Text, _>(hash)
    .bind::<Integer, _>(width)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| r.bytes))
}

/// How many photo rows and link rows exist (for tests and `seed`'s report).
pub fn counts(conn: &mut PgConnection) -> QueryResult<(i64, i64)> {
    let photos: i64 = photos::table.count().get_result(conn)?;
    let links: i64 = property_photos::table.count().get_result(conn)?;
    Ok((photos, links))
}
