#!/usr/bin/env bash
# Checks the page of `waveflow serve` in headless Chromium (Debian: apt install
# chromium) as a person would: starts the server on a free loopback port,
# opens the page, chooses a recording in its file input (copy synthesis),
# waits for both players and spectrograms, and writes a screenshot. Stops
# the server (SIGTERM) and the browser when done.
#
#   scripts/serve-screenshot.sh [AUDIO] [OUT.png]   # default Audio/columns__sl-v-pust.ogg, serve-page.png
set -euo pipefail
cd "$(dirname "$0")/.."
audio=${1:-Audio/columns__sl-v-pust.ogg}; out=${2:-serve-page.png}
command -v chromium >/dev/null || { echo "serve-screenshot: chromium is not installed (apt install chromium)" >&2; exit 1; }
bin=$(swift build -c release --show-bin-path)
[ -x "$bin/waveflow" ] || swift build -c release --product waveflow
work=$(mktemp -d)
server=""; browser=""
cleanup() {
    [ -n "$browser" ] && kill "$browser" 2>/dev/null || true
    [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
"$bin/waveflow" serve --host 127.0.0.1 --port 0 > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 300); do grep -q "http://" "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o "http://127.0.0.1:[0-9]*/" "$work/serve.log" | head -1)
[ -n "$url" ] || { cat "$work/serve.log" >&2; echo "serve-screenshot: the server did not start" >&2; exit 1; }
devtools=$((20000 + RANDOM % 20000))
timeout 300 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$work/profile" \
    --remote-debugging-address=127.0.0.1 --remote-debugging-port="$devtools" about:blank 2>/dev/null &
browser=$!
python3 scripts/serve-page-driver.py "$devtools" "$url" "$audio" "$out"
echo "serve-screenshot: wrote $out ($url)"
