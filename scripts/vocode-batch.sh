#!/usr/bin/env bash
# Vocodes a list of mel files (.npy, one path per line) into OUTDIR, loading
# the model once per process. --shard i/n takes every n-th file starting at
# the i-th (1-based), so n processes or machines can split one list:
#
#   scripts/vocode-batch.sh [--shard i/n] [--tool PATH] LIST OUTDIR [synth options...]
#
# Output paths mirror the input paths below OUTDIR (leading '/' dropped).
# Exits non-zero if any file failed; the others are still written.
set -euo pipefail
shard="1/1"
tool="$(dirname "$0")/../.build/release/waveflow"
while [ $# -gt 0 ]; do
    case "$1" in
        --shard) shard=$2; shift 2 ;;
        --tool) tool=$2; shift 2 ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || { echo "usage: $0 [--shard i/n] [--tool PATH] LIST OUTDIR [synth options...]" >&2; exit 2; }
list=$1; out=$2; shift 2
i=${shard%/*}; n=${shard#*/}
if ! [[ "$i" =~ ^[0-9]+$ && "$n" =~ ^[0-9]+$ ]] || [ "$i" -lt 1 ] || [ "$i" -gt "$n" ]; then
    echo "vocode-batch: --shard must be i/n with 1 <= i <= n" >&2; exit 2
fi
[ -f "$list" ] || { echo "vocode-batch: $list: no such file" >&2; exit 2; }
[ -x "$tool" ] || { echo "vocode-batch: $tool not built (swift build -c release)" >&2; exit 2; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
count=0
lineno=0
while IFS= read -r path || [ -n "$path" ]; do
    [ -n "$path" ] || continue
    lineno=$((lineno + 1))
    [ $(( (lineno - 1) % n )) -eq $((i - 1)) ] || continue
    abs=$(realpath -m "$path")
    mkdir -p "$stage/$(dirname "${abs#/}")"
    ln -s "$abs" "$stage/${abs#/}"
    count=$((count + 1))
done < "$list"
echo "vocode-batch: shard $i/$n: $count of $lineno files" >&2
[ "$count" -gt 0 ] || exit 0
"$tool" synth "$stage" "$out" "$@"
