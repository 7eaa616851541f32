#!/usr/bin/env bash
# Builds the training corpus: the male Czech voice of the game "Fish Fillets
# NG" (Debian package fillets-ng-data-cs, GPL-2), about 600 Ogg clips,
# 35 minutes of 22.05 kHz mono speech recorded by voice actors.
#
#   scripts/get-corpus.sh DIR      (default DIR: corpus)
#
# Idempotent: a DIR that already holds the clips is left as it is.
set -euo pipefail
CALLER=get-corpus
. "$(dirname "$0")/fillets-voice.sh"
dir=${1:-corpus}
mkdir -p "$dir"
count() { find "$dir" -name '*-v-*.ogg' | wc -l; }
if [ "$(count)" -lt 500 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    unpack_voice fillets-ng-data-cs "$work"
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
