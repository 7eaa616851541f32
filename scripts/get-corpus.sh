#!/usr/bin/env bash
# Builds the training corpus: the male Czech voice of the game "Fish Fillets
# NG" (Debian package fillets-ng-data-cs, GPL-2), about 600 Ogg clips,
# 35 minutes of 22.05 kHz mono speech recorded by voice actors.
#
#   scripts/get-corpus.sh DIR      (default DIR: corpus)
#
# Idempotent: a DIR that already holds the clips is left as it is.
set -euo pipefail
dir=${1:-corpus}
mkdir -p "$dir"
count() { find "$dir" -name '*-v-*.ogg' | wc -l; }
if [ "$(count)" -lt 500 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && { apt-get download fillets-ng-data-cs >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download fillets-ng-data-cs >/dev/null 2>&1; }; }) || {
        echo "get-corpus: 'apt-get download fillets-ng-data-cs' failed (run 'apt-get update' first?)" >&2
        exit 1
    }
    dpkg -x "$work"/fillets-ng-data-cs_*.deb "$work/x"
    for f in "$work"/x/usr/share/games/fillets-ng/sound/*/cs/*-v-*.ogg; do
        level=$(basename "$(dirname "$(dirname "$f")")")
        cp "$f" "$dir/${level}__$(basename "$f")"
    done
fi
n=$(count)
if command -v soxi >/dev/null 2>&1; then
    secs=$(find "$dir" -name '*-v-*.ogg' -print0 | xargs -0 soxi -D | awk '{s+=$1} END {printf "%.1f", s/60}')
    echo "get-corpus: $n files, $secs minutes in $dir"
else
    echo "get-corpus: $n files in $dir"
fi
