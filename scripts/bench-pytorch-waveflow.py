#!/usr/bin/env python3
"""PyTorch reference timing of WaveFlow (MODEL-SPEC sections 3-9) on the CPU,
to compare with the Swift implementation's `waveflow bench` on the same machine.

What it measures, like Sources/WaveFlow/Training/Benchmark.swift (the fastest of
--repeats runs after one warm-up, random weights and inputs; each row in a fresh
process so that its peak memory is its own, as `waveflow bench` does):
  train  one whole optimizer step at --batch x --segment samples of random audio
         and a random mel of segment/hop frames: forward NLL (section 7, nats
         per sample, mean over the batch), backward through weight
         normalisation (torch.nn.utils.parametrizations.weight_norm on every flow
         weight but `output`, as the Swift trainer), clip_grad_norm_(10), Adam.
         samples/s = batch*segment / time.
  synth  the inverse of the whole model (upsampler included) from a random mel
         of --seconds (frames = seconds*22050/hop), batch 1, under
         torch.inference_mode(), weights without weight norm (the effective
         weights a checkpoint stores); the latent (sigma 0.7) is drawn outside
         the timing. samples/s = frames*hop / time.
  RTF    time / seconds of audio processed (below 1 is faster than real time).

The model: ConvTranspose2d upsampler (one per factor, leaky ReLU 0.4), squeeze
into h rows, K flows of a 2-D WaveNet (L layers: 3x3 conv C -> 2C, causal in
height with dilation dh_l from the section-5 table, "same" in width with
dilation 2^l; condition 1x1 M -> 2C (the L of them fused into one M -> 2CL
conv); gate; "out" 1x1 C -> 2C into residual and skip; output 1x1 C -> 2) and an
affine coupling (row 0 copied), rows permuted between flows (section 6).
`output` is random and small (not zero) so the coupling does real arithmetic.
h64-c32 / h32-c32 / h128-c32 are the flows of lpc-h64-c32 etc. WITHOUT the LPC
front (no parameters, ~p = 16 multiply-adds per sample: negligible).

Synthesis (section 8): for k = K-1 ... 0, undo perm_k, then invert flow k row
by row: X[0] = Z[0]; for r = 0 ... h-2 the network runs on ONE row (X row r,
condition row r+1) and gives (log_s, t) for row r+1, X[r+1] = (Z[r+1] - t) *
exp(-log_s). Each layer keeps a ring buffer ("conv_queue", as in the paper and
the authors' PaddlePaddle code) of its last 2*dh + 1 input rows; the 3x3 conv of
row r reads rows r - 2dh, r - dh, r of it (rows above 0 are the zero padding),
so each row costs one row of network work: (h-1) rows x K flows of row-sized
convolutions, ~ the forward's multiply-adds. The condition of row r+1 goes
through the fused 1x1 conv once per row for all L layers.

Run (CPU PyTorch; `pip install "torch==2.13.0+cpu"` on the project machine):
    python3 scripts/bench-pytorch-waveflow.py --preset h16-c64,h16-c32 --threads 2 --check

On a busy machine (more runnable processes than cores) OpenMP's spinning waits
can make --threads 2 several times slower than --threads 1; OMP_WAIT_POLICY=PASSIVE
in the environment avoids most of that. Compare with `waveflow bench` run alike.

--check first verifies, on a small random model with a non-zero output layer,
that (a) the cached inverse inverts the forward (max |x - x'|, float32, ~1e-5
expected), (b) it equals the naive inverse that reruns the network on all rows
< i for every row i, and (c) the log-det equals log|det J| of the autograd
Jacobian (float64, tiny model). A manual tool: not run by CI.
"""
import argparse
import math
import subprocess
import sys
import time

import torch
import torch.nn.functional as Fn
from torch import nn

SR, L, M, HOP, FACTORS = 22050, 8, 80, 256, (16, 16)
PRESETS = {"h16-c64": (16, 8, 64), "h16-c48": (16, 6, 48), "h16-c32": (16, 6, 32), "h16-c32-k4": (16, 4, 32),
           "h32-c32": (32, 6, 32), "h64-c32": (64, 6, 32), "h128-c32": (128, 6, 32)}  # (h, K, C)
DH = {32: [1, 2, 4, 1, 2, 4, 1, 2], 64: [1, 2, 4, 8, 16, 1, 2, 4], 128: [1, 2, 4, 8, 16, 32, 64, 1]}


def perm(k, K, h):
    """Section 6: new row i after flow k is old row perm[i] (an involution)."""
    if k < K // 2:
        return list(range(h - 1, -1, -1))
    return list(range(h // 2 - 1, -1, -1)) + list(range(h - 1, h // 2 - 1, -1))


class Flow(nn.Module):
    """One flow's network (section 5): (Xin [B,1,H,w], Cin [B,M,H,w]) -> (log_s, t) [B,1,H,w]."""

    def __init__(self, h, C, L, M):
        super().__init__()
        self.C, self.L = C, L
        self.dil = [(DH.get(h, [1] * 8)[l], 2 ** l) for l in range(L)]
        self.input = nn.Conv2d(1, C, 1)
        self.cond = nn.Conv2d(M, 2 * C * L, 1)  # the L cond 1x1 convs M -> 2C, fused
        self.conv = nn.ModuleList(nn.Conv2d(C, 2 * C, 3, dilation=d) for d in self.dil)
        self.out = nn.ModuleList(nn.Conv2d(C, 2 * C, 1) for _ in range(L))
        self.output = nn.Conv2d(C, 2, 1)
        with torch.no_grad():  # small but not zero: log_s, t of order 1e-2
            self.output.weight.normal_(0, 0.1 / math.sqrt(C))
            self.output.bias.normal_(0, 0.01)

    def forward(self, xin, cin):
        # chunk/split, not slices: their backward is one cat, not a zero-filled tensor per slice.
        a, skip = self.input(xin), 0
        for l, ((dh, dw), cc) in enumerate(zip(self.dil, self.cond(cin).split(2 * self.C, 1))):
            y_t, y_s = (self.conv[l](Fn.pad(a, (dw, dw, 2 * dh, 0))) + cc).chunk(2, 1)
            res, sk = self.out[l](torch.tanh(y_t) * torch.sigmoid(y_s)).chunk(2, 1)
            a, skip = a + res, skip + sk
        return self.output(skip).chunk(2, 1)  # log_s, t

    @torch.no_grad()
    def invert(self, Z, Ch, rows):
        """Section 8 with the per-layer row caches: Z [B,h,w] (this flow's row order),
        Ch [B,h,M,w] (unpermuted condition), rows[i] = which Ch row is this flow's row i -> X [B,h,w]."""
        B, h, w = Z.shape
        C, X = self.C, torch.empty_like(Z)
        X[:, 0] = Z[:, 0]
        win, bin_ = self.input.weight.view(1, C, 1), self.input.bias.view(1, C, 1)
        wc, bc = self.cond.weight[..., 0], self.cond.bias  # 1x1 conv weights as conv1d's [out, in, 1]
        wo, bo = self.output.weight[..., 0], self.output.bias
        outs = [(m.weight[..., 0], m.bias) for m in self.out]
        queues = [Z.new_zeros(B, C, 2 * dh + 1, w) for dh, _ in self.dil]
        taps_at = {(r, dh): torch.tensor([(r - 2 * dh) % (2 * dh + 1), (r - dh) % (2 * dh + 1), r % (2 * dh + 1)])
                   for r in range(h - 1) for dh, _ in self.dil}  # ring slots of rows r-2dh, r-dh, r
        for r in range(h - 1):
            a, skip = win * X[:, r:r + 1] + bin_, 0
            cc = Fn.conv1d(Ch[:, rows[r + 1]], wc, bc)  # [B, 2CL, w]
            for l, (dh, dw) in enumerate(self.dil):
                q = queues[l]
                q[:, :, r % (2 * dh + 1)] = a
                taps = q.index_select(2, taps_at[r, dh])  # [B,C,3,w]; rows above 0 are still zero
                conv = self.conv[l]
                y = Fn.conv2d(taps, conv.weight, conv.bias, padding=(0, dw), dilation=(1, dw))[:, :, 0]
                y = y + cc[:, 2 * C * l:2 * C * (l + 1)]
                o = Fn.conv1d(torch.tanh(y[:, :C]) * torch.sigmoid(y[:, C:]), *outs[l])
                a, skip = a + o[:, :C], skip + o[:, C:]
            p = Fn.conv1d(skip, wo, bo)
            X[:, r + 1] = (Z[:, r + 1] - p[:, 1]) * torch.exp(-p[:, 0])
        return X

    @torch.no_grad()
    def invert_naive(self, Z, Ch, rows):
        """The O(h^2) inverse: for row i, rerun the whole network on X rows < i."""
        X = Z.clone()
        cin = Ch[:, rows].transpose(1, 2)
        for r in range(Z.shape[1] - 1):
            log_s, t = self(X[:, None, :r + 1], cin[:, :, 1:r + 2])
            X[:, r + 1] = (Z[:, r + 1] - t[:, 0, r]) * torch.exp(-log_s[:, 0, r])
        return X


class WaveFlow(nn.Module):
    def __init__(self, h=16, K=8, C=64, L=8, M=80, factors=FACTORS):
        super().__init__()
        self.h, self.K = h, K
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(1, 1, (3, 2 * f), (1, f), (1, f // 2)) for f in factors)
        self.flows = nn.ModuleList(Flow(h, C, L, M) for _ in range(K))
        self.rows = [list(range(h))]  # rows[k][i]: which unpermuted condition row flow k's row i is
        for k in range(K - 1):
            p = perm(k, K, h)
            self.rows.append([self.rows[k][p[i]] for i in range(h)])

    def condition(self, mel):
        """Sections 3-4: mel [B,M,F] -> Cd [B,M,h,F*hop/h]."""
        c = mel[:, None]
        for u in self.upsample:
            c = Fn.leaky_relu(u(c), 0.4)
        B, _, M, T = c.shape
        return c.view(B, M, T // self.h, self.h).transpose(2, 3).contiguous()

    def forward(self, x, mel):
        """x [B,T] (T = F*hop) -> (z [B,h,w], log p(x) [B])."""
        B, T = x.shape
        Cd, X = self.condition(mel), x.view(B, T // self.h, self.h).transpose(1, 2)[:, None]
        logdet = x.new_zeros(B)
        for k, flow in enumerate(self.flows):
            log_s, t = flow(X[:, :, :-1], Cd[:, :, 1:])
            X = torch.cat([X[:, :, :1], X[:, :, 1:] * torch.exp(log_s) + t], 2)
            logdet = logdet + log_s.sum((1, 2, 3))
            p = perm(k, self.K, self.h)
            X, Cd = X[:, :, p], Cd[:, :, p]
        z = X[:, 0]
        return z, (-0.5 * z * z - 0.5 * math.log(2 * math.pi)).sum((1, 2)) + logdet

    @torch.no_grad()
    def infer(self, mel, z, naive=False):
        """Section 8: mel [B,M,F], z [B,F*hop] -> audio [B,F*hop]."""
        B, T = z.shape
        Ch = self.condition(mel).transpose(1, 2).contiguous()  # [B,h,M,w]: a row of it is contiguous
        Z = z.view(B, T // self.h, self.h).transpose(1, 2).contiguous()
        for k in reversed(range(self.K)):
            Z = Z[:, perm(k, self.K, self.h)]
            f = self.flows[k]
            Z = (f.invert_naive if naive else f.invert)(Z, Ch, self.rows[k])
        return Z.transpose(1, 2).reshape(B, T)


def best_time(repeats, body):
    """Wall time of the fastest of `repeats` runs of `body`, after one warm-up."""
    body()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - t0)
    return best


def check(hs):
    for h in hs:  # (a), (b): float32, log_s of order 0.1-1 (the coupling really scales)
        torch.manual_seed(0)
        model, F = WaveFlow(h=h, K=4, C=16, L=8), 8
        with torch.no_grad():
            for f in model.flows:
                f.output.weight.normal_(0, 1.0 / math.sqrt(f.C))
            mel, x = torch.rand(1, M, F) * -8, 0.1 * torch.randn(1, F * HOP)
            z, logp = model(x, mel)
            ld = (logp + (0.5 * z * z + 0.5 * math.log(2 * math.pi)).sum()).item() / (4 * F * HOP * (h - 1) / h)
            zf = z.transpose(1, 2).reshape(1, -1)
            x1, x2 = model.infer(mel, zf), model.infer(mel, zf, naive=True)
        err, diff = (x - x1).abs().max().item(), (x1 - x2).abs().max().item()
        print(f"check: h={h} K=4 C=16 L=8, {F * HOP} samples, mean log_s {ld:+.3f}: (a) inverse(forward(x)) "
              f"max |x - x'| = {err:.2e}; (b) cached vs naive inverse max diff = {diff:.2e}")
        assert err < 1e-3 and diff < 1e-4, "inverse check failed"
    tiny = WaveFlow(h=8, K=2, C=4, L=3, M=4, factors=(2, 4)).double()  # (c) log-det vs autograd Jacobian
    with torch.no_grad():
        for f in tiny.flows:
            f.output.weight.normal_(0, 0.5)
    mel_t, x_t = torch.rand(1, 4, 2, dtype=torch.float64), 0.1 * torch.randn(8 * 2, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: tiny(v[None], mel_t)[0].transpose(1, 2).reshape(-1), x_t)
    z_t, logp = tiny(x_t[None], mel_t)
    ld, lj = (logp + (0.5 * z_t * z_t + 0.5 * math.log(2 * math.pi)).sum()).item(), torch.linalg.slogdet(J)[1].item()
    print(f"check: (c) log-det {ld:.10f} vs log|det J| {lj:.10f} (float64, h=8, T=16)")
    assert abs(ld - lj) < 1e-8, "log-det check failed"


def row(a, name, phase):
    """Measures one row of the table in this process."""
    h, K, C = PRESETS[name]
    torch.manual_seed(1)
    model = WaveFlow(h=h, K=K, C=C, L=L, M=M)
    params = sum(q.numel() for q in model.parameters())
    if phase == "train":
        assert a.segment % HOP == 0 and a.segment % h == 0
        wn = torch.nn.utils.parametrizations.weight_norm
        for f in model.flows:
            for m in [f.input, f.cond, *f.conv, *f.out]:
                wn(m)
        x, mel = 0.1 * torch.randn(a.batch, a.segment), torch.rand(a.batch, M, a.segment // HOP) * -8
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            _, logp = model(x, mel)
            (-logp / a.segment).mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
        t, n = best_time(a.repeats, step), a.batch * a.segment
    else:
        frames = int(a.seconds * SR) // HOP
        mel, z = torch.rand(1, M, frames) * -8, 0.7 * torch.randn(1, frames * HOP)

        def synth():
            with torch.inference_mode():
                model.infer(mel, z)
        t, n = best_time(a.repeats, synth), frames * HOP
    # VmHWM, not ru_maxrss: the latter survives exec, so it would hold the parent's peak.
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
    print(f"{name:<12}{phase:<7}{params / 1e6:>8.2f}M{n / t:>12.0f}{t / (n / SR):>9.3f}{t:>9.3f}{peak:>9.0f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="h16-c64,h16-c32", help="comma-separated: " + ", ".join(PRESETS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--segment", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--phases", default="train,synth")
    p.add_argument("--check", action="store_true")
    p.add_argument("--row-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    names, phases = a.preset.split(","), a.phases.split(",")
    for n in names:
        assert n in PRESETS, f"unknown preset {n} ({', '.join(PRESETS)})"
    for ph in phases:
        assert ph in ("train", "synth"), f"unknown phase {ph} (train, synth)"
    if a.row_only:
        for n in names:
            for ph in phases:
                row(a, n, ph)
        return
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu} ({torch.backends.cpu.get_cpu_capability()}); torch {torch.__version__}; threads {torch.get_num_threads()}")
    if a.check:
        t0 = time.perf_counter()
        check(sorted({PRESETS[n][0] for n in names}))
        print(f"check: passed in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"{'preset':<12}{'phase':<7}{'params':>9}{'samples/s':>12}{'RTF':>9}{'s/run':>9}{'peak-MB':>9}", flush=True)
    for n in names:  # each row in a fresh process, so that its peak memory is its own
        for ph in phases:
            args = [sys.executable, __file__, "--row-only", "--preset", n, "--phases", ph, "--threads", str(a.threads),
                    "--seconds", str(a.seconds), "--batch", str(a.batch), "--segment", str(a.segment),
                    "--repeats", str(a.repeats)]
            t0 = time.perf_counter()
            subprocess.run(args, check=True)
            print(f"  ({n} {ph}: {time.perf_counter() - t0:.0f} s wall in all)", flush=True)


if __name__ == "__main__":
    main()
