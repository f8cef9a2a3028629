CREATE TABLE properties (
    id BIGSERIAL PRIMARY KEY,
    title VARCHAR(200) NOT NULL CHECK (btrim(title) <> ''),
    description TEXT NOT NULL DEFAULT '',
    price NUMERIC(10, 2) NOT NULL CHECK (price >= 0),
    location VARCHAR(100) NOT NULL CHECK (btrim(location) <> ''),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Serves the default newest-first listing (ORDER BY created_at DESC, id DESC LIMIT 20).
CREATE INDEX properties_newest_first ON properties (created_at DESC, id DESC);
