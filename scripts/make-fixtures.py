#!/usr/bin/env python3
"""Writes the test fixtures under Tests/WaveFlowTests/Fixtures.

Run once by a developer (needs numpy, soundfile and librosa 0.11, and sox);
the fixtures are committed so that CI needs no Python:

    python3 scripts/make-fixtures.py
"""
import os
import subprocess

import librosa
import numpy as np
import soundfile as sf

root = os.path.join(os.path.dirname(__file__), "..")
out = os.path.join(root, "Tests", "WaveFlowTests", "Fixtures")
audio_dir = os.path.join(root, "Audio")
os.makedirs(out, exist_ok=True)


def path(*p):
    return os.path.join(out, *p)


# --- NumPy files written by NumPy itself --------------------------------
np.random.seed(0)
m = np.random.randn(3, 5).astype("<f4")
np.save(path("npy_v1_f4.npy"), m)
with open(path("npy_v2_f8_fortran.npy"), "wb") as f:
    np.lib.format.write_array(f, np.asfortranarray(m.astype("<f8")), version=(2, 0))
with open(path("npy_v3_f4.npy"), "wb") as f:
    np.lib.format.write_array(f, m, version=(3, 0))
np.save(path("npy_be_f4.npy"), m.astype(">f4"))
np.save(path("npy_i2_1d.npy"), np.array([0, 1, -1, 32767, -32768, 1234], dtype="<i2"))
np.save(path("npy_expected.npy"), m)  # the values every 2-D fixture holds
good = open(path("npy_v1_f4.npy"), "rb").read()
open(path("bad_magic.npy"), "wb").write(b"\x93NUMPZ" + good[6:])
hdr = b"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3, 5), }"
hdr += b" " * (64 - 10 - len(hdr) - 1) + b"\n"
open(path("bad_header.npy"), "wb").write(good[:8] + bytes([len(hdr), 0]) + hdr + good[128:])
np.save(path("bad_dtype.npy"), np.zeros((2, 2), dtype="<c8"))
open(path("bad_truncated.npy"), "wb").write(good[:-7])

# --- Audio in every format we read, made with sox ------------------------
def sox(*args):
    subprocess.run(["sox", *args], check=True)

sine = ["synth", "0.25", "sine", "440", "vol", "0.5"]
sox("-n", "-r", "22050", "-b", "16", path("sine_pcm16.wav"), *sine)
sox("-n", "-r", "22050", "-b", "24", path("sine_pcm24.wav"), *sine)
sox("-n", "-r", "22050", "-b", "32", "-e", "signed-integer", path("sine_pcm32.wav"), *sine)
sox("-n", "-r", "22050", "-b", "32", "-e", "floating-point", path("sine_float.wav"), *sine)
sox("-n", "-r", "22050", "-b", "16", path("sine.flac"), *sine)
sox("-n", "-r", "22050", path("sine.ogg"), *sine)
sox("-n", "-r", "22050", "-b", "16", path("sine.aiff"), *sine)
sox("-n", "-r", "22050", "-b", "16", "-c", "2", path("stereo.wav"),
    "synth", "0.25", "sine", "440", "sine", "440", "vol", "0.5", "remix", "1", "2v0")
sox("-n", "-r", "44100", "-b", "32", "-e", "floating-point", path("sine1k_44100.wav"),
    "synth", "1.0", "sine", "1000", "vol", "0.5")
open(path("not_audio.wav"), "wb").write(b"this is plain text, not a RIFF file\n" * 4)
open(path("empty.wav"), "wb").write(b"")
sox("-n", "-r", "22050", "-b", "16", path("zero_length.wav"), "trim", "0", "0")
full = open(path("sine_pcm16.wav"), "rb").read()
open(path("truncated.wav"), "wb").write(full[: len(full) // 2])
# A cut-off Ogg Vorbis stream (past its headers): libsndfile 1.2.0 reports its
# length as INT64_MAX.
clip = open(os.path.join(audio_dir, "tank__sv-v-chtel.ogg"), "rb").read()
open(path("truncated.ogg"), "wb").write(clip[:8000])

# --- Mel spectrograms from librosa ---------------------------------------
def mel(y, sr, n_fft, hop, win, n_mels, fmin, fmax):
    s = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop, win_length=win, window="hann",
        center=True, pad_mode="reflect", power=1.0, n_mels=n_mels, fmin=fmin,
        fmax=fmax, htk=False, norm="slaney")
    return s.astype("<f4")

np.save(path("fb_default.npy"), librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000).astype("<f4"))
np.save(path("fb_16k.npy"), librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=0, fmax=8000).astype("<f4"))
clips = ["alibaba__kni-v-ber.ogg", "cannons__del-v-dve.ogg", "windoze__win-v-hra.ogg"]
for i, name in enumerate(clips):
    pcm, sr = sf.read(os.path.join(audio_dir, name), dtype="int16")
    pcm = pcm[: 2 * sr]  # two seconds are enough
    np.save(path(f"clip{i}_pcm.npy"), pcm.astype("<i2"))
    y = pcm.astype(np.float32) / 32768
    np.save(path(f"clip{i}_mel.npy"), mel(y, 22050, 1024, 256, 1024, 80, 0.0, 8000.0))
    np.save(path(f"clip{i}_mel16k.npy"), mel(y, 16000, 512, 128, 400, 40, 0.0, 8000.0))

# Resampling reference: librosa's soxr_hq on a real clip.
pcm = np.load(path("clip0_pcm.npy")).astype(np.float32) / 32768
np.save(path("clip0_resampled16k.npy"),
        librosa.resample(pcm, orig_sr=22050, target_sr=16000, res_type="soxr_hq").astype("<f4"))
print("fixtures written to", out)
