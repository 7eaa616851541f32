#!/usr/bin/env bash
# The main job, end to end, on the example audio in Audio/:
#   1. mel spectrograms of every clip (the TTS front end's convention),
#   2. speech synthesised from them with the shipped model,
#   3. a brief training run (a tiny model, 30 steps) with its checkpoints.
# Outputs go to demo-output/ (or $DEMO_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product waveflow
tool=.build/release/waveflow
out=${DEMO_OUT:-demo-output}
mkdir -p "$out"
$tool info
echo "== 1. mel spectrograms"
$tool mel Audio/ "$out/mels"
echo "== 2. synthesis with the shipped model (Checkpoints/shipped)"
$tool synth "$out/mels" "$out/wavs"
echo "== 3. brief training (tiny preset, 30 steps)"
rm -rf "$out/runs/demo"
$tool train Audio/ --config tiny --steps 30 --batch 2 --segment 4096 --validate-every 10 \
    --checkpoint-every 10 --lr 3e-3 --warmup 5 --run demo --checkpoints "$out/runs"
echo "demo: mels in $out/mels, audio in $out/wavs, checkpoints and nll.svg in $out/runs/demo"
