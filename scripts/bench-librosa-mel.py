#!/usr/bin/env python3
"""Times librosa's log-mel (the spec's exact call) on one file, single-threaded,
for comparison with `waveflow bench --mel-audio FILE` (BENCHMARKS.md).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python3 scripts/bench-librosa-mel.py FILE
"""
import sys
import time

import librosa
import numpy as np
import soundfile as sf

y, sr = sf.read(sys.argv[1], dtype="float32")
assert sr == 22050
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    m = librosa.feature.melspectrogram(
        y=y, sr=22050, n_fft=1024, hop_length=256, win_length=1024, window="hann", center=True,
        pad_mode="reflect", power=1.0, n_mels=80, fmin=0.0, fmax=8000.0, htk=False, norm="slaney")
    np.log(np.maximum(m, 1e-5))
    best = min(best, time.perf_counter() - t0)
print(f"librosa {librosa.__version__}: {len(y) / sr:.1f} s of audio in {best * 1e3:.2f} ms: "
      f"{len(y) / sr / best:.0f} s of audio per second")
