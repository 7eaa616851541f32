#!/usr/bin/env bash
# Builds the held-out evaluation set: audio of a speaker and a language the
# training corpus never has — the Dutch male voice of "Fish Fillets NG"
# (Debian package fillets-ng-data-nl, GPL-2), 8 clips, every 70th of the
# sorted listing starting at the 35th, renamed <level>__<clip>.ogg.
#
#   scripts/get-heldout.sh DIR      (default DIR: heldout)
#
# Idempotent: a DIR that already holds the clips is left as it is.
set -euo pipefail
CALLER=get-heldout
. "$(dirname "$0")/fillets-voice.sh"
dir=${1:-heldout}
mkdir -p "$dir"
count() { find "$dir" -name '*-v-*.ogg' | wc -l; }
if [ "$(count)" -lt 8 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    unpack_voice fillets-ng-data-nl "$work"
    find "$work"/x/usr/share/games/fillets-ng/sound/*/nl -name '*-v-*.ogg' | LC_ALL=C sort |
        awk 'NR % 70 == 35' | head -8 | while read -r f; do
        level=$(basename "$(dirname "$(dirname "$f")")")
        cp "$f" "$dir/${level}__$(basename "$f")"
    done
fi
echo "get-heldout: $(count) files in $dir"
