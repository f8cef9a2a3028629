# shellcheck shell=bash
# Sourced by scripts/dev and scripts/test: installs what is missing, starts a private
# PostgreSQL and a private Redis (loopback, free ports, data under target/), and stops
# what it started, by PID, when the calling script exits. It never touches the
# system's own PostgreSQL or Redis, nor their configuration.
#
# DEV_SERVICES=private makes both scripts ignore servers that already answer.

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT=3

log() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
force_private() { [[ ${DEV_SERVICES:-} == private ]]; }

# `timeout` where it exists (macOS has none; there the command runs without it).
bounded() {
    if have timeout; then timeout "$@"; else shift; "$@"; fi
}

port_open() { bounded 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

free_port() {
    local port
    for _ in {1..100}; do
        port=$((20000 + RANDOM % 30000))
        port_open 127.0.0.1 "$port" || { echo "$port"; return 0; }
    done
    die "found no free port on 127.0.0.1"
}

# --- Tools and packages -------------------------------------------------------------

require_cargo() {
    if ! have cargo && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    have cargo || die "cargo not found. Install Rust 1.95 or newer:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
}

# The directory holding initdb, pg_ctl and psql: Debian's newest
# /usr/lib/postgresql/*/bin, else Homebrew's or Fedora's, else whatever PATH has.
pg_bindir() {
    local dir
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r) \
        /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin /usr/pgsql-*/bin; do
        if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
            echo "$dir"
            return 0
        fi
    done
    have initdb && have pg_ctl && dirname "$(command -v initdb)"
}

# Puts psql and pg_isready on PATH where the package leaves them off it (Homebrew).
pg_tools_on_path() {
    local bindir
    if ! have psql && bindir=$(pg_bindir); then PATH=$bindir:$PATH; fi
}

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# The Debian packages among PostgreSQL, Redis and libpq that are missing.
missing_packages() {
    local missing=()
    if have dpkg-query; then
        deb_installed libpq-dev || missing+=(libpq-dev)
    fi
    local bindir
    { bindir=$(pg_bindir) && { have psql || [[ -x $bindir/psql ]]; }; } || missing+=(postgresql)
    { have redis-server && have redis-cli; } || missing+=(redis-server)
    echo "${missing[@]}"
}

# Installs Debian packages "$@" with apt-get (through sudo when not root), after
# saying so. Elsewhere it prints the command to run and exits.
install_packages() {
    (($#)) || return 0
    if ! have apt-get; then
        {
            printf 'error: missing: %s. Install them, then run this again:\n' "$*"
            if [[ $(uname -s) == Darwin ]]; then
                printf '    brew install postgresql@17 redis\n'
            elif have dnf; then
                printf '    sudo dnf install postgresql-server postgresql libpq-devel redis\n'
            elif have pacman; then
                printf '    sudo pacman -S postgresql postgresql-libs redis\n'
            else
                printf '    PostgreSQL (server and client: initdb, pg_ctl, psql), libpq and its\n'
                printf '    headers, and Redis (redis-server, redis-cli)\n'
            fi
        } >&2
        exit 1
    fi
    local sudo=()
    if ((EUID != 0)); then
        have sudo || die "run as root, or install them first: apt-get install $*"
        sudo=(sudo DEBIAN_FRONTEND=noninteractive)
        log "installing $* (sudo apt-get install)"
    else
        log "installing $* (apt-get install)"
    fi
    local apt_log
    apt_log=$(mktemp)
    if ! { "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q \
        --no-install-recommends "$@"; } >"$apt_log" 2>&1; then
        tail -n 20 "$apt_log" >&2
        rm -f "$apt_log"
        return 1
    fi
    rm -f "$apt_log"
}

# --- Private servers ------------------------------------------------------------------

# PIDs to stop on exit, in this order: the app server, Redis, the PostgreSQL replica,
# PostgreSQL.
APP_PID=
REDIS_PID=
REPLICA_PID=
REPLICA_DATA=
PG_PID=

# PostgreSQL refuses to run as root: as root, the private server runs as the owner
# of an existing data directory, else as `postgres` (made by Debian's package), else
# as `nobody`.
pg_user_for() {
    local data=$1 owner
    if [[ -d $data ]]; then
        owner=$(stat -c %U "$data" 2>/dev/null || stat -f %Su "$data")
        [[ $owner == root ]] || { echo "$owner"; return 0; }
    fi
    if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

as_pg_user() {
    if ((EUID == 0)); then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        "$@"
    fi
}

# A locale that keeps case-insensitive search right beyond ASCII, where there is one.
pg_locale() {
    if locale -a 2>/dev/null | grep -Eqix 'c\.utf-?8'; then echo C.UTF-8; else echo C; fi
}

# claim_pg_dir DIR: makes DIR a directory the user PostgreSQL runs as owns and can
# reach; sets PG_USER, and PG_DIR to DIR or, when a parent directory is closed to that
# user (e.g. a clone under /root), to a per-checkout directory under /var/tmp.
claim_pg_dir() {
    local dir=$1
    mkdir -p "$dir"
    PG_USER=$(pg_user_for "$dir/data")
    if ((EUID == 0)); then
        chown "$PG_USER" "$dir"
        chmod 700 "$dir"
        if ! as_pg_user test -w "$dir"; then
            dir=/var/tmp/property-listings-$(printf '%s' "$PWD" | cksum | cut -d ' ' -f 1)/${dir##*/}
            note "$PG_USER cannot reach $1; keeping PostgreSQL's data in $dir instead"
            mkdir -p "$dir"
            PG_USER=$(pg_user_for "$dir/data")
            chown "$PG_USER" "$dir"
            chmod 700 "$dir"
        fi
    fi
    PG_DIR=$dir
}

# start_private_postgres DIR [fresh] [SERVER OPTIONS]: a PostgreSQL server on a free
# loopback port (user postgres, trust auth, no Unix socket) with its data in DIR/data,
# made by initdb on first use and kept afterwards (or, with "fresh", made anew). Sets
# PG_PORT, and PG_PID when it started the server (a server already running on DIR is
# used as it is and left running).
start_private_postgres() {
    local dir=$1 fresh=${2:-} extra=${3:-} bindir version
    bindir=$(pg_bindir) || die "initdb and pg_ctl not found (install PostgreSQL)"

    claim_pg_dir "$dir"
    dir=$PG_DIR

    if as_pg_user "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        PG_PORT=$(sed -n 4p "$dir/data/postmaster.pid")
        note "the private PostgreSQL in $dir/data is already running (port $PG_PORT):" \
            "using it, and leaving it running"
        return 0
    fi
    [[ $fresh != fresh ]] || rm -rf "$dir/data"
    if [[ -f $dir/data/PG_VERSION ]]; then
        version=$(<"$dir/data/PG_VERSION")
        [[ ! -x /usr/lib/postgresql/$version/bin/pg_ctl ]] || bindir=/usr/lib/postgresql/$version/bin
        if ! "$bindir/postgres" --version | grep -q " ${version}[.a-z]"; then
            die "$dir/data was made by PostgreSQL $version, and $bindir/postgres is $("$bindir/postgres" --version).
    Install PostgreSQL $version, or remove $dir to start afresh."
        fi
    else
        log "creating a private PostgreSQL in $dir/data"
        as_pg_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale="$(pg_locale)" >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    fi

    for _ in 1 2 3; do
        PG_PORT=$(free_port)
        if as_pg_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -s \
            -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='' $extra" \
            start >/dev/null 2>&1; then
            PG_PID=$(head -n 1 "$dir/data/postmaster.pid")
            log "private PostgreSQL on 127.0.0.1:$PG_PORT (pid $PG_PID, log $dir/server.log)"
            return 0
        fi
    done
    tail -n 20 "$dir/server.log" >&2
    die "the private PostgreSQL did not start"
}

# start_private_replica PRIMARY_URL DIR: a streaming replica (hot standby) of the
# server at PRIMARY_URL, cloned afresh into DIR/data (pg_basebackup -R -X stream) and
# started on a free loopback port; its data is removed again on exit. Sets REPLICA_PORT
# and REPLICA_PID. Returns 1, leaving nothing behind, when the primary refuses
# replication connections (it needs a `replication` line in pg_hba.conf for the user,
# wal_level=replica and max_wal_senders > 0: a server made by initdb has all three).
start_private_replica() {
    local primary=$1 dir=$2 bindir version
    bindir=$(pg_bindir) || die "pg_basebackup and pg_ctl not found (install PostgreSQL)"
    claim_pg_dir "$dir"
    dir=$PG_DIR
    rm -rf "$dir/data"
    log "cloning a replica into $dir/data (pg_basebackup)"
    if ! as_pg_user "$bindir/pg_basebackup" -d "$primary" -D "$dir/data" -R -X stream \
        -c fast -w >"$dir/basebackup.log" 2>&1; then
        note "pg_basebackup failed: $(tail -n 1 "$dir/basebackup.log")"
        rm -rf "$dir/data"
        return 1
    fi
    REPLICA_DATA=$dir/data
    version=$(<"$dir/data/PG_VERSION")
    [[ ! -x /usr/lib/postgresql/$version/bin/pg_ctl ]] || bindir=/usr/lib/postgresql/$version/bin
    for _ in 1 2 3; do
        REPLICA_PORT=$(free_port)
        if as_pg_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -s \
            -o "-c listen_addresses=127.0.0.1 -c port=$REPLICA_PORT -c unix_socket_directories='' -c hot_standby=on" \
            start >/dev/null 2>&1; then
            REPLICA_PID=$(head -n 1 "$dir/data/postmaster.pid")
            log "private PostgreSQL replica on 127.0.0.1:$REPLICA_PORT (pid $REPLICA_PID, log $dir/server.log)"
            return 0
        fi
    done
    tail -n 20 "$dir/server.log" >&2
    die "the private PostgreSQL replica did not start"
}

# Every Redis the project starts is a bounded cache: a memory cap (REDIS_MAXMEMORY,
# default 128mb) and LFU eviction over all keys. The cache stays correct whatever key is
# evicted (see the module docs of src/cache); LFU rather than LRU because the abuse to
# expect is a flood of URLs read once, which LFU evicts first and LRU keeps over the
# pages people read again.
REDIS_CACHE_ARGS=(--maxmemory "${REDIS_MAXMEMORY:-128mb}" --maxmemory-policy allkeys-lfu)

# start_private_redis DIR: a redis-server on a free loopback port, no persistence,
# bounded (REDIS_CACHE_ARGS), its log in DIR. Sets REDIS_PORT and REDIS_PID.
start_private_redis() {
    local dir=$1
    mkdir -p "$dir"
    for _ in 1 2 3; do
        REDIS_PORT=$(free_port)
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            "${REDIS_CACHE_ARGS[@]}" --dir "$dir" --logfile "$dir/redis.log" --daemonize no &
        REDIS_PID=$!
        for _ in {1..50}; do
            if [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
                log "private Redis on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.1
        done
        stop_pid "$REDIS_PID"
        REDIS_PID=
    done
    tail -n 20 "$dir/redis.log" >&2
    die "the private Redis did not start"
}

# Sends SIGTERM (or $2) to a process and waits up to 30 s for it to end.
stop_pid() {
    local pid=$1 signal=${2:-TERM}
    kill -0 "$pid" 2>/dev/null || return 0
    kill -"$signal" "$pid" 2>/dev/null || return 0
    for _ in {1..300}; do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# The EXIT trap: stops what this script started, newest first. PostgreSQL gets
# SIGINT, its "fast" shutdown.
stop_started_services() {
    local status=$?
    trap - EXIT HUP INT TERM
    [[ -z $APP_PID ]] || stop_pid "$APP_PID"
    [[ -z $REDIS_PID ]] || stop_pid "$REDIS_PID"
    [[ -z $REPLICA_PID ]] || stop_pid "$REPLICA_PID" INT
    # A replica is cloned afresh each run: its data goes.
    [[ -z $REPLICA_DATA ]] || rm -rf "$REPLICA_DATA"
    [[ -z $PG_PID ]] || stop_pid "$PG_PID" INT
    if [[ -n $REDIS_PID || -n $REPLICA_PID || -n $PG_PID ]]; then
        log "stopped the private services"
    fi
    exit "$status"
}
trap stop_started_services EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
