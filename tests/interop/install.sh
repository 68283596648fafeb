#!/usr/bin/env bash
# Installs what the foreign-client interop programs need, idempotently and
# quietly (progress goes to stderr, only when something is installed):
#
#   target/interop/venv/             a Python venv with nats-py (python/requirements.txt)
#   target/interop/js/node_modules/  nats.js v2 for Node (js/package.json + package-lock.json)
#
# Where python3 (with venv) or node/npm are missing, installs them with
# apt-get (python3, python3-venv, nodejs, npm) when running as root on a
# machine that has apt-get; otherwise fails saying what to install.
# A second run finds the stamps of the first and does nothing.
#
# Environment:
#   DURABUS_INTEROP_DIR  where to install (default <repo>/target/interop)
#
# Used by crates/testkit/tests/interop_clients.rs; by hand:
#   tests/interop/install.sh
#   target/interop/venv/bin/python tests/interop/python/interop.py nats://127.0.0.1:4222
#   node tests/interop/js/interop.mjs nats://127.0.0.1:4222
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="${DURABUS_INTEROP_DIR:-$repo/target/interop}"

say() { echo "interop/install.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Debian packages, installed only when missing and only where allowed.
apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing $*; install it (as root: apt-get install -y $*)"
    fi
    say "installing $* (apt-get)"
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq >&2 || die "apt-get update failed"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
        || die "apt-get install $* failed"
}

# A hash of the files that say what to install: a stamp holding it means
# that exact set is installed.
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

mkdir -p "$dest"
# One install at a time (the tests of one binary, or two binaries, may
# call this together).
exec 9>"$dest/.install.lock"
flock 9

# --- Python: a venv with nats-py -------------------------------------------
py_want="$(digest "$here/python/requirements.txt")"
venv="$dest/venv"
if [ "$(cat "$venv/.durabus-stamp" 2>/dev/null)" != "$py_want" ] || ! "$venv/bin/python" -c 'import nats' 2>/dev/null; then
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    # Debian's python3 has no venv/ensurepip without python3-venv.
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    say "creating $venv with $(tr '\n' ' ' <"$here/python/requirements.txt")"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed (is python3-venv installed?)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
        -r "$here/python/requirements.txt" >&2 || die "pip install of nats-py failed"
    "$venv/bin/python" -c 'import nats' || die "nats-py installed but does not import"
    echo "$py_want" >"$venv/.durabus-stamp"
fi

# --- Node: nats.js v2 ------------------------------------------------------
js_want="$(digest "$here/js/package.json" "$here/js/package-lock.json")"
js="$dest/js"
if [ "$(cat "$js/.durabus-stamp" 2>/dev/null)" != "$js_want" ] || [ ! -f "$js/node_modules/nats/package.json" ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        missing=()
        command -v node >/dev/null 2>&1 || missing+=(nodejs)
        command -v npm >/dev/null 2>&1 || missing+=(npm)
        apt_install "${missing[@]}"
    fi
    say "installing nats.js into $js (npm ci)"
    rm -rf "$js"
    mkdir -p "$js"
    cp "$here/js/package.json" "$here/js/package-lock.json" "$js/"
    (cd "$js" && npm ci --silent --no-audit --no-fund >&2) || die "npm ci of nats.js failed"
    echo "$js_want" >"$js/.durabus-stamp"
fi
