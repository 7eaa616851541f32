#!/usr/bin/env bash
# Fuzzes the readers of untrusted files with libFuzzer:
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     (default: all, 60 s each)
#
# TARGET: npy, checkpoint (safetensors + checkpoint validation), audio
# (WAV/FLAC/Ogg/AIFF through libsndfile), torch (`waveflow import` of
# PyTorch WaveGlow files: zip/legacy containers, the pickle reader). Builds the waveflow-fuzz tool
# with -sanitize=fuzzer,address into .build-fuzz/, starts each target from a
# copy of its seed corpus (Tests/Fuzz/corpus/TARGET, committed) and fails on
# the first crash, trap, leak-free overflow or hang (the input is saved in
# .build-fuzz/findings/). Prints executions, coverage and corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}; seconds=${2:-60}
targets=(npy checkpoint audio torch)
[ "$which" = all ] || targets=("$which")
WAVEFLOW_FUZZ=1 swift build -c release --build-path .build-fuzz --product waveflow-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld 2>&1 | tail -1
tool=.build-fuzz/release/waveflow-fuzz
mkdir -p .build-fuzz/findings
status=0
for t in "${targets[@]}"; do
    work=$(mktemp -d)
    cp Tests/Fuzz/corpus/"$t"/* "$work"/
    echo "fuzz: $t for ${seconds}s"
    if ! ASAN_OPTIONS=detect_leaks=0 "$tool" "$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
        -max_len=262144 -artifact_prefix=.build-fuzz/findings/"$t"- -print_final_stats=1 "$work" \
        > .build-fuzz/"$t".log 2>&1; then
        echo "fuzz: $t FOUND A FAILURE (input in .build-fuzz/findings/, log .build-fuzz/$t.log):"
        grep -E "ERROR|Fatal|==[0-9]+==|SUMMARY|crash" .build-fuzz/"$t".log | head -20
        status=1
    fi
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE" .build-fuzz/"$t".log | tr '\n' ' '; echo
    echo "fuzz: $t corpus $(ls "$work" | wc -l) inputs"
    rm -rf "$work"
done
exit $status
