#!/usr/bin/env bash
# Hostile-input probes: runs the release build on broken, truncated, hostile
# and badly named files and options, as a demanding user would, and checks
# the project's promise for each one:
#
#   - no crash (no signal, no trap), no hang (every probe has a time limit);
#   - a refused input gives a non-zero exit and a message whose line
#     line says "error" (and, where a file is at fault, names it);
#   - nothing is lost: protected files (inputs, earlier outputs) keep their
#     bytes, and no temporary or half-written file is left behind.
#
#   scripts/probe.sh [KIND...]     KIND: audio npy checkpoint config paths signals resume
#
# Prints one line per probe (kind, name, exit status, outcome) and a table of
# outcomes by kind; exits non-zero if any probe failed. Needs only bash,
# coreutils and the built tool (WAVEFLOW=path overrides .build/release/waveflow).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${WAVEFLOW:-$ROOT/.build/release/waveflow}
[ -x "$W" ] || { echo "probe.sh: no tool at $W (swift build -c release first)" >&2; exit 2; }
MODEL=$ROOT/Checkpoints/shipped/model.safetensors
KINDS=${*:-audio npy checkpoint config paths signals resume}
T=$(mktemp -d /tmp/waveflow-probe.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
export WAVEFLOW_NO_PROGRESS=1

declare -A total pass crash hang lost
failed=0

# record KIND NAME STATUS OUTCOME: prints a probe's line and counts it.
record() {
    local k=$1
    total[$k]=$(( ${total[$k]:-0} + 1 ))
    case $4 in
        ok) pass[$k]=$(( ${pass[$k]:-0} + 1 ));;
        CRASH*) crash[$k]=$(( ${crash[$k]:-0} + 1 )); failed=$((failed + 1));;
        HANG*) hang[$k]=$(( ${hang[$k]:-0} + 1 )); failed=$((failed + 1));;
        LOST*|LEFTOVER*|half-written*|duplicate*) lost[$k]=$(( ${lost[$k]:-0} + 1 )); failed=$((failed + 1));;
        *) failed=$((failed + 1));;
    esac
    printf '%-10s %-48s %4s  %s\n' "$k" "$2" "$3" "$4"
}
PROTECT=()

# ---------------------------------------------------------------- helpers

# Records the checksums of files that a probe must not change.
protect() { PROTECT=("$@"); sha256sum "$@" > "$T/.protected" 2>/dev/null; }

# Temporary or half-written files the tool may leave in DIR.
leftovers() { find "$1" \( -name '.*.tmp' -o -name '.dat.nosync*' -o -name '*.partial' \) 2>/dev/null; }

# probe KIND NAME EXPECT MENTION -- COMMAND...
#   EXPECT: fail (refused: non-zero, first stderr line is an error),
#           ok (exit 0), any (either, but no crash/hang/loss).
#   MENTION: text the error must contain (a file name), or "" for none.
probe() {
    local kind=$1 name=$2 expect=$3 mention=$4; shift 5
    case " $KINDS " in *" $kind "*) ;; *) PROTECT=(); return ;; esac
    timeout -k 5 "${LIMIT:-60}" "$@" > "$T/.out" 2> "$T/.err" < /dev/null
    local status=$? outcome=ok first
    first=$(grep -m1 -i 'error' "$T/.err" || grep -v '^\s*$' "$T/.err" | head -1)
    if [ $status -eq 124 ] || [ $status -eq 137 ]; then outcome=HANG
    elif [ $status -gt 128 ] && [ $status -ne 130 ] && [ $status -ne 143 ]; then outcome="CRASH(signal $((status - 128)))"
    elif grep -qiE 'fatal error|stack trace|segmentation|illegal instruction|sanitizer' "$T/.err"; then outcome=CRASH
    elif [ "$expect" = fail ] && [ $status -eq 0 ]; then outcome="ACCEPTED"
    elif [ "$expect" = ok ] && [ $status -ne 0 ]; then outcome="REFUSED: $first"
    elif [ "$expect" = fail ] && ! echo "$first" | grep -qi 'error'; then outcome="UNCLEAR: ${first:-no message}"
    elif [ "$expect" = fail ] && [ -n "$mention" ] && ! grep -qF -- "$mention" "$T/.err"; then outcome="UNNAMED($mention): $first"
    fi
    if [ ${#PROTECT[@]} -gt 0 ] && ! sha256sum --quiet -c "$T/.protected" > /dev/null 2>&1; then outcome="LOST (a protected file changed)"; fi
    if [ -n "$(leftovers "$T")" ]; then outcome="LEFTOVER: $(leftovers "$T" | head -1)"; leftovers "$T" | xargs rm -f; fi
    record "$kind" "$name" "$status" "$outcome"
    PROTECT=()
}

# Little-endian bytes of an integer: le32 N, le64 N.
le() { local n=$1 k=$2 i s=""; for ((i = 0; i < k; i++)); do s+=$(printf '\\x%02x' $(( (n >> (8 * i)) & 255 ))); done; printf "$s"; }
# Overwrites bytes of FILE at OFFSET with the printf-escaped BYTES.
patch() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
# A deterministic pseudo-random file: rand FILE BYTES SEED.
rand() { awk -v n="$2" -v s="$3" 'BEGIN { srand(s); for (i = 0; i < n; i++) printf "%c", int(rand() * 256) }' LC_ALL=C > "$1"; }

# A .npy file: npy FILE HEADER_DICT DATA_FILE [VERSION_BYTES].
npy() {
    local hdr=$2 pad
    pad=$(( (64 - (10 + ${#hdr} + 1) % 64) % 64 ))
    hdr="$hdr$(printf '%*s' $pad '')"
    { printf '\x93NUMPY\x01\x00'; le $(( ${#hdr} + 1 )) 2; printf '%s\n' "$hdr"; cat "$3"; } > "$1"
}
# A safetensors file with its JSON header edited by sed: st_edit IN SED OUT.
# (The model config is a JSON string inside that header: its quotes are \".)
st_edit() {
    local n json
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    json=$(dd if="$1" bs=1 skip=8 count="$n" status=none | sed -e "$2")
    { le ${#json} 8; printf '%s' "$json"; tail -c +$(( 9 + n )) "$1"; } > "$3"
}
# Offset of the first tensor byte of a safetensors file.
st_data() { echo $(( 8 + $(od -An -tu8 -N8 "$1" | tr -d ' ') )); }

# ---------------------------------------------------------------- fixtures

mkdir -p in out corpus
cp "$ROOT"/Audio/alibaba__kni-v-ber.ogg in/good.ogg
"$W" mel in/good.ogg in/good.npy --threads 1 > /dev/null 2>&1 || { echo "probe.sh: cannot make a mel" >&2; exit 2; }
"$W" synth in/good.npy in/good.wav --checkpoint "$MODEL" --threads 1 > /dev/null 2>&1 || { echo "probe.sh: cannot synthesise" >&2; exit 2; }
cp "$MODEL" in/model.safetensors
for f in "$ROOT"/Audio/*.ogg; do cp "$f" corpus/; done
head -c $(( 80 * 40 * 4 )) /dev/zero > in/zeros.f32       # 80 x 40 Float32 zeros
size=$(stat -c %s in/good.wav)

# ---------------------------------------------------------------- audio
# Each broken file is read by mel, score and eval (eval also synthesises).
audio_probe() { # NAME FILE [EXPECT]
    local e=${3:-fail} base; base=$(basename "$2")
    probe audio "mel: $1" "$e" "$base" -- "$W" mel "$2" out/a.npy --threads 1
    probe audio "score: $1" "$e" "$base" -- "$W" score in/model.safetensors "$2" --threads 1
    rm -f out/a.npy
}
: > in/empty.wav;                                   audio_probe "empty file" in/empty.wav
rand in/random.wav 4096 1;                          audio_probe "random bytes named .wav" in/random.wav
printf 'hello, world\n' > in/text.flac;             audio_probe "text named .flac" in/text.flac
head -c 44 in/good.wav > in/header-only.wav;        audio_probe "WAV header only" in/header-only.wav
for cut in 12 30 100 1000 $(( size / 2 )); do head -c $cut in/good.wav > in/cut$cut.wav; done
for cut in 12 30; do audio_probe "WAV cut at $cut bytes" in/cut$cut.wav; done
audio_probe "WAV cut at 100 bytes (70 samples)" in/cut100.wav any
audio_probe "WAV cut in half (refused: truncated)" in/cut$(( size / 2 )).wav
cp in/good.wav in/bigdata.wav; patch in/bigdata.wav 40 '\xff\xff\xff\x7f'; audio_probe "WAV data size 2 GB, file 200 KB" in/bigdata.wav any
cp in/good.wav in/ch0.wav; patch in/ch0.wav 22 '\x00\x00';             audio_probe "WAV with 0 channels" in/ch0.wav
cp in/good.wav in/ch300.wav; patch in/ch300.wav 22 '\x2c\x01';         audio_probe "WAV with 300 channels" in/ch300.wav any
cp in/good.wav in/sr0.wav; patch in/sr0.wav 24 '\x00\x00\x00\x00';     audio_probe "WAV with sample rate 0" in/sr0.wav
cp in/good.wav in/srbig.wav; patch in/srbig.wav 24 '\xff\xff\xff\xff'; audio_probe "WAV with sample rate 4e9" in/srbig.wav
cp in/good.wav in/sr1.wav; patch in/sr1.wav 24 '\x01\x00\x00\x00';     audio_probe "WAV with sample rate 1" in/sr1.wav
cp in/good.wav in/bits7.wav; patch in/bits7.wav 34 '\x07\x00';         audio_probe "WAV with 7-bit samples" in/bits7.wav any
cp in/good.wav in/fmt9.wav; patch in/fmt9.wav 20 '\x09\x00';           audio_probe "WAV with format tag 9" in/fmt9.wav
osize=$(stat -c %s in/good.ogg)
for cut in 60 500 $(( osize / 3 )) $(( osize - 7 )); do head -c $cut in/good.ogg > in/ocut$cut.ogg; done
audio_probe "Ogg cut in its headers (60 bytes)" in/ocut60.ogg
audio_probe "Ogg cut at 500 bytes" in/ocut500.ogg any
audio_probe "Ogg cut at a third" in/ocut$(( osize / 3 )).ogg ok
audio_probe "Ogg missing its last 7 bytes" in/ocut$(( osize - 7 )).ogg ok
cp in/good.ogg in/flipped.ogg; patch in/flipped.ogg $(( osize / 2 )) '\xde\xad\xbe\xef\xde\xad\xbe\xef'; audio_probe "Ogg with corrupt pages" in/flipped.ogg any
mkdir -p in/dir.wav;                                audio_probe "a folder named .wav" in/dir.wav
mkfifo in/fifo.wav;                                 audio_probe "a FIFO named .wav (no writer)" in/fifo.wav
ln -s loop-b.wav in/loop-a.wav; ln -s loop-a.wav in/loop-b.wav; audio_probe "symlink loop" in/loop-a.wav
audio_probe "missing file" in/nosuch.wav
audio_probe "/dev/zero" /dev/zero
audio_probe "/dev/null" /dev/null
long=$(printf 'x%.0s' $(seq 300)); audio_probe "a 300-character name" "in/$long.wav"
mkdir -p bad-corpus; cp in/random.wav in/empty.wav in/text.flac in/ch0.wav bad-corpus/
probe audio "train: every file bad" fail "bad-corpus" -- "$W" train bad-corpus --steps 1 --config tiny --checkpoints out/ck --threads 1
mkdir -p mixed-corpus; cp corpus/* in/random.wav mixed-corpus/; mkfifo mixed-corpus/pipe.ogg
probe audio "train: good files beside bad ones and FIFOs" ok "" -- "$W" train mixed-corpus --steps 1 --config tiny --segment 4096 --batch 2 --checkpoints out/ck --threads 1
rm -rf out/ck

# ---------------------------------------------------------------- npy
# Each broken mel is vocoded by synth; the output must not appear.
npy_probe() { # NAME FILE [EXPECT]
    probe npy "synth: $1" "${3:-fail}" "$(basename "$2")" -- "$W" synth "$2" out/n.wav --checkpoint in/model.safetensors --threads 1
    if [ "${3:-fail}" = fail ] && [ -e out/n.wav ]; then record npy "  ... an output was written for it" "" "LOST (output of a refused input)"; fi
    rm -f out/n.wav
}
D="'descr': '<f4', 'fortran_order': False"
npy in/ok.npy "{$D, 'shape': (80, 40), }" in/zeros.f32;             npy_probe "80 x 40 zeros (valid)" in/ok.npy ok
: > in/empty.npy;                                                   npy_probe "empty file" in/empty.npy
rand in/random.npy 1000 2;                                          npy_probe "random bytes" in/random.npy
{ printf '\x93NUMPX\x01\x00'; tail -c +9 in/ok.npy; } > in/magic.npy; npy_probe "wrong magic" in/magic.npy
cp in/ok.npy in/v9.npy; patch in/v9.npy 6 '\x09';                   npy_probe "version 9" in/v9.npy
cp in/ok.npy in/hlen.npy; patch in/hlen.npy 8 '\xff\xff';           npy_probe "header length past the end" in/hlen.npy
{ printf '\x93NUMPY\x02\x00'; le 4000000000 4; printf '{'; } > in/hlen2.npy; npy_probe "v2 header of 4 GB" in/hlen2.npy
npy in/garbage.npy "not a dict at all" in/zeros.f32;                npy_probe "header not a dict" in/garbage.npy
npy in/nodescr.npy "{'fortran_order': False, 'shape': (80, 40), }" in/zeros.f32; npy_probe "no descr" in/nodescr.npy
npy in/overflow.npy "{$D, 'shape': (80, 230584300921369395), }" in/zeros.f32; npy_probe "shape product overflows" in/overflow.npy
npy in/huge.npy "{$D, 'shape': (80, 4000000000), }" in/zeros.f32;  npy_probe "shape of 1.3 TB, file of 13 KB" in/huge.npy
npy in/neg.npy "{$D, 'shape': (80, -40), }" in/zeros.f32;          npy_probe "negative dimension" in/neg.npy
npy in/d3.npy "{$D, 'shape': (80, 20, 2), }" in/zeros.f32;         npy_probe "three dimensions" in/d3.npy
npy in/d1.npy "{$D, 'shape': (3200,), }" in/zeros.f32;             npy_probe "one dimension" in/d1.npy
head -c $(( 79 * 40 * 4 )) /dev/zero > in/z79; npy in/m79.npy "{$D, 'shape': (79, 40), }" in/z79; npy_probe "79 mel bands" in/m79.npy
npy in/f0.npy "{$D, 'shape': (80, 0), }" /dev/null;                npy_probe "0 frames" in/f0.npy
head -c 320 /dev/zero > in/z1; npy in/f1.npy "{$D, 'shape': (80, 1), }" in/z1; npy_probe "1 frame" in/f1.npy any
npy in/c8.npy "{'descr': '<c8', 'fortran_order': False, 'shape': (80, 20), }" in/zeros.f32; npy_probe "complex dtype" in/c8.npy
npy in/obj.npy "{'descr': '|O', 'fortran_order': False, 'shape': (80, 40), }" in/zeros.f32; npy_probe "object dtype (pickle)" in/obj.npy
npy in/u1.npy "{'descr': '|u1', 'fortran_order': False, 'shape': (80, 40), }" in/zeros.f32; npy_probe "uint8 dtype" in/u1.npy any
npy in/be.npy "{'descr': '>f4', 'fortran_order': False, 'shape': (80, 40), }" in/zeros.f32; npy_probe "big-endian float32" in/be.npy any
npy in/f8.npy "{'descr': '<f8', 'fortran_order': False, 'shape': (80, 20), }" in/zeros.f32; npy_probe "float64" in/f8.npy any
npy in/fo.npy "{'descr': '<f4', 'fortran_order': True, 'shape': (80, 40), }" in/zeros.f32; npy_probe "fortran order" in/fo.npy any
head -c 1000 in/ok.npy > in/trunc.npy;                              npy_probe "data cut short" in/trunc.npy
printf '\x00\x00\xc0\x7f' | dd of=in/zeros.f32 bs=1 seek=400 conv=notrunc status=none
npy in/nan.npy "{$D, 'shape': (80, 40), }" in/zeros.f32;           npy_probe "a NaN in the mel" in/nan.npy
printf '\x00\x00\x80\x7f' | dd of=in/zeros.f32 bs=1 seek=400 conv=notrunc status=none
npy in/inf.npy "{$D, 'shape': (80, 40), }" in/zeros.f32;           npy_probe "an Inf in the mel" in/inf.npy
printf '\x00\x00\x00\x00' | dd of=in/zeros.f32 bs=1 seek=400 conv=notrunc status=none
printf '\xf9\x02\x15\x50' | dd of=in/zeros.f32 bs=1 seek=400 conv=notrunc status=none
npy in/big.npy "{$D, 'shape': (80, 40), }" in/zeros.f32;           npy_probe "a mel value of 1e10" in/big.npy any
printf '\x00\x00\x00\x00' | dd of=in/zeros.f32 bs=1 seek=400 conv=notrunc status=none
npy in/long.npy "{$D, 'shape': (80, 40), }" in/zeros.f32; head -c 100 /dev/zero >> in/long.npy; npy_probe "100 stray bytes after the data" in/long.npy any
probe npy "synth: --noise with a NaN" fail "nan.npy" -- "$W" synth in/good.npy out/n.wav --noise in/nan.npy --checkpoint in/model.safetensors --threads 1
probe npy "synth: --noise of the wrong shape" fail "ok.npy" -- "$W" synth in/good.npy out/n.wav --noise in/ok.npy --checkpoint in/model.safetensors --threads 1
rm -f out/n.wav

# ---------------------------------------------------------------- checkpoint
ck_probe() { # NAME FILE [EXPECT]
    probe checkpoint "synth: $1" "${3:-fail}" "$(basename "$2")" -- "$W" synth in/good.npy out/c.wav --checkpoint "$2" --threads 1
    probe checkpoint "score: $1" "${3:-fail}" "$(basename "$2")" -- "$W" score "$2" in/good.wav --threads 1
    rm -f out/c.wav
}
msize=$(stat -c %s in/model.safetensors); mdata=$(st_data in/model.safetensors)
: > in/empty.safetensors;                                  ck_probe "empty file" in/empty.safetensors
rand in/random.safetensors 5000 3;                         ck_probe "random bytes" in/random.safetensors
for cut in 4 8 100 $(( mdata + 10 )) $(( msize / 2 )) $(( msize - 1 )); do head -c $cut in/model.safetensors > in/cut$cut.safetensors; ck_probe "cut at $cut of $msize bytes" in/cut$cut.safetensors; done
cp in/model.safetensors in/hlen.safetensors; patch in/hlen.safetensors 0 '\x00\x00\x00\x00\x00\x00\x00\x7f'; ck_probe "header length 2^62" in/hlen.safetensors
cp in/model.safetensors in/json.safetensors; patch in/json.safetensors 8 '[[[['; ck_probe "header not JSON" in/json.safetensors
st_edit in/model.safetensors 's/\\"n_flows\\":[0-9]*/\\"n_flows\\":1000000/' in/flows.safetensors;        ck_probe "config n_flows = 1e6" in/flows.safetensors
st_edit in/model.safetensors 's/\\"channels\\":[0-9]*/\\"channels\\":1000000000/' in/chan.safetensors;     ck_probe "config channels = 1e9" in/chan.safetensors
st_edit in/model.safetensors 's/\\"n_flows\\":[0-9]*/\\"n_flows\\":-3/' in/negflows.safetensors;          ck_probe "config n_flows = -3" in/negflows.safetensors
st_edit in/model.safetensors 's/\\"lpc_order\\":[0-9]*/\\"lpc_order\\":100000/' in/lpc.safetensors;       ck_probe "config lpc_order = 1e5" in/lpc.safetensors
st_edit in/model.safetensors 's/\\"n_mels\\":[0-9]*/\\"n_mels\\":0/' in/mels.safetensors;                 ck_probe "config n_mels = 0" in/mels.safetensors
st_edit in/model.safetensors 's/\\"hop_length\\":[0-9]*/\\"hop_length\\":0/' in/hop.safetensors;          ck_probe "config hop_length = 0" in/hop.safetensors
st_edit in/model.safetensors 's/\\"channels\\":/\\"warp_factor\\":2,\\"channels\\":/' in/unknown.safetensors; ck_probe "config with an unknown key (spec: ignored)" in/unknown.safetensors ok
st_edit in/model.safetensors 's/\\"channels\\":/\\"family\\":\\"nosuch\\",\\"channels\\":/' in/family.safetensors; ck_probe "unknown family" in/family.safetensors
st_edit in/model.safetensors 's/"data_offsets":\[\([0-9]*\),/"data_offsets":[\1000000,/' in/offsets.safetensors; ck_probe "tensor offsets past the end" in/offsets.safetensors
st_edit in/model.safetensors 's/"shape":\[[0-9]*,/"shape":[4294967296,4294967296,/' in/shape.safetensors; ck_probe "tensor shape 2^32 x 2^32" in/shape.safetensors
st_edit in/model.safetensors 's/"F32"/"F64"/' in/dtype.safetensors;                                ck_probe "a tensor's dtype changed" in/dtype.safetensors
cp in/model.safetensors in/nan.safetensors; patch in/nan.safetensors $(( mdata + 64 )) '\x00\x00\xc0\x7f'; ck_probe "a NaN weight" in/nan.safetensors
rand in/random.pt 3000 4;                                  ck_probe "random bytes named .pt" in/random.pt
{ printf 'PK\x03\x04'; head -c 200 /dev/zero; } > in/zip.pt; ck_probe "a zip header and nothing else (.pt)" in/zip.pt
probe checkpoint "import: random bytes named .pt" fail "random.pt" -- "$W" import in/random.pt out/i.safetensors
probe checkpoint "export: a cut checkpoint" fail "cut100.safetensors" -- "$W" export in/cut100.safetensors out/e.safetensors

# ---------------------------------------------------------------- config
cfg_probe() { # NAME JSON
    printf '%s\n' "$2" > in/cfg.json
    probe config "train --config: $1" fail "" -- "$W" train corpus --config in/cfg.json --steps 1 --checkpoints out/cfg --threads 1
    rm -rf out/cfg
}
cfg_probe "not JSON" '{channels: 16'
cfg_probe "channels 0" '{"channels": 0}'
cfg_probe "channels 1e9" '{"channels": 1000000000}'
cfg_probe "n_flows -1" '{"n_flows": -1}'
cfg_probe "n_group 3" '{"n_group": 3}'
cfg_probe "kernel_size 2" '{"kernel_size": 2}'
cfg_probe "hop_length 0" '{"hop_length": 0}'
cfg_probe "sample_rate 0" '{"sample_rate": 0}'
cfg_probe "a string for channels" '{"channels": "many"}'
cfg_probe "an unknown key" '{"warp_factor": 3}'
cfg_probe "family nosuch" '{"family": "nosuch"}'
cfg_probe "lpc_order 500" '{"lpc_order": 500}'
cfg_probe "coupling for WaveFlow" '{"family": "waveglow", "coupling": "cubic"}'
opt_probe() { probe config "option: $1" fail "" -- "$W" "${@:2}"; }
opt_probe "synth --sigma -1" synth in/good.npy out/o.wav --sigma -1
opt_probe "synth --sigma nan" synth in/good.npy out/o.wav --sigma nan
opt_probe "synth --sigma 1e30" synth in/good.npy out/o.wav --sigma 1e30 --checkpoint in/model.safetensors
opt_probe "train --batch 0" train corpus --batch 0
opt_probe "train --lr 0" train corpus --lr 0
probe config "option: train --segment 1 (rounded up to a hop)" any "" -- "$W" train corpus --segment 1 --config tiny --checkpoints out/seg --steps 1
opt_probe "--threads 0" mel in/good.ogg out/o.npy --threads 0
opt_probe "--threads 100000" mel in/good.ogg out/o.npy --threads 100000
opt_probe "--precision fp8" mel in/good.ogg out/o.npy --precision fp8
opt_probe "a typo'd subcommand" snyth in/good.npy out/o.wav
opt_probe "help nosuch" help nosuch
opt_probe "mel --n-mels 0" mel in/good.ogg out/o.npy --n-mels 0
rm -rf out/seg out/o.*

# ---------------------------------------------------------------- paths
cp in/good.wav in/same.wav; protect in/same.wav
probe paths "mel: output = input" fail "same.wav" -- "$W" mel in/same.wav in/same.wav
cp in/good.npy in/same.npy; protect in/same.npy
probe paths "synth: output = input" fail "same.npy" -- "$W" synth in/same.npy in/same.npy --checkpoint in/model.safetensors
protect in/same.npy
probe paths "synth: output = input by another path" fail "same.npy" -- "$W" synth in/same.npy in/../in/same.npy --checkpoint in/model.safetensors
ln -sf "$T/in/same.wav" out/link.wav; protect in/same.wav
probe paths "synth: output is a symlink to a file" fail "link.wav" -- "$W" synth in/good.npy out/link.wav --checkpoint in/model.safetensors --threads 1
probe paths "mel: output is /dev/null" fail "/dev/null" -- "$W" mel in/good.ogg /dev/null
mkdir -p out/adir; probe paths "synth: output is a folder" fail "adir" -- "$W" synth in/good.npy out/adir --checkpoint in/model.safetensors --threads 1
probe paths "synth: output in a missing folder" fail "nosuch" -- "$W" synth in/good.npy out/nosuch/x.wav --checkpoint in/model.safetensors --threads 1
probe paths "mel: output in a missing folder" fail "nosuch" -- "$W" mel in/good.ogg out/nosuch/x.npy
mkdir -p out/ro; chmod 555 out/ro
if [ "$(id -u)" -ne 0 ]; then probe paths "mel: output in a read-only folder" fail "ro" -- "$W" mel in/good.ogg out/ro/x.npy; fi
chmod 755 out/ro
mkdir -p dup; cp in/good.wav dup/a.wav; cp in/good.ogg dup/a.ogg
probe paths "mel: a.wav and a.ogg in one folder" ok "" -- "$W" mel dup out/dupmel --threads 1
n=$(ls out/dupmel 2>/dev/null | wc -l)
case " $KINDS " in *" paths "*) [ "$n" -eq 2 ] && record paths "  ... and both mels are there" "" ok || record paths "  ... and both mels are there" "" "LOST ($n files)";; esac
"$W" mel dup out/dupmel2 --threads 1 > /dev/null 2>&1
cp out/dupmel2/* dup/ 2>/dev/null; protect dup/*
probe paths "synth: batch output folder = input folder" any "" -- "$W" synth dup dup --checkpoint in/model.safetensors --threads 1
probe paths "train: --run ../escape" fail "" -- "$W" train corpus --run ../escape --checkpoints out/ck --steps 1
: > out/afile; probe paths "train: --checkpoints is a file" fail "afile" -- "$W" train corpus --checkpoints out/afile --steps 1 --config tiny
nl=$'in/new\nline.wav'; cp in/good.wav "$nl"
probe paths "mel: a newline in the file name" ok "" -- "$W" mel "$nl" out/nl.npy --threads 1
probe paths "mel: an input folder with no audio" fail "out/adir" -- "$W" mel out/adir out/emptymel

# ---------------------------------------------------------------- signals
mkdir -p small; cp corpus/*.ogg small/
# sig_train NAME SIGNAL DELAY EXPECTED_STATUS
sig_train() {
    case " $KINDS " in *" signals "*) ;; *) return ;; esac
    rm -rf out/sig
    env --default-signal=INT "$W" train small --config tiny --steps 100000 --segment 4096 --batch 2 --checkpoint-every 1 --checkpoints out/sig --run r \
        --threads 1 > /dev/null 2> "$T/.err" &
    local pid=$! status outcome=ok i
    # Stop it in the middle of its work: after its first checkpoint, a few seconds on.
    i=0; while [ $i -lt 120 ] && [ ! -e out/sig/r/latest.safetensors ]; do sleep 1; i=$((i + 1)); done
    sleep "$3"; kill -"$2" $pid; wait $pid 2> /dev/null; status=$?
    [ "$status" -ne "$4" ] && outcome="exit $status, expected $4"
    if [ "$2" != KILL ] && ! ls out/sig/r/step-*.safetensors > /dev/null 2>&1; then outcome="no checkpoint saved"; fi
    [ -n "$(leftovers out/sig)" ] && [ "$2" != KILL ] && outcome="LEFTOVER: $(leftovers out/sig | head -1)"
    if [ "$2" = KILL ]; then   # a hard stop: resume must work and clean up
        local last; last=$(grep -o '"step":[0-9]*' out/sig/r/metrics.jsonl | tail -1 | cut -d: -f2)
        timeout 120 "$W" train small --resume --steps $(( ${last:-0} + 2 )) --checkpoints out/sig --run r --threads 1 > /dev/null 2> "$T/.err2"
        local r=$?
        if [ $r -ne 0 ]; then outcome="resume after kill -9 failed: $(head -1 "$T/.err2")"
        elif [ -n "$(leftovers out/sig)" ]; then outcome="LEFTOVER after resume: $(leftovers out/sig | head -1)"
        elif [ -n "$(grep -v val_nll out/sig/r/metrics.jsonl | grep -o '"step":[0-9]*' | sort | uniq -d | head -1)" ]; then
            outcome="duplicate metrics rows"
        fi
    fi
    record signals "$1" "$status" "$outcome"
}
sig_train "train: Ctrl-C (SIGINT)" INT 2 130
sig_train "train: SIGTERM" TERM 2 143
sig_train "train: kill -9, then --resume" KILL 2.5 137
sig_batch() { # NAME SIGNAL STATUS COMMAND... : interrupt a batch job, check no partial outputs
    case " $KINDS " in *" signals "*) ;; *) return ;; esac
    # A script's background job ignores SIGINT; give it the default, as a terminal would.
    rm -rf out/batch; env --default-signal=INT "${@:4}" > /dev/null 2>&1 &
    local pid=$! outcome=ok status i=0
    # Signal it once its first output is there.
    while [ $i -lt 600 ] && [ -z "$(ls out/batch 2>/dev/null)" ]; do sleep 0.1; i=$((i + 1)); done
    sleep 0.2; kill -"$2" $pid; wait $pid; status=$?
    [ $status -ne "$3" ] && outcome="exit $status, expected $3 (finished before the signal?)"
    [ -n "$(leftovers out)" ] && outcome="LEFTOVER: $(leftovers out | head -1)"
    for f in $(find out/batch -type f); do case $f in
        *.wav) "$W" mel "$f" "$T/check.npy" > /dev/null 2>&1 || outcome="half-written $f"; rm -f "$T/check.npy";;
        *.npy) "$W" synth "$f" "$T/check.wav" --checkpoint in/model.safetensors > /dev/null 2>&1 || outcome="half-written $f";; esac
    done
    record signals "$1" "$status" "$outcome"
}
case " $KINDS " in *" signals "*) mkdir -p mels; "$W" mel corpus mels --threads 1 > /dev/null 2>&1;; esac
case " $KINDS " in *" signals "*) for k in 1 2 3 4 5 6; do mkdir -p big/$k; cp corpus/* big/$k/; done;; esac
sig_batch "synth batch: Ctrl-C" INT 130 "$W" synth mels out/batch --checkpoint in/model.safetensors --threads 1
sig_batch "synth batch: SIGTERM" TERM 143 "$W" synth mels out/batch --checkpoint in/model.safetensors --threads 1
sig_batch "mel batch (120 files): Ctrl-C" INT 130 "$W" mel big out/batch --threads 1

# ---------------------------------------------------------------- resume
rs() { probe resume "$1" "$2" "$3" -- "$W" train small "${@:4}" --checkpoints out/rs --threads 1 --segment 4096 --batch 2; }
rm -rf out/rs
rs "--resume with no run folder" fail "out/rs" --resume --run r
rs "a first run, 2 steps" ok "" --config tiny --steps 2 --run r
rs "--resume with another --config" fail "" --resume --config h16-c32 --steps 3 --run r
rs "--resume, 1 more step" ok "" --resume --steps 3 --run r
if [ -e out/rs/r/latest.safetensors ]; then
    cp -L out/rs/r/latest.safetensors "$T/latest.bak"
    "$W" export out/rs/r/latest.safetensors "$T/inference.safetensors" > /dev/null 2>&1
    rm -f out/rs/r/latest.safetensors; cp "$T/inference.safetensors" out/rs/r/latest.safetensors
    rs "--resume from an inference-only file" fail "latest" --resume --steps 4 --run r
    rm -f out/rs/r/latest.safetensors; head -c 3000 "$T/latest.bak" > out/rs/r/latest.safetensors
    rs "--resume from a cut latest" fail "latest" --resume --steps 4 --run r
    rs "a new run into an existing run's folder" fail "" --config tiny --steps 2 --run r
fi

# ---------------------------------------------------------------- summary
echo
printf '| kind | probes | passed | crashes | hangs | lost or clobbered |\n|---|---|---|---|---|---|\n'
for k in $KINDS; do
    [ -n "${total[$k]:-}" ] || continue
    printf '| %s | %d | %d | %d | %d | %d |\n' "$k" "${total[$k]}" "${pass[$k]:-0}" "${crash[$k]:-0}" "${hang[$k]:-0}" "${lost[$k]:-0}"
done
sum=0; p=0; for k in "${!total[@]}"; do sum=$((sum + total[$k])); p=$((p + ${pass[$k]:-0})); done
echo; echo "probe.sh: $p of $sum probes passed, $failed failed"
[ $failed -eq 0 ]
