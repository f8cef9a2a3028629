-- Listing photos (issue 22). `photos` is content-addressed: one row per distinct
-- uploaded file (SHA-256 of its bytes), holding the two re-encoded JPEGs made from it
-- once, at upload. A row is only ever inserted (ON CONFLICT DO NOTHING), never updated,
-- so what `/media/<hash>-<width>.jpg` serves never changes under its URL.
CREATE TABLE photos (
    hash TEXT PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    card BYTEA NOT NULL,
    card_width INTEGER NOT NULL CHECK (card_width BETWEEN 1 AND 480),
    card_height INTEGER NOT NULL CHECK (card_height > 0),
    page BYTEA NOT NULL,
    page_width INTEGER NOT NULL CHECK (page_width BETWEEN 1 AND 1600),
    page_height INTEGER NOT NULL CHECK (page_height > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which photos a listing shows, in which order, and which one is its cover.
CREATE TABLE property_photos (
    id BIGSERIAL PRIMARY KEY,
    property_id BIGINT NOT NULL REFERENCES properties (id) ON DELETE CASCADE,
    photo_hash TEXT NOT NULL REFERENCES photos (hash),
    position INTEGER NOT NULL,
    cover BOOLEAN NOT NULL DEFAULT false
);

CREATE INDEX property_photos_listing ON property_photos (property_id, position);
-- At most one cover a listing.
CREATE UNIQUE INDEX property_photos_one_cover ON property_photos (property_id) WHERE cover;
