#!/usr/bin/env bash
# Runs the test suite under a sanitizer (release build with testing enabled, into its own
# build folder):
#
#   scripts/sanitize.sh address|thread [swift test options, e.g. --filter MelTests]
#
# AddressSanitizer finds out-of-bounds and use-after-free accesses,
# ThreadSanitizer data races (such as results that depend on timing).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: scripts/sanitize.sh address|thread [swift test options]}; shift
bash scripts/setup.sh >/dev/null
# OpenBLAS's and oneDNN's own threads are not instrumented: report only our races.
# Races inside SwiftNIO's buffers handed over through the (uninstrumented)
# Swift concurrency runtime are suppressed: see scripts/tsan-suppressions.txt.
export TSAN_OPTIONS=${TSAN_OPTIONS:-"halt_on_error=1 report_signal_unsafe=0 suppressions=$PWD/scripts/tsan-suppressions.txt"}
export ASAN_OPTIONS=${ASAN_OPTIONS:-"detect_leaks=0"}
swift test -c release --build-path ".build-$kind" --sanitize="$kind" -Xswiftc -enable-testing \
    --disable-swift-testing "$@"
