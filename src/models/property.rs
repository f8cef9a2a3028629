//! The `properties` table: the row type, insert and update structs, and every query on
//! it. Handlers never touch `schema::properties`; they call these functions.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::photo::{self, PhotoChanges, TxError};
use crate::domain::{Description, Location, Price, Title};
use crate::schema::properties;

#[derive(Clone, Debug, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = properties)]
#[diesel(check_for_backend(Pg))]
pub struct Property {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub price: Decimal,
    pub location: String,
    pub created_at: DateTime<Utc>,
}

impl Property {
    pub fn price(&self) -> Price {
        Price::from_db(self.price)
    }
}

/// A validated listing ready to be written (insert or full update). Its fields can only
/// be built from the domain types, so whatever reaches SQL is already valid.
#[derive(Clone, Debug, Insertable, AsChangeset)]
#[diesel(table_name = properties)]
pub struct PropertyData {
    title: String,
    description: String,
    price: Decimal,
    location: String,
}

impl PropertyData {
    pub fn new(title: Title, description: Description, price: Price, location: Location) -> Self {
        Self {
            title: title.into_inner(),
            description: description.into_inner(),
            price: price.value(),
            location: location.into_inner(),
        }
    }

    pub fn title(&self) -> &str {
        &self.title
    }
}

/// Filters of the listing pages; `None` means "not filtered on".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PropertyFilter {
    pub q: Option<String>,
    pub location: Option<String>,
    pub min_price: Option<Price>,
    pub max_price: Option<Price>,
}

impl PropertyFilter {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Newest,
    PriceAsc,
    PriceDesc,
}

impl Sort {
    pub const ALL: [Sort; 3] = [Sort::Newest, Sort::PriceAsc, Sort::PriceDesc];

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "newest" => Some(Self::Newest),
            "price_asc" => Some(Self::PriceAsc),
            "price_desc" => Some(Self::PriceDesc),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Newest => "newest",
            Self::PriceAsc => "price_asc",
            Self::PriceDesc => "price_desc",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Newest => "Newest first",
            Self::PriceAsc => "Price: low to high",
            Self::PriceDesc => "Price: high to low",
        }
    }

    /// Orders positions in `rows` exactly as `Property::search` orders the rows in SQL.
    pub fn sort_positions(self, rows: &[Property], positions: &mut [usize]) {
        let key = |&i: &usize| {
            let p = &rows[i];
            std::cmp::Reverse((p.created_at, p.id))
        };
        match self {
            Self::Newest => positions.sort_by_key(key),
            Self::PriceAsc => positions.sort_by(|&a, &b| {
                rows[a]
                    .price
                    .cmp(&rows[b].price)
                    .then(key(&a).cmp(&key(&b)))
            }),
            Self::PriceDesc => positions.sort_by(|&a, &b| {
                rows[b]
                    .price
                    .cmp(&rows[a].price)
                    .then(key(&a).cmp(&key(&b)))
            }),
        }
    }
}

/// Escapes `%`, `_` and `\` so user text matches literally inside `ILIKE '%…%'`.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

type Boxed<'a> = properties::BoxedQuery<'a, Pg>;

fn filtered(filter: &PropertyFilter) -> Boxed<'static> {
    use crate::schema::properties::dsl::*;
    let mut query = properties.into_boxed();
    if let Some(q) = &filter.q {
        let pattern = like_pattern(q);
        query = query.filter(
            title
                .ilike(pattern.clone())
                .or(description.ilike(pattern.clone()))
                .or(location.ilike(pattern)),
        );
    }
    if let Some(l) = &filter.location {
        query = query.filter(location.ilike(like_pattern(l)));
    }
    if let Some(min) = filter.min_price {
        query = query.filter(price.ge(min.value()));
    }
    if let Some(max) = filter.max_price {
        query = query.filter(price.le(max.value()));
    }
    query
}

impl Property {
    pub fn find(conn: &mut PgConnection, property_id: i64) -> QueryResult<Option<Property>> {
        properties::table
            .find(property_id)
            .select(Property::as_select())
            .first(conn)
            .optional()
    }

    /// The newest `limit` properties, newest first.
    pub fn newest_first(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<Property>> {
        use crate::schema::properties::dsl::*;
        properties
            .select(Property::as_select())
            .order((created_at.desc(), id.desc()))
            .limit(limit)
            .load(conn)
    }

    /// One page of matching properties and the total number of matches.
    pub fn search(
        conn: &mut PgConnection,
        filter: &PropertyFilter,
        sort: Sort,
        limit: i64,
        offset: i64,
    ) -> QueryResult<(Vec<Property>, i64)> {
        use crate::schema::properties::dsl::*;
        let count: i64 = filtered(filter).count().get_result(conn)?;
        let query = filtered(filter).select(Property::as_select());
        let query = match sort {
            Sort::Newest => query.order((created_at.desc(), id.desc())),
            Sort::PriceAsc => query.order((price.asc(), created_at.desc(), id.desc())),
            Sort::PriceDesc => query.order((price.desc(), created_at.desc(), id.desc())),
        };
        let rows = query.limit(limit).offset(offset).load(conn)?;
        Ok((rows, count))
    }

    pub fn count(conn: &mut PgConnection) -> QueryResult<i64> {
        properties::table.count().get_result(conn)
    }

    pub fn insert(conn: &mut PgConnection, data: &PropertyData) -> QueryResult<Property> {
        diesel::insert_into(properties::table)
            .values(data)
            .returning(Property::as_returning())
            .get_result(conn)
    }

    pub fn insert_many(
        conn: &mut PgConnection,
        data: &[PropertyData],
    ) -> QueryResult<Vec<Property>> {
        diesel::insert_into(properties::table)
            .values(data)
            .returning(Property::as_returning())
            .get_results(conn)
    }

    /// Updates one row and returns it as it was before and as it is after: the old row
    /// is read under `FOR UPDATE` in the same transaction, so no other write can come
    /// between the two. `None` when no row has that id.
    /// How many rows come before `row` in the newest-first order (`created_at`, then
    /// `id`, descending: the order of `newest_first` and `Sort::Newest`).
    pub fn newest_position(conn: &mut PgConnection, row: &Property) -> QueryResult<i64> {
        use crate::schema::properties::dsl::*;
        properties
            .filter(
                created_at
                    .gt(row.created_at)
                    .or(created_at.eq(row.created_at).and(id.gt(row.id))),
            )
            .count()
            .get_result(conn)
    }

    pub fn update(
        conn: &mut PgConnection,
        property_id: i64,
        data: &PropertyData,
    ) -> QueryResult<Option<(Property, Property)>> {
        conn.transaction(|conn| {
            let Some(before) = properties::table
                .find(property_id)
                .select(Property::as_select())
                .for_update()
                .first(conn)
                .optional()?
            else {
                return Ok(None);
            };
            let after = diesel::update(properties::table.find(property_id))
                .set(data)
                .returning(Property::as_returning())
                .get_result(conn)?;
            Ok(Some((before, after)))
        })
    }

    /// Inserts a listing and its photos in one transaction: both are written, or neither.
    pub fn insert_with_photos(
        conn: &mut PgConnection,
        data: &PropertyData,
        photos: &PhotoChanges,
    ) -> Result<Property, TxError> {
        conn.transaction(|conn| {
            let row = Self::insert(conn, data)?;
            photo::apply(conn, row.id, photos)?;
            Ok(row)
        })
    }

    /// `update`, with the listing's photo changes in the same transaction (under the
    /// listing's row lock, so two edits of one listing cannot both add their 12th photo).
    pub fn update_with_photos(
        conn: &mut PgConnection,
        property_id: i64,
        data: &PropertyData,
        photos: &PhotoChanges,
    ) -> Result<Option<(Property, Property)>, TxError> {
        conn.transaction(|conn| {
            // (A savepoint inside this transaction: the row lock is held to its end.)
            let Some(changed) = Self::update(conn, property_id, data)? else {
                return Ok(None);
            };
            photo::apply(conn, property_id, photos)?;
            Ok(Some(changed))
        })
    }

    /// Inserts many listings, each with photos already stored (`photo::store`), in one
    /// transaction (`seed`): `photos[i]` are the hashes of listing `i`'s photos, cover
    /// first.
    pub fn insert_many_with_photos(
        conn: &mut PgConnection,
        data: &[PropertyData],
        photos: &[Vec<String>],
    ) -> QueryResult<Vec<Property>> {
        conn.transaction(|conn| {
            let rows = Self::insert_many(conn, data)?;
            let links: Vec<photo::NewLink<'_>> = rows
                .iter()
                .zip(photos)
                .flat_map(|(row, hashes)| {
                    hashes.iter().enumerate().map(|(i, hash)| photo::NewLink {
                        property_id: row.id,
                        photo_hash: hash,
                        position: i as i32,
                        cover: i == 0,
                    })
                })
                .collect();
            // 4 parameters a link: well under PostgreSQL's 65,535 a statement.
            for chunk in links.chunks(10_000) {
                photo::link(conn, chunk)?;
            }
            Ok(rows)
        })
    }

    pub fn delete(conn: &mut PgConnection, property_id: i64) -> QueryResult<Option<Property>> {
        diesel::delete(properties::table.find(property_id))
            .returning(Property::as_returning())
            .get_result(conn)
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_wildcards_in_user_text_match_literally() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
