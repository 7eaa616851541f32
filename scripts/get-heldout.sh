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
dir=${1:-heldout}
mkdir -p "$dir"
count() { find "$dir" -name '*-v-*.ogg' | wc -l; }
if [ "$(count)" -lt 8 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && { apt-get download fillets-ng-data-nl >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download fillets-ng-data-nl >/dev/null 2>&1; }; }) || {
        echo "get-heldout: 'apt-get download fillets-ng-data-nl' failed (run 'apt-get update' first?)" >&2
        exit 1
    }
    dpkg -x "$work"/fillets-ng-data-nl_*.deb "$work/x"
    find "$work"/x/usr/share/games/fillets-ng/sound/*/nl -name '*-v-*.ogg' | LC_ALL=C sort |
        awk 'NR % 70 == 35' | head -8 | while read -r f; do
        level=$(basename "$(dirname "$(dirname "$f")")")
        cp "$f" "$dir/${level}__$(basename "$f")"
    done
fi
echo "get-heldout: $(count) files in $dir"
