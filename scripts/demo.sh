#!/usr/bin/env bash
# The main job, end to end, on the example audio in Audio/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release
tool=.build/release/waveflow
out=${DEMO_OUT:-demo-output}
mkdir -p "$out"
$tool info
$tool mel Audio/ "$out/mels"
echo "demo: mel spectrograms in $out/mels"
