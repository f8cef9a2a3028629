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
    sign_in_attempts (scope_key) {
        scope_key -> Bytea,
        count -> Int8,
        window_start -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(admin_users, properties, sign_in_attempts,);
