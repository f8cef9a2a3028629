# Property Listings: build the release binary, then run it on a slim Debian.
#
#   docker build -t property-listings .
#   docker compose up --build        # with PostgreSQL and Redis, see docker-compose.yml

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder

# Diesel links libpq; pkg-config helps crates find system libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# 1. Dependencies only: build the crate with empty sources, so this (slow) layer is
#    reused as long as Cargo.toml and Cargo.lock do not change.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The application. Askama compiles templates/ into the binary and
#    diesel_migrations embeds migrations/, so both are needed here only.
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY diesel.toml ./
# COPY keeps the files' modification times, which can be older than the dummy build
# above: touch the crate roots so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/property-listings /property-listings

# ---------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# libpq5: the binary links libpq dynamically. ca-certificates: TLS to managed
# PostgreSQL/Redis (sslmode=require, rediss://) if used.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

WORKDIR /app

COPY --from=builder /property-listings /app/property-listings
# Served from disk at run time (/static/...).
COPY static /app/static

ENV BIND=0.0.0.0:8000 \
    RUST_LOG=info \
    STATIC_DIR=/app/static

USER app
EXPOSE 8000

# No curl in this image: bash (part of debian:bookworm-slim) speaks just enough HTTP
# over /dev/tcp to ask /healthz, which answers 200 while PostgreSQL answers (Redis may
# be down: the site still works without it) and 503 otherwise. The port is taken from
# BIND, so the check follows it when BIND is overridden.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${BIND##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 5 status <&3 && [[ $status == HTTP/*' 200 '* ]]"]

ENTRYPOINT ["/app/property-listings"]
CMD ["serve"]
