// @generated automatically by Diesel CLI.

diesel::table! {
    properties (id) {
        id -> Int8,
        #[max_length = 200]
        title -> Varchar,
        description -> Text,
        price -> Numeric,
        #[max_length = 100]
        location -> Varchar,
        created_at -> Timestamptz,
    }
}
