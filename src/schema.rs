// @generated automatically by Diesel CLI.

diesel::table! {
    admin_users (id) {
        id -> Int8,
        #[max_length = 150]
        username -> Varchar,
        password_hash -> Text,
        created_at -> Timestamptz,
        session_version -> Int8,
    }
}

diesel::table! {
    photos (hash) {
        hash -> Text,
        card -> Bytea,
        card_width -> Int4,
        card_height -> Int4,
        page -> Bytea,
        page_width -> Int4,
        page_height -> Int4,
        created_at -> Timestamptz,
    }
}

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

diesel::table! {
    property_photos (id) {
        id -> Int8,
        property_id -> Int8,
        photo_hash -> Text,
        position -> Int4,
        cover -> Bool,
    }
}

diesel::table! {
    sign_in_attempts (scope_key) {
        scope_key -> Bytea,
        count -> Int8,
        window_start -> Timestamptz,
    }
}

diesel::joinable!(property_photos -> photos (photo_hash));
diesel::joinable!(property_photos -> properties (property_id));

diesel::allow_tables_to_appear_in_same_query!(
    admin_users,
    photos,
    properties,
    property_photos,
    sign_in_attempts,
);
