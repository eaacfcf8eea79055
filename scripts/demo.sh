#!/usr/bin/env bash
# One-command moenv demo. Run from anywhere in a checkout on Debian/Ubuntu:
#
#     ./scripts/demo.sh            set everything up, load the demo data, apply environments/dev.yaml
#     ./scripts/demo.sh --stop     stop the private demo server this script started (nothing else)
#
# What it does:
#   1. installs MariaDB (server + client) and python3-venv with apt-get if they are missing
#      (through sudo when not root);
#   2. creates .venv in the repository and installs moenv into it (pip install -e .);
#   3. picks a server:
#        - $MOENV_URL if set (mysql://user:pass@host:port/);
#        - otherwise a server on 127.0.0.1:3306 if root without a password can log in;
#        - otherwise a private MariaDB on 127.0.0.1:3307 whose files live in .moenv-demo/
#          (data/, mysqld.sock, mysqld.pid, error.log); it is reused by later runs and
#          stopped with --stop; `rm -rf .moenv-demo` after --stop throws it away;
#   4. loads demo/production_db.sql (the source database `production_db`) unless it is
#      already there;
#   5. runs `moenv apply environments/dev.yaml --yes` and `moenv status`.
# Running it again is safe: the server and the data are reused and the second apply is a no-op.
#
# Options:
#   --private   skip the check for a server on port 3306 and use the private server
#   --reload    drop and reload production_db even if it is already there
#   --stop      stop the private demo server, then exit
#   -h, --help  show this text
#
# Environment:
#   MOENV_URL                 server to use; no local server is looked for or started
#   MOENV_DEMO_PORT_CHECK     port probed for an existing local server (default 3306); point it at
#                             a port where nothing listens (e.g. 3399) to test the private path
#   MOENV_DEMO_PRIVATE_PORT   port of the private server (default 3307)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

MODE=demo
FORCE_PRIVATE=0
RELOAD=0
for arg in "$@"; do
    case "$arg" in
        --stop) MODE=stop ;;
        --private) FORCE_PRIVATE=1 ;;
        --reload) RELOAD=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "demo.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

# Physical path (pwd -P): the server reports its datadir with symlinks resolved.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO"

# mariadbd and mariadb-install-db live in sbin directories that a normal user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

DEMO_DIR="$REPO/.moenv-demo"
DATA_DIR="$DEMO_DIR/data"
SOCKET="$DEMO_DIR/mysqld.sock"
# A unix socket path must fit in 108 bytes; fall back to /tmp for deep checkouts.
if [ "${#SOCKET}" -gt 100 ]; then
    SOCKET="${TMPDIR:-/tmp}/moenv-demo-$(id -u)-$(printf '%s' "$REPO" | cksum | cut -d' ' -f1).sock"
fi
PID_FILE="$DEMO_DIR/mysqld.pid"
ERROR_LOG="$DEMO_DIR/error.log"
CHECK_PORT="${MOENV_DEMO_PORT_CHECK:-3306}"
PRIVATE_PORT="${MOENV_DEMO_PRIVATE_PORT:-3307}"
SQL_FILE="$REPO/demo/production_db.sql"
MANIFEST="environments/dev.yaml"

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "need root to run: $* (install sudo or run this script as root)"
    fi
}

APT_UPDATED=0
apt_install() {
    have apt-get || die "apt-get not found; install these yourself and re-run: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# The first of the given commands that exists, or nothing.
first_of() {
    local c
    for c in "$@"; do
        if have "$c"; then echo "$c"; return 0; fi
    done
    return 0
}

CLIENT=""
find_client() { CLIENT="$(first_of mariadb mysql)"; }

ensure_mariadb() { # $1 = "server" when the server binaries are needed too
    find_client
    local server
    server="$(first_of mariadbd mysqld)"
    if [ -z "$CLIENT" ] || { [ "${1:-}" = server ] && [ -z "$server" ]; }; then
        apt_install mariadb-server mariadb-client
        find_client
    fi
    [ -n "$CLIENT" ] || die "no mariadb/mysql client found after installing MariaDB"
}

# --- private server --------------------------------------------------------------------

# Pid of the private server if it is running (and really is ours), else nothing.
private_pid() {
    [ -f "$PID_FILE" ] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    # Only a server started on our data directory counts.
    if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--datadir=$DATA_DIR"; then
        return 0
    fi
    echo "$pid"
}

stop_private() {
    local pid
    pid="$(private_pid)"
    if [ -z "$pid" ]; then
        say "no private demo server is running (looked for $PID_FILE)"
        return 0
    fi
    say "stopping the private demo server (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || { say "stopped"; return 0; }
        sleep 0.5
    done
    die "server pid $pid did not stop within 60 s; see $ERROR_LOG"
}

if [ "$MODE" = stop ]; then
    stop_private
    exit 0
fi

# --- 1. packages --------------------------------------------------------------------------

if ! have python3; then
    apt_install python3 python3-venv
fi

# The client is always needed; the server binaries only if a private server must be started
# (start_private installs them then).
ensure_mariadb client

# --- 2. virtualenv ----------------------------------------------------------------------------

if ! { [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys' >/dev/null 2>&1; }; then
    say "creating .venv"
    rm -rf .venv
    if ! python3 -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv .venv || die "python3 -m venv failed even after installing python3-venv"
    fi
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 \
        || say "warning: could not upgrade pip; carrying on"
fi

# Re-install only when moenv is missing or pyproject.toml changed (the install is editable,
# so source changes need nothing).
if [ ! -x .venv/bin/moenv ] || [ pyproject.toml -nt .venv/bin/moenv ]; then
    say "installing moenv into .venv (pip install -e .)"
    pip_log="$(mktemp)"
    if ! .venv/bin/python -m pip install -q -e . >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        die "pip install -e . failed"
    fi
    rm -f "$pip_log"
    touch .venv/bin/moenv
fi
[ -x .venv/bin/moenv ] || die "pip install -e . did not create .venv/bin/moenv"

# --- 3. server ---------------------------------------------------------------------------------

DB_HOST="" DB_PORT="" DB_USER="" DB_PASS=""

parse_url() { # mysql://user:pass@host:port/ -> DB_HOST, DB_PORT, DB_USER, DB_PASS
    local fields
    fields="$(python3 - "$1" <<'PY'
import sys
from urllib.parse import urlsplit, unquote
u = urlsplit(sys.argv[1])
if not u.scheme or not u.hostname:
    sys.exit("cannot parse server URL %r; expected mysql://user:pass@host:port/" % sys.argv[1])
for v in (u.hostname, u.port or 3306, unquote(u.username or "root"), unquote(u.password or "")):
    print(v)
PY
)" || die "bad server URL"
    { read -r DB_HOST; read -r DB_PORT; read -r DB_USER; IFS= read -r DB_PASS || true; } <<<"$fields"
}

redact() { python3 -c 'import re,sys; print(re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", sys.argv[1]))' "$1"; }

# Runs the client against DB_HOST/DB_PORT as DB_USER, over TCP, ignoring option files.
sql() {
    MYSQL_PWD="$DB_PASS" "$CLIENT" --no-defaults --protocol=TCP --connect-timeout=5 \
        -h"$DB_HOST" -P"$DB_PORT" -u"$DB_USER" "$@"
}

answers() { # host port -> true when root without a password can run a query there
    MYSQL_PWD="" "$CLIENT" --no-defaults --protocol=TCP --connect-timeout=3 \
        -h"$1" -P"$2" -uroot -e 'SELECT 1' >/dev/null 2>&1
}

# True when the server answering on the private port is ours (not some other server that
# happens to listen there).
private_answers() {
    local datadir
    datadir="$(MYSQL_PWD="" "$CLIENT" --no-defaults --protocol=TCP --connect-timeout=3 \
        -h127.0.0.1 -P"$PRIVATE_PORT" -uroot -N -B -e 'SELECT @@datadir' 2>/dev/null)" || return 1
    [ "${datadir%/}" = "$DATA_DIR" ]
}

start_private() {
    local install_db server pid
    local as_root_flag=()
    [ "$(id -u)" -eq 0 ] && as_root_flag=(--user=root)
    ensure_mariadb server
    mkdir -p "$DEMO_DIR"

    pid="$(private_pid)"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
        && ! tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--port=$PRIVATE_PORT"; then
        die "the private demo server (pid $pid) runs on another port than $PRIVATE_PORT; run '$0 --stop' first"
    fi
    if [ -n "$pid" ] && private_answers; then
        say "reusing the private demo server already running (pid $pid, port $PRIVATE_PORT)"
        return 0
    fi
    if [ -n "$pid" ]; then
        die "a private demo server (pid $pid) is running but does not answer on port $PRIVATE_PORT; run '$0 --stop' and retry"
    fi
    rm -f "$PID_FILE" "$SOCKET"

    if [ ! -d "$DATA_DIR/mysql" ]; then
        install_db="$(first_of mariadb-install-db mysql_install_db)"
        [ -n "$install_db" ] || die "mariadb-install-db not found"
        say "initialising a private data directory in $DATA_DIR"
        rm -rf "$DATA_DIR"
        if ! "$install_db" --no-defaults --auth-root-authentication-method=normal --skip-test-db \
            --datadir="$DATA_DIR" "${as_root_flag[@]}" >"$DEMO_DIR/install-db.log" 2>&1; then
            cat "$DEMO_DIR/install-db.log" >&2
            die "$install_db failed (log: $DEMO_DIR/install-db.log)"
        fi
    fi

    server="$(first_of mariadbd mysqld)"
    [ -n "$server" ] || die "mariadbd not found"
    say "starting a private MariaDB on 127.0.0.1:$PRIVATE_PORT (files in $DEMO_DIR)"
    # setsid: the server is not tied to this terminal and outlives the script.
    setsid "$server" --no-defaults --datadir="$DATA_DIR" --port="$PRIVATE_PORT" \
        --bind-address=127.0.0.1 --socket="$SOCKET" --pid-file="$PID_FILE" \
        --log-error="$ERROR_LOG" "${as_root_flag[@]}" </dev/null >/dev/null 2>&1 &
    pid=$!

    for _ in $(seq 1 120); do
        if private_answers; then
            say "private server is up"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null && [ -z "$(private_pid)" ]; then
            tail -n 20 "$ERROR_LOG" >&2 2>/dev/null || true
            die "the private server exited while starting (is port $PRIVATE_PORT taken? log: $ERROR_LOG)"
        fi
        sleep 0.5
    done
    tail -n 20 "$ERROR_LOG" >&2 2>/dev/null || true
    die "the private server did not answer within 60 s (log: $ERROR_LOG)"
}

if [ -n "${MOENV_URL:-}" ]; then
    URL="$MOENV_URL"
    say "using the server from MOENV_URL: $(redact "$URL")"
elif [ "$FORCE_PRIVATE" -eq 0 ] && answers 127.0.0.1 "$CHECK_PORT"; then
    URL="mysql://root@127.0.0.1:$CHECK_PORT/"
    say "using the MariaDB/MySQL server already running on 127.0.0.1:$CHECK_PORT ($URL)"
else
    if [ "$FORCE_PRIVATE" -eq 0 ]; then
        say "no server on 127.0.0.1:$CHECK_PORT accepts root without a password"
    fi
    start_private
    URL="mysql://root@127.0.0.1:$PRIVATE_PORT/"
    say "using the private demo server ($URL)"
fi
parse_url "$URL"
sql -e 'SELECT 1' >/dev/null || die "cannot log in to $(redact "$URL")"

# --- 4. demo data --------------------------------------------------------------------------------

SUMMARY_SQL="
SELECT 'users', COUNT(*) FROM production_db.users
UNION ALL SELECT 'categories', COUNT(*) FROM production_db.categories
UNION ALL SELECT 'products', COUNT(*) FROM production_db.products
UNION ALL SELECT 'orders', COUNT(*) FROM production_db.orders
UNION ALL SELECT 'order_items', COUNT(*) FROM production_db.order_items
UNION ALL SELECT 'page_views', COUNT(*) FROM production_db.page_views"

one_line() { awk -F'\t' '{ printf "%s%s=%s", (NR > 1 ? ", " : ""), $1, $2; total += $2 } END { printf " (%d rows)\n", total }'; }

loaded="$(sql -N -B -e "SELECT COUNT(*) FROM information_schema.tables
    WHERE table_schema = 'production_db'
      AND table_name IN ('users','categories','products','orders','order_items','page_views','order_totals')")"
if [ "$RELOAD" -eq 0 ] && [ "$loaded" = 7 ]; then
    say "production_db is already loaded (--reload recreates it): $(sql -N -B -e "$SUMMARY_SQL" | one_line)"
else
    say "loading demo/production_db.sql into production_db"
    start=$(date +%s)
    out="$(sql -N -B <"$SQL_FILE")" || die "loading $SQL_FILE failed"
    say "loaded in $(($(date +%s) - start)) s: $(grep -v '(view)' <<<"$out" | one_line)"
fi

# --- 5. moenv ----------------------------------------------------------------------------------

export MOENV_URL="$URL"
say "MOENV_URL=$(redact "$URL")"
say ".venv/bin/moenv apply $MANIFEST --yes"
.venv/bin/moenv apply "$MANIFEST" --yes
say ".venv/bin/moenv status"
.venv/bin/moenv status

echo
if [ -z "$DB_PASS" ]; then
    say "done. To try it yourself:  export MOENV_URL='$URL'  and run .venv/bin/moenv --help"
else
    say "done. Keep MOENV_URL set and run .venv/bin/moenv --help"
fi
if [ -n "$(private_pid)" ]; then
    say "the private demo server keeps running; stop it with: ./scripts/demo.sh --stop"
fi
