#!/usr/bin/env python3
"""Writes the WaveGlow-family fixtures (MODEL-SPEC section 12, likelihood as in
section 7, checkpoint as in sections 10 and 12.7) from an independent NumPy
implementation written from the spec alone (plain loops and einsum, Float64).
Run once by a developer; the outputs are committed, CI needs no Python:

    python3 scripts/make-waveglow-fixtures.py

Builds three small random models (G 8, K 6, E 2, S 2, L 3, C 8, M 16, hop 64):
"affine", "additive" (NICE coupling) and "alternate" (affine, alternate_halves),
and writes into Tests/WaveFlowTests/Fixtures/waveglow/:

    <variant>.safetensors          the model (F32 tensors, config in __metadata__)
    mel.npy [16, 8] <f4            shared log-mel input
    audio.npy [480] <f4            shared audio (scored against mel.npy)
    latent.npy [512] <f4           shared latent, used as Z directly (sigma 1)
    <variant>_z.npy [480] <f8      latent of audio.npy given mel.npy
    <variant>_logdet.npy [1] <f8   total log-determinant of x -> z
    <variant>_nll.npy [1] <f8      NLL in nats per sample
    <variant>_synth.npy [512] <f8  synthesis from latent.npy and mel.npy

The references are computed from the F32 weights as read back from the written
files. The script asserts that synthesis and scoring invert each other and that
the analytic log-determinant equals log|det| of the full Jacobian of x -> z
(complex-step derivatives, cross-checked by central differences).
"""
import json
import os
import struct

import numpy as np

out_dir = os.path.join(os.path.dirname(__file__), "..", "Tests", "WaveFlowTests", "Fixtures", "waveglow")
BASE = dict(family="waveglow", sample_rate=22050, n_fft=256, hop_length=64, win_length=256, n_mels=16,
            fmin=0.0, fmax=8000.0, n_group=8, n_flows=6, n_early_every=2, n_early_size=2,
            n_layers=3, channels=8, kernel_size=3)
VARIANTS = {"affine": (11, "affine", False), "additive": (12, "additive", False), "alternate": (13, "affine", True)}
END_SCALE = 0.5  # end layer weights/bias ~ U(+-END_SCALE/sqrt(C)): couplings visible, log_s moderate


def channel_counts(cfg):
    c, counts = cfg["n_group"], []
    for k in range(cfg["n_flows"]):
        if k > 0 and k % cfg["n_early_every"] == 0:
            c -= cfg["n_early_size"]
        counts.append(c)
    return counts


# --- random model --------------------------------------------------------
def make_weights(cfg, seed):
    """[(name, float32 array)] in the file order of section 12.7."""
    rng = np.random.default_rng(seed)
    M, hop, G, L, C = cfg["n_mels"], cfg["hop_length"], cfg["n_group"], cfg["n_layers"], cfg["channels"]

    def u(bound, *shape):
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    # Each output column of the upsampler sums M bands x 4 overlapping frames.
    t = [("upsample.weight", u(1 / np.sqrt(4 * M), M, M, 4 * hop)), ("upsample.bias", u(1 / np.sqrt(4 * M), M))]
    for k, c in enumerate(channel_counts(cfg)):
        nh = c // 2
        q, _ = np.linalg.qr(rng.standard_normal((c, c)))
        w = q + 0.2 * rng.standard_normal((c, c)) / np.sqrt(c)
        if (np.linalg.det(w) < 0) != (k == 1):  # flow 1 gets det < 0, the others det > 0
            w[0] *= -1
        t.append((f"convinv.{k}.conv.weight", w.astype(np.float32)[:, :, None]))
        t += [(f"WN.{k}.start.weight", u(1 / np.sqrt(nh), C, nh, 1)), (f"WN.{k}.start.bias", u(1 / np.sqrt(nh), C))]
        t += [(f"WN.{k}.cond_layer.weight", u(1 / np.sqrt(M * G), 2 * C * L, M * G, 1)),
              (f"WN.{k}.cond_layer.bias", u(1 / np.sqrt(M * G), 2 * C * L))]
        for i in range(L):
            t += [(f"WN.{k}.in_layers.{i}.weight", u(1 / np.sqrt(3 * C), 2 * C, C, 3)),
                  (f"WN.{k}.in_layers.{i}.bias", u(1 / np.sqrt(3 * C), 2 * C))]
            r = 2 * C if i < L - 1 else C
            t += [(f"WN.{k}.res_skip_layers.{i}.weight", u(1 / np.sqrt(C), r, C, 1)),
                  (f"WN.{k}.res_skip_layers.{i}.bias", u(1 / np.sqrt(C), r))]
        e = 2 * nh if cfg["coupling"] == "affine" else nh
        t += [(f"WN.{k}.end.weight", u(END_SCALE / np.sqrt(C), e, C, 1)), (f"WN.{k}.end.bias", u(END_SCALE / np.sqrt(C), e))]
    return t


def write_safetensors(path, tensors, cfg):
    config = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    header = {"__metadata__": {"format": "waveflow", "format_version": "1", "config": config}}
    blobs, offset = [], 0
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    """The stored tensors as float64 and the config dict."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = header.pop("__metadata__")
    params = {}
    for name, e in header.items():
        assert e["dtype"] == "F32"
        b0, b1 = e["data_offsets"]
        params[name] = np.frombuffer(body[b0:b1], dtype="<f4").reshape(e["shape"]).astype(np.float64)
    return params, json.loads(meta["config"])


# --- the model of section 12 ---------------------------------------------
def upsample(p, mel, hop):
    """ConvTranspose1d(M -> M, kernel 4*hop, stride hop), weight [in, out, kernel]."""
    W, b = p["upsample.weight"], p["upsample.bias"]
    M, F = mel.shape
    K = W.shape[2]
    u = np.zeros((W.shape[1], hop * (F - 1) + K)) + b[:, None]
    for f in range(F):
        u[:, f * hop:f * hop + K] += np.einsum("i,iok->ok", mel[:, f], W)
    return u


def group(u, T, G):
    """Cg[m*G + j, n] = u[m, n*G + j] over the first T columns."""
    M = u.shape[0]
    return u[:, :T].reshape(M, T // G, G).transpose(0, 2, 1).reshape(M * G, T // G)


def squeeze(x, G):  # A[j, n] = x[n*G + j]
    return x.reshape(-1, G).T


def unsqueeze(A):  # x[n*G + j] = A[j, n]
    return A.T.reshape(-1)


def conv1x1(p, name, a):
    return np.einsum("oc,cn->on", p[name + ".weight"][:, :, 0], a) + p[name + ".bias"][:, None]


def dilated_conv(p, name, a, d):
    """y[o, n] = b[o] + sum_{c,k} W[o, c, k] a[c, n + (k-1)*d], zeros outside."""
    W, b = p[name + ".weight"], p[name + ".bias"]
    n = a.shape[1]
    ap = np.concatenate([np.zeros((a.shape[0], d)), a, np.zeros((a.shape[0], d))], axis=1)
    y = np.zeros((W.shape[0], n), dtype=a.dtype) + b[:, None]
    for k in range(3):
        y = y + np.einsum("oc,cn->on", W[:, :, k], ap[:, k * d:k * d + n])
    return y


def wn(p, cfg, k, a0, Cg):
    C, L = cfg["channels"], cfg["n_layers"]
    a = conv1x1(p, f"WN.{k}.start", a0)
    s = conv1x1(p, f"WN.{k}.cond_layer", Cg)
    skip = 0
    for i in range(L):
        y = dilated_conv(p, f"WN.{k}.in_layers.{i}", a, 2 ** i) + s[2 * C * i:2 * C * (i + 1)]
        g = np.tanh(y[:C]) * (1 / (1 + np.exp(-y[C:])))
        r = conv1x1(p, f"WN.{k}.res_skip_layers.{i}", g)
        if i < L - 1:
            a = a + r[:C]
            skip = skip + r[C:]
        else:
            skip = skip + r
    return conv1x1(p, f"WN.{k}.end", skip)


def coupling(p, cfg, k, A, Cg):
    """(transformed slice, t, log_s) of flow k's coupling, WN on the other half."""
    c = A.shape[0]
    nh = c // 2
    tr, inp = slice(nh, c), slice(0, nh)
    if cfg["alternate_halves"] and k % 2 == 1:
        tr, inp = inp, tr
    out = wn(p, cfg, k, A[inp], Cg)
    t = out[:nh]
    log_s = out[nh:2 * nh] if cfg["coupling"] == "affine" else np.zeros_like(t)
    return tr, t, log_s


def forward(p, cfg, x, Cg):
    """x [T] -> (z [T], logdet). Works for complex x (complex-step derivatives)."""
    G, E, S = cfg["n_group"], cfg["n_early_every"], cfg["n_early_size"]
    A, early, logdet = squeeze(x, G), [], 0.0
    for k in range(cfg["n_flows"]):
        if k > 0 and k % E == 0:
            early.append(A[:S])
            A = A[S:]
        W = p[f"convinv.{k}.conv.weight"][:, :, 0]
        A = np.einsum("ij,jn->in", W, A)
        logdet += A.shape[1] * np.linalg.slogdet(W)[1]
        tr, t, log_s = coupling(p, cfg, k, A, Cg)
        A = A.copy()
        A[tr] = A[tr] * np.exp(log_s) + t
        logdet += log_s.real.sum()
    return unsqueeze(np.concatenate(early + [A], axis=0)), logdet


def inverse(p, cfg, z, Cg):
    """Section 12.6: z [T] laid out as Z -> x [T]."""
    G, E, S, K = cfg["n_group"], cfg["n_early_every"], cfg["n_early_size"], cfg["n_flows"]
    Z = squeeze(z, G)
    counts = channel_counts(cfg)
    A = Z[G - counts[-1]:]
    for k in range(K - 1, -1, -1):
        tr, t, log_s = coupling(p, cfg, k, A, Cg)
        A = A.copy()
        A[tr] = (A[tr] - t) * np.exp(-log_s)
        A = np.linalg.inv(p[f"convinv.{k}.conv.weight"][:, :, 0]) @ A
        if k > 0 and k % E == 0:
            e = G - counts[k]  # channels that left up to flow k: Z[e-S:e] is this output
            A = np.concatenate([Z[e - S:e], A], axis=0)
    return unsqueeze(A)


def nll(z, logdet):
    return -(np.sum(-z ** 2 / 2 - np.log(2 * np.pi) / 2) + logdet) / len(z)


def jacobian_check(p, cfg, x, Cg):
    """log|det| of the full Jacobian of x -> z, complex step and central differences."""
    T = len(x)
    Jc, Jd = np.zeros((T, T)), np.zeros((T, T))
    for j in range(T):
        e = np.zeros(T)
        e[j] = 1.0
        Jc[:, j] = forward(p, cfg, x + 1e-30j * e, Cg)[0].imag / 1e-30
        Jd[:, j] = (forward(p, cfg, x + 1e-5 * e, Cg)[0] - forward(p, cfg, x - 1e-5 * e, Cg)[0]) / 2e-5
    return np.linalg.slogdet(Jc)[1], np.linalg.slogdet(Jd)[1], np.abs(Jc - Jd).max()


def main():
    os.makedirs(out_dir, exist_ok=True)
    path = lambda name: os.path.join(out_dir, name)
    hop, G = BASE["hop_length"], BASE["n_group"]
    rng = np.random.default_rng(2024)
    mel = rng.uniform(-6.0, 0.0, size=(16, 8)).astype("<f4")
    ts = np.arange(480) / BASE["sample_rate"]
    audio = 0.3 * (0.5 * np.sin(2 * np.pi * 180 * ts) + 0.3 * np.sin(2 * np.pi * 410 * ts + 1.0)
                   + 0.2 * np.sin(2 * np.pi * 1270 * ts + 2.0)) + 0.02 * rng.standard_normal(480)
    audio = audio.astype("<f4")
    latent = (0.8 * rng.standard_normal(8 * hop)).astype("<f4")
    np.save(path("mel.npy"), mel)
    np.save(path("audio.npy"), audio)
    np.save(path("latent.npy"), latent)
    mel, audio, latent = (np.load(path(n)).astype(np.float64) for n in ("mel.npy", "audio.npy", "latent.npy"))
    F, T = mel.shape[1], len(audio)
    assert F == 1 + T // hop and T % G == 0 and len(latent) == F * hop

    for variant, (seed, coupling_kind, alternate) in VARIANTS.items():
        cfg = dict(BASE, coupling=coupling_kind, alternate_halves=alternate)
        write_safetensors(path(f"{variant}.safetensors"), make_weights(cfg, seed), cfg)
        p, cfg = read_safetensors(path(f"{variant}.safetensors"))
        u = upsample(p, mel, hop)
        assert u.shape == (16, hop * (F - 1) + 4 * hop)
        z, logdet = forward(p, cfg, audio, group(u, T, G))
        synth = inverse(p, cfg, latent, group(u, F * hop, G))
        # Round trips in Float64.
        err_z = np.abs(forward(p, cfg, synth, group(u, F * hop, G))[0] - latent).max()
        err_x = np.abs(inverse(p, cfg, z, group(u, T, G)) - audio).max()
        assert err_z < 1e-9 and err_x < 1e-9, (variant, err_z, err_x)
        # Brute-force Jacobian on a short input: 128 samples, 3 frames.
        xs, ms = audio[:128], mel[:, :3]
        cs = group(upsample(p, ms, hop), 128, G)
        ld = forward(p, cfg, xs, cs)[1]
        ld_c, ld_d, dj = jacobian_check(p, cfg, xs, cs)
        assert abs(ld_c - ld) < 1e-9 and abs(ld_d - ld) < 1e-6, (variant, ld, ld_c, ld_d)
        v = nll(z, logdet)
        np.save(path(f"{variant}_z.npy"), z)
        np.save(path(f"{variant}_logdet.npy"), np.array([logdet]))
        np.save(path(f"{variant}_nll.npy"), np.array([v]))
        np.save(path(f"{variant}_synth.npy"), synth)
        log_s = [coupling(p, cfg, 0, np.einsum("ij,jn->in", p["convinv.0.conv.weight"][:, :, 0], squeeze(audio, G)),
                          group(u, T, G))[2]]
        dets = [np.linalg.det(p[f"convinv.{k}.conv.weight"][:, :, 0]) for k in range(cfg["n_flows"])]
        print(f"{variant}: nll {v:.12f}  logdet {logdet:.12f}  |z| max {np.abs(z).max():.3f}  "
              f"synth max {np.abs(synth).max():.3f}  flow-0 log_s std {log_s[0].std():.3f}")
        print(f"  det W_k {np.round(dets, 4).tolist()}  round trips z {err_z:.1e} x {err_x:.1e}")
        print(f"  Jacobian T=128: analytic {ld:.12f}  complex step {ld_c:.12f}  central diff {ld_d:.12f}"
              f"  (max |J_cs - J_cd| {dj:.1e})")


if __name__ == "__main__":
    main()
