//! The `admin_users` table: listing managers who may sign in to `/admin/`.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;

use crate::schema::admin_users;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = admin_users)]
#[diesel(check_for_backend(Pg))]
pub struct AdminUser {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Bumped to end every session of this admin; each session cookie carries the
    /// version current when it was signed in.
    pub session_version: i64,
}

#[derive(Insertable)]
#[diesel(table_name = admin_users)]
struct NewAdminUser<'a> {
    username: &'a str,
    password_hash: &'a str,
}

impl AdminUser {
    pub fn find_by_username(conn: &mut PgConnection, name: &str) -> QueryResult<Option<Self>> {
        admin_users::table
            .filter(admin_users::username.eq(name))
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// The admin's current session version, or `None` when the admin no longer exists.
    pub fn session_version(conn: &mut PgConnection, id: i64) -> QueryResult<Option<i64>> {
        admin_users::table
            .find(id)
            .select(admin_users::session_version)
            .first(conn)
            .optional()
    }

    /// Ends every session of the admin, on every instance (sign-out).
    pub fn revoke_sessions(conn: &mut PgConnection, id: i64) -> QueryResult<()> {
        diesel::update(admin_users::table.find(id))
            .set(admin_users::session_version.eq(admin_users::session_version + 1))
            .execute(conn)
            .map(drop)
    }

    /// Inserts the admin unless one with that name exists; returns whether it was created
    /// (an existing admin is never overwritten).
    pub fn create_if_missing(
        conn: &mut PgConnection,
        username: &str,
        password_hash: &str,
    ) -> QueryResult<bool> {
        let inserted = diesel::insert_into(admin_users::table)
            .values(NewAdminUser {
                username,
                password_hash,
            })
            .on_conflict(admin_users::username)
            .do_nothing()
            .execute(conn)?;
        Ok(inserted == 1)
    }
}
