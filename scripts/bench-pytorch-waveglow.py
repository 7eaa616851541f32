#!/usr/bin/env python3
"""PyTorch reference timing of a WaveGlow (MODEL-SPEC section 12) on the CPU,
to compare with the Swift implementation's `waveflow bench` on the same machine.

What it measures, like Sources/WaveFlow/Training/Benchmark.swift (the fastest of
--repeats runs after one warm-up, random weights and inputs):
  train  one whole optimizer step at --batch x --segment samples: forward NLL
         (section 7 with the log-dets, nats per sample, mean over the batch),
         backward, torch.optim.Adam step. samples/s = batch*segment / time.
         (No weight norm and no gradient clipping, which the Swift step has.)
  synth  the inverse of the whole model (upsampler included) from a random mel
         of --seconds (frames = seconds*22050/hop) under torch.inference_mode();
         the latent is drawn outside the timing. samples/s = frames*hop / time.
  RTF    time / seconds of audio processed (below 1 is faster than real time).
  --bf16 runs the forward pass (train) and the inverse (synth) under
         torch.autocast("cpu", dtype=torch.bfloat16): bf16 products with
         Float32 elsewhere, PyTorch's counterpart of `--precision bf16`.

The model: ConvTranspose1d upsampler M->M (kernel 4*hop, stride hop), squeeze
into groups of G, K flows of [invertible 1x1 conv, affine coupling with a WN
stack of L dilated convs of C channels], S early-output channels every E flows.
`end` is random and small (not zero) so the coupling does real arithmetic.

Run (CPU PyTorch; `pip install "torch==2.13.0+cpu"` on the project machine):
    python3 scripts/bench-pytorch-waveglow.py --preset wg-c32,wg-c64 --threads 2
    python3 scripts/bench-pytorch-waveglow.py --channels 64 --flows 12 --check

--check first verifies that the inverse inverts the forward (max |x - x'|,
float32, ~1e-4 expected) and that the log-det equals log|det J| of the
autograd Jacobian on a tiny input (float64). A manual tool: not run by CI.
"""
import argparse
import contextlib
import numpy as np
import os
import resource
import math
import time

import torch
import torch.nn.functional as Fn
from torch import nn

SR = 22050
PRESETS = {"wg-c32": 32, "wg-c64": 64, "wg-c128": 128, "wg-c256": 256, "wg-c512": 512}


class WN(nn.Module):
    """The WaveNet-like stack of section 12.4: (A0, Cg) -> out [B, n_out, T/G]."""

    def __init__(self, n_in, n_out, n_cond, C, L):
        super().__init__()
        self.C, self.L = C, L
        self.start = nn.Conv1d(n_in, C, 1)
        self.cond_layer = nn.Conv1d(n_cond, 2 * C * L, 1)
        self.in_layers = nn.ModuleList(nn.Conv1d(C, 2 * C, 3, dilation=2 ** i, padding=2 ** i) for i in range(L))
        self.res_skip_layers = nn.ModuleList(nn.Conv1d(C, 2 * C if i < L - 1 else C, 1) for i in range(L))
        self.end = nn.Conv1d(C, n_out, 1)
        with torch.no_grad():  # small but not zero: log_s, t of order 1e-2
            self.end.weight.normal_(0, 0.01 / math.sqrt(C))
            self.end.bias.normal_(0, 0.01)

    def forward(self, a0, cg):
        C = self.C
        a, s, skip = self.start(a0), self.cond_layer(cg), 0
        for i in range(self.L):
            y = self.in_layers[i](a) + s[:, 2 * C * i:2 * C * (i + 1)]
            r = self.res_skip_layers[i](torch.tanh(y[:, :C]) * torch.sigmoid(y[:, C:]))
            if i < self.L - 1:
                a, skip = a + r[:, :C], skip + r[:, C:]
            else:
                skip = skip + r
        return self.end(skip)


class WaveGlow(nn.Module):
    def __init__(self, C=64, K=12, L=8, G=8, E=4, S=2, M=80, hop=256):
        super().__init__()
        self.K, self.G, self.E, self.S, self.hop = K, G, E, S, hop
        self.upsample = nn.ConvTranspose1d(M, M, 4 * hop, stride=hop)
        self.ws, self.wn, c = nn.ParameterList(), nn.ModuleList(), G
        for k in range(K):
            if k > 0 and k % E == 0:
                c -= S
            assert c % 2 == 0 and c > 0, f"flow {k}: {c} channels left (must be even and positive)"
            q, _ = torch.linalg.qr(torch.randn(c, c))
            if torch.det(q) < 0:
                q[:, 0] = -q[:, 0]
            self.ws.append(nn.Parameter(q))  # W_k [c_k, c_k], det +1
            self.wn.append(WN(c // 2, c, M * G, C, L))

    def condition(self, mel, T):
        """Section 12.1: upsample, keep T columns, group: Cg [B, M*G, T/G]."""
        u = self.upsample(mel)[:, :, :T]
        B, M, _ = u.shape
        return u.reshape(B, M, T // self.G, self.G).transpose(2, 3).reshape(B, M * self.G, T // self.G)

    def forward(self, x, mel):
        """x [B, T] -> (z [B, G, T/G], log p(x) [B])."""
        B, T = x.shape
        cg, a = self.condition(mel, T), x.reshape(B, T // self.G, self.G).transpose(1, 2)
        early, logdet = [], x.new_zeros(B)
        for k in range(self.K):
            if k > 0 and k % self.E == 0:
                early.append(a[:, :self.S])
                a = a[:, self.S:]
            W = self.ws[k]
            a = Fn.conv1d(a, W.unsqueeze(-1))
            logdet = logdet + (T // self.G) * torch.linalg.slogdet(W)[1]
            h = a.shape[1] // 2
            out = self.wn[k](a[:, :h], cg)
            log_s = out[:, h:]
            a = torch.cat([a[:, :h], a[:, h:] * torch.exp(log_s) + out[:, :h]], 1)
            logdet = logdet + log_s.sum((1, 2))
        z = torch.cat(early + [a], 1)
        return z, (-0.5 * z * z - 0.5 * math.log(2 * math.pi)).sum((1, 2)) + logdet

    def infer(self, mel, z):
        """Section 12.6: mel [B, M, F], z [B, F*hop] -> audio [B, F*hop]."""
        B, T = z.shape
        cg, Z = self.condition(mel, T), z.reshape(B, T // self.G, self.G).transpose(1, 2)
        n_early = sum(1 for k in range(1, self.K) if k % self.E == 0)
        a = Z[:, n_early * self.S:]
        for k in reversed(range(self.K)):
            h = a.shape[1] // 2
            out = self.wn[k](a[:, :h], cg)
            a = torch.cat([a[:, :h], (a[:, h:] - out[:, :h]) * torch.exp(-out[:, h:])], 1)
            a = Fn.conv1d(a, torch.linalg.inv(self.ws[k]).unsqueeze(-1))
            if k > 0 and k % self.E == 0:
                j = k // self.E
                a = torch.cat([Z[:, (j - 1) * self.S:j * self.S], a], 1)
        return a.transpose(1, 2).reshape(B, T)


def best_time(repeats, body):
    """Wall time of the fastest of `repeats` runs of `body`, after one warm-up."""
    body()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - t0)
    return best


def check(cfg, M, hop):
    torch.manual_seed(0)
    model = WaveGlow(**cfg, M=M, hop=hop)
    F = 8
    mel, x = torch.rand(1, M, F) * -8, 0.1 * torch.randn(1, F * hop)
    with torch.no_grad():
        z, _ = model(x, mel)
        x2 = model.infer(mel, z.transpose(1, 2).reshape(1, -1))
    err = (x - x2).abs().max().item()
    print(f"check: inverse(forward(x)) max |x - x'| = {err:.2e} (float32, {F * hop} samples)")
    tiny = WaveGlow(**{**cfg, "C": 8, "L": 3}, M=4, hop=hop).double()  # log-det vs autograd Jacobian
    T, mel_t = 2 * cfg["G"], torch.rand(1, 4, 2, dtype=torch.float64)
    x_t = 0.1 * torch.randn(1, T, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: tiny(v.unsqueeze(0), mel_t)[0].transpose(1, 2).reshape(-1), x_t[0])
    _, logp = tiny(x_t, mel_t)
    z_t = tiny(x_t, mel_t)[0]
    ld = (logp + (0.5 * z_t * z_t + 0.5 * math.log(2 * math.pi)).sum()).item()
    print(f"check: log-det {ld:.10f} vs log|det J| {torch.linalg.slogdet(J)[1].item():.10f} (float64, T={T})")
    assert err < 1e-3, "inverse does not invert the forward"


def to_published(sd):
    """This script's state dict in the names of the authors' modules (MODEL-SPEC 12.7):
    ws.k [c, c] -> convinv.k.conv.weight [c, c, 1], wn.k.* -> WN.k.*."""
    out = {}
    for k, v in sd.items():
        if k.startswith("ws."):
            out[f"convinv.{k.split('.')[1]}.conv.weight"] = v[:, :, None].contiguous()
        else:
            out["WN." + k[3:] if k.startswith("wn.") else k] = v
    return out


def from_published(sd):
    """The inverse of `to_published`."""
    out = {}
    for k, v in sd.items():
        if k.startswith("convinv."):
            out[f"ws.{k.split('.')[1]}"] = v[:, :, 0]
        else:
            out["wn." + k[3:] if k.startswith("WN.") else k] = v
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", help="comma-separated: " + ", ".join(PRESETS))
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--flows", type=int, default=12)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--early-every", type=int, default=4)
    p.add_argument("--early-size", type=int, default=2)
    p.add_argument("--mels", type=int, default=80)
    p.add_argument("--hop", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--segment", type=int, default=16000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--phases", default="train,synth")
    p.add_argument("--check", action="store_true")
    p.add_argument("--pt", help="a checkpoint in the authors' state-dict form ({'model': state_dict}): loaded when it "
                   "exists, else written from the random model (then give it to `waveflow synth --checkpoint`)")
    p.add_argument("--mel", help="vocode this .npy mel [M, F] (synth only) instead of a random one")
    p.add_argument("--bf16", action="store_true", help="bf16 products (torch.autocast on the CPU)")
    a = p.parse_args()
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()
    torch.set_num_threads(a.threads)
    base = dict(C=a.channels, K=a.flows, L=a.layers, G=a.group, E=a.early_every, S=a.early_size)
    if a.preset:
        runs = [(n, {**base, "C": PRESETS[n], "K": 12, "L": 8, "G": 8, "E": 4, "S": 2}) for n in a.preset.split(",")]
    else:
        runs = [(f"C{a.channels}-K{a.flows}-L{a.layers}-G{a.group}", base)]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu} ({torch.backends.cpu.get_cpu_capability()}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          + ("bf16 autocast" if a.bf16 else "fp32"))
    if a.check:
        check(runs[0][1], a.mels, a.hop)
    assert a.segment % a.group == 0 and a.hop % a.group == 0
    print(f"{'preset':<16}{'phase':<7}{'params':>9}{'samples/s':>12}{'RTF':>9}{'s/run':>9}", flush=True)
    for name, cfg in runs:
        torch.manual_seed(1)
        model = WaveGlow(**cfg, M=a.mels, hop=a.hop)
        if a.pt and os.path.exists(a.pt):
            model.load_state_dict(from_published(torch.load(a.pt, map_location="cpu")["model"]))
        elif a.pt:
            torch.save({"model": to_published(model.state_dict()), "iteration": 0}, a.pt)
        params = sum(q.numel() for q in model.parameters())
        for phase in a.phases.split(","):
            if phase == "train":
                frames = a.segment // a.hop
                assert (frames + 3) * a.hop >= a.segment
                x, mel = 0.1 * torch.randn(a.batch, a.segment), torch.rand(a.batch, a.mels, frames) * -8
                opt = torch.optim.Adam(model.parameters(), lr=1e-4)

                def step():
                    opt.zero_grad(set_to_none=True)
                    with precision:
                        _, logp = model(x, mel)
                    (-logp / a.segment).mean().backward()
                    opt.step()
                t, n = best_time(a.repeats, step), a.batch * a.segment
            else:
                frames = int(a.seconds * SR) // a.hop
                mel = torch.rand(1, a.mels, frames) * -8
                if a.mel:
                    mel = torch.from_numpy(np.load(a.mel).astype(np.float32))[None]
                    frames = mel.shape[2]
                z = 0.7 * torch.randn(1, frames * a.hop)

                def synth():
                    with torch.inference_mode(), precision:
                        model.infer(mel, z)
                t, n = best_time(a.repeats, synth), frames * a.hop
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{name:<16}{phase:<7}{params / 1e6:>8.2f}M{n / t:>12.0f}{t / (n / SR):>9.3f}{t:>9.3f}  peak {peak:.0f} MB",
                  flush=True)


if __name__ == "__main__":
    main()
