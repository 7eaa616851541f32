#!/usr/bin/env bash
# Held-out quality against training time: evaluates every step-*.safetensors
# of a folder (a run folder, or an archive of one) on an audio folder and
# prints one row per checkpoint: step, training minutes (from the run's
# metrics.jsonl), and eval's mean NLL, log-mel L1, MR-STFT log-magnitude
# distance <= 8 kHz and RMS ratio (model only; baselines: `waveflow eval`).
#
#   scripts/eval-curve.sh CHECKPOINT_FOLDER AUDIO_FOLDER [SIGMA] [METRICS_JSONL]
set -euo pipefail
folder=$1; audio=$2; sigma=${3:-0.9}; metrics=${4:-$folder/metrics.jsonl}
W=${WAVEFLOW:-$(dirname "$0")/../.build/release/waveflow}
printf 'step\tminutes\tnll\tmel_l1\tlsd8k\trms\n'
for ck in $(ls "$folder"/step-*.safetensors | sort); do
    step=$(basename "$ck" .safetensors); step=$((10#${step#step-}))
    minutes=$(grep "\"step\":$step," "$metrics" 2>/dev/null | grep -v val_nll | head -1 |
        sed -n 's/.*"time":\([0-9.]*\).*/\1/p' | awk '{printf "%.1f", $1/60}')
    row=$("$W" eval "$ck" "$audio" --sigma "$sigma" --no-baselines --threads "${THREADS:-1}" | grep '^mean')
    printf '%s\t%s\t%s\n' "$step" "${minutes:-?}" "$(echo "$row" | awk -F'\t' '{printf "%s\t%s\t%s\t%s", $2, $3, $4, $6}')"
done
