#!/usr/bin/env bash
# Screenshots an eval report in headless Chromium (Debian: apt install chromium),
# as a person would see it:
#
#   waveflow eval MODEL held-out/ --report r/
#   scripts/report-screenshot.sh r/report.html shot.png [WIDTHxHEIGHT]
set -euo pipefail
page=$(readlink -f "$1"); out=$2; size=${3:-1100x1300}
command -v chromium >/dev/null || { echo "report-screenshot: chromium is not installed (apt install chromium)" >&2; exit 1; }
timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="${size/x/,}" --screenshot="$(readlink -f "$(dirname "$out")")/$(basename "$out")" \
    "file://$page" 2>/dev/null
echo "report-screenshot: wrote $out"
