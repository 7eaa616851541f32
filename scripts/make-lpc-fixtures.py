#!/usr/bin/env python3
"""Writes the LPC-front fixtures (MODEL-SPEC section 11) from an independent
NumPy/SciPy implementation: the inverse real FFT by numpy.fft.irfft and the
normal equations by scipy.linalg.solve_toeplitz (no Levinson recursion of
ours). Run once by a developer; the outputs are committed, CI needs no Python:

    python3 scripts/make-lpc-fixtures.py

Reads Tests/WaveFlowTests/Fixtures/clip0_mel.npy (its log is the feature) and clip0_pcm.npy (made by
make-fixtures.py) and writes lpc_clip0_{coefficients,gains,excitation,
synthesis_input,synthesis}.npy beside them.
"""
import os

import numpy as np
from scipy.linalg import solve_toeplitz

fixtures = os.path.join(os.path.dirname(__file__), "..", "Tests", "WaveFlowTests", "Fixtures")
sr, n_fft, hop, win, n_mels, fmin, fmax, order = 22050, 1024, 256, 1024, 80, 0.0, 8000.0, 16


def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27)
    return np.where(f >= 1000.0, log, lin)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    lin = (200.0 / 3) * m
    log = 1000.0 * np.exp((np.log(6.4) / 27) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def triangles():
    """[M, K] mel triangles with peak 1 and the Slaney-normalised bank."""
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    tri = np.maximum(0, np.minimum(lower, upper))
    # The Slaney bank as librosa stores it (float32 triangle, then scaled).
    bank = (tri.astype(np.float32).astype(np.float64) * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)
    return tri, bank.astype(np.float64)


def envelope(logmel):
    tri, bank = triangles()
    s = tri.T @ (np.exp(logmel.astype(np.float64)) / bank.sum(axis=1)[:, None])  # [K, F]
    w_power = 3 * win / 8
    power = np.maximum(s, 1e-5) ** 2 / w_power
    r = np.fft.irfft(power, n=n_fft, axis=0)[: order + 1]  # [p+1, F]
    j = np.arange(order + 1)
    r = r * np.exp(-0.5 * (2 * np.pi * 60 * j / sr) ** 2)[:, None]
    r[0] *= 1.0001
    frames = logmel.shape[1]
    coeffs = np.zeros((frames, order + 1))
    gains = np.zeros(frames)
    for f in range(frames):
        a = solve_toeplitz(r[:order, f], -r[1:, f])
        coeffs[f] = np.concatenate([[1.0], a])
        gains[f] = np.sqrt(max(r[0, f] + a @ r[1:, f], 1e-14))
    return coeffs, gains


def frame_of(t, frames):
    return np.minimum((t + hop // 2) // hop, frames - 1)


def analyse(x, coeffs, gains):
    frames = coeffs.shape[0]
    t = np.arange(len(x))
    f = frame_of(t, frames)
    padded = np.concatenate([np.zeros(order), x.astype(np.float64)])
    e = np.zeros(len(x))
    for k in range(order + 1):
        e += coeffs[f, k] * padded[order - k: order - k + len(x)]
    return e / gains[f]


def synthesise(e, coeffs, gains):
    frames = coeffs.shape[0]
    x = np.zeros(len(e) + order)
    for t in range(len(e)):
        f = frame_of(t, frames)
        x[t + order] = gains[f] * e[t] - coeffs[f, 1:] @ x[t: t + order][::-1]
    return x[order:]


def main():
    # clip0_mel.npy is librosa's (linear) mel; the model's feature is its log.
    logmel = np.log(np.maximum(np.load(os.path.join(fixtures, "clip0_mel.npy")).astype(np.float64), 1e-5)).astype(np.float32)
    pcm = np.load(os.path.join(fixtures, "clip0_pcm.npy")).astype(np.float64) / 32768
    coeffs, gains = envelope(logmel)
    x = pcm.astype(np.float32).astype(np.float64)
    e = analyse(x, coeffs, gains)
    rng = np.random.default_rng(0)
    z = rng.standard_normal(8192).astype(np.float32)
    y = synthesise(z.astype(np.float64), coeffs, gains)
    # Check the synthesis is the analysis' inverse before writing anything.
    back = analyse(y, coeffs, gains)
    assert np.max(np.abs(back - z)) < 1e-6 * max(1.0, np.max(np.abs(z)))
    np.save(os.path.join(fixtures, "lpc_clip0_coefficients.npy"), coeffs.astype("<f8"))
    np.save(os.path.join(fixtures, "lpc_clip0_gains.npy"), gains.astype("<f8"))
    np.save(os.path.join(fixtures, "lpc_clip0_excitation.npy"), e.astype("<f4"))
    np.save(os.path.join(fixtures, "lpc_clip0_synthesis_input.npy"), z.astype("<f4"))
    np.save(os.path.join(fixtures, "lpc_clip0_synthesis.npy"), y.astype("<f4"))
    print("frames", logmel.shape[1], "gain range", gains.min(), gains.max(),
          "excitation rms", np.sqrt(np.mean(e ** 2)), "x rms", np.sqrt(np.mean(x ** 2)))


if __name__ == "__main__":
    main()
