#!/usr/bin/env bash
# Training throughput of one process versus a 2-rank Open MPI job on this
# machine, and the time each step spends in the gradient allreduce.
#   scripts/bench-mpi.sh [PRESET] [BATCH] [SEGMENT] [STEPS]
# Runs `waveflow train` on Audio/ three ways (1 process x 1 thread,
# 1 process x 2 threads, 2 ranks x 1 thread) and prints the median
# samples/s over the steps after the first two.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-h16-c32}; batch=${2:-8}; segment=${3:-16384}; steps=${4:-8}
swift build -c release --product waveflow >/dev/null
tool=.build/release/waveflow
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_MCA_btl_vader_single_copy_mechanism=none
common=(train Audio --config "$preset" --steps "$steps" --batch "$batch" --segment "$segment"
        --checkpoint-every 100000 --validate-every 100000)
summary() {
    python3 - "$1" "$2" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l][2:]
rate = statistics.median(r["samples_per_s"] for r in rows)
ar = [r.get("allreduce_s", 0.0) for r in rows]
print(f"{sys.argv[1]:<26} {rate:>10.0f} samples/s   allreduce {1000*statistics.median(ar):6.1f} ms/step")
PY
}
echo "preset $preset, batch $batch x $segment, steps 3..$steps (median)"
"$tool" "${common[@]}" --threads 1 --checkpoints "$work/a" --run r >/dev/null 2>&1
summary "1 process x 1 thread" "$work/a/r/metrics.jsonl"
"$tool" "${common[@]}" --threads 2 --checkpoints "$work/b" --run r >/dev/null 2>&1
summary "1 process x 2 threads" "$work/b/r/metrics.jsonl"
mpirun --allow-run-as-root --oversubscribe -np 2 "$tool" "${common[@]}" --checkpoints "$work/c" --run r >/dev/null 2>&1
summary "2 ranks x 1 thread (MPI)" "$work/c/r/metrics.jsonl"
