#!/bin/sh
# Install the Debian packages promptgate needs to build, test and bench,
# only those missing (no apt-get at all when everything is there).
set -eu
# (clang and libclang-rt-14-dev, the libFuzzer runtime that clang only
# recommends: make fuzz)
PKGS="make gcc pkg-config libevent-dev libcurl4-openssl-dev libsqlite3-dev
sqlite3 libjansson-dev libssl-dev libhiredis-dev redis-server libcmocka-dev
python3 python3-pytest wrk curl jq nginx-light chromium
clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
# the official OpenAI client test runs on Node.js: use the machine's node
# (and its npm) when there is one, else Debian's
if ! command -v node >/dev/null 2>&1; then
    missing="$missing nodejs"
fi
if ! command -v npm >/dev/null 2>&1; then
    missing="$missing npm"
fi
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: missing packages:$missing; run as root or install them" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# the nginx package starts a system nginx on port 80; the bench runs its own
if command -v service >/dev/null 2>&1; then
    $SUDO service nginx stop >/dev/null 2>&1 || true
fi
