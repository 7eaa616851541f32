#!/usr/bin/env python3
"""waveflow against PyTorch on this machine, in one command: alternated rounds
of `waveflow bench` and the same models in PyTorch (bench-pytorch-waveflow.py
for WaveFlow presets, bench-pytorch-waveglow.py for wg-*), then one table of
ranges and ratios per preset and phase, headed by the machine waveflow saw.

    python3 scripts/compare-pytorch.py                       # h16-c64,h16-c32, 3 rounds
    python3 scripts/compare-pytorch.py --presets wg-c32 --rounds 2 --phases synth
    python3 scripts/compare-pytorch.py --avx2                # both held to AVX2 (a stand-in
                                                             # for a CPU without AVX-512)

Why rounds: on a shared or virtual machine a neighbour's load moves any single
figure by 5-10% (and PyTorch's h16-c64 training has been seen to move by 40%
between runs). Each round runs waveflow, then PyTorch, on the same cores, so a
round's ratio compares figures taken minutes apart; the table gives each
side's range over the rounds, the ratio within each round, and the ratio
against PyTorch's single best round (the strictest reading).

Every figure is samples/s (higher is faster), fp32, `--threads` threads, the
fastest of `--repeats` timed runs after a warm-up on each side; training
steps of 2 x 16,384 samples, synthesis of 2 s of audio. A preset one side
does not know (waveflow's tiny, PyTorch's h32-c32 ...) shows as dashes,
with that side's error on stderr. An lpc-* preset (the shipped model is
lpc-h64-c32) is compared with PyTorch's model of its flows alone (h64-c32). `%sgemm` is
waveflow's rate against the sgemm rate `waveflow bench` measured in the same
run. --avx2 sets WAVEFLOW_KERNELS=avx2, OPENBLAS_CORETYPE=Haswell and
DNNL_MAX_CPU_ISA=AVX2 for waveflow (with --block-columns 512 unless given: a
512 KB L2, as on AMD Zen 3), and ATEN_CPU_CAPABILITY=avx2,
DNNL_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2 for PyTorch.

Needs a release build (`swift build -c release`) and CPU PyTorch
(`pip install "torch==2.13.0+cpu"`). A manual tool: not run by CI. Delete
~/.cache/waveflow/tuning.json first if the rule's block width is wanted rather
than what `waveflow info --tune` measured.
"""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The same work on both sides (each side's defaults have differed: 16,000 samples for WaveGlow's PyTorch script).
SIZES = ["--batch", "2", "--segment", "16384", "--seconds", "2"]


def run(cmd, env):
    """Runs cmd and returns its stdout+stderr lines; on failure says so (with
    the end of its output) and returns none, so that the round goes on and
    the table shows the missing figures as dashes."""
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        tail = "\n".join(p.stdout.strip().splitlines()[-5:])
        print(f"compare-pytorch: {' '.join(cmd)} failed ({p.returncode}):\n{tail}", file=sys.stderr, flush=True)
        return []
    return p.stdout.splitlines()


def waveflow_round(args, env):
    """{(preset, phase): (samples/s, %sgemm)} and the header lines of one `waveflow bench`."""
    cmd = [args.waveflow, "bench", "--presets", ",".join(args.presets), "--precision", "fp32",
           "--repeats", str(args.repeats), "--phases", ",".join(args.phases), "--threads", str(args.threads)] + SIZES
    rows, header = {}, []
    for line in run(cmd, env):
        f = line.split()
        if len(f) >= 7 and f[0] in args.presets and f[2] in args.phases and f[1] == "fp32":
            rows[(f[0], f[2])] = (float(f[3]), f[6])
        elif line.startswith(("CPU ", "caches ", "BLAS core ")):
            header.append(line)
    return rows, header


def torch_preset(preset):
    """The PyTorch scripts' name for a waveflow preset: lpc-X is timed as X, its
    flows without the LPC front (a 16-tap filter per sample, under 1% of
    waveflow's synthesis time in `perf`), which the scripts do not model."""
    return preset[len("lpc-"):] if preset.startswith("lpc-") else preset


def pytorch_round(args, env):
    """{(preset, phase): samples/s} from the PyTorch scripts."""
    rows = {}
    for preset in args.presets: # one process per preset, so that a preset PyTorch lacks leaves the others
        flows = torch_preset(preset)
        script = "bench-pytorch-waveglow.py" if flows.startswith("wg-") else "bench-pytorch-waveflow.py"
        cmd = [sys.executable, os.path.join(HERE, script), "--preset", flows, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--phases", ",".join(args.phases)] + SIZES
        for line in run(cmd, env):
            f = line.split()
            if len(f) >= 4 and f[0] == flows and f[1] in args.phases:
                rows[(preset, f[1])] = float(f[3])
    return rows


def span(values, fmt="{:,.0f}"):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="h16-c64,h16-c32", help="comma-separated waveflow bench presets")
    ap.add_argument("--phases", default="train,synth", help="comma-separated: train, synth")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure on each side (the fastest counts)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--waveflow", default=os.path.join(ROOT, ".build", "release", "waveflow"))
    ap.add_argument("--avx2", action="store_true", help="hold both sides to AVX2 (see above)")
    ap.add_argument("--block-columns", type=int, help="WAVEFLOW_BLOCK_COLUMNS for waveflow's synthesis")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    args.presets = [p for p in args.presets.split(",") if p]
    args.phases = [p for p in args.phases.split(",") if p]
    if not os.access(args.waveflow, os.X_OK):
        sys.exit(f"compare-pytorch: {args.waveflow}: no such executable (swift build -c release, or --waveflow PATH)")
    if args.rounds < 1 or args.repeats < 1 or args.threads < 1:
        sys.exit("compare-pytorch: --rounds, --repeats and --threads must be at least 1")
    bad = [p for p in args.phases if p not in ("train", "synth")]
    if bad:
        sys.exit(f"compare-pytorch: unknown phase {bad[0]} (train, synth)")

    wf_env, pt_env = dict(os.environ), dict(os.environ)
    if args.avx2:
        wf_env.update(WAVEFLOW_KERNELS="avx2", OPENBLAS_CORETYPE="Haswell", DNNL_MAX_CPU_ISA="AVX2")
        pt_env.update(ATEN_CPU_CAPABILITY="avx2", DNNL_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
        args.block_columns = args.block_columns or 512
    if args.block_columns:
        wf_env["WAVEFLOW_BLOCK_COLUMNS"] = str(args.block_columns)

    wf, pt, header = [], [], []
    for r in range(args.rounds):
        print(f"round {r + 1} of {args.rounds} ({time.strftime('%H:%M:%S')}): waveflow ...", file=sys.stderr, flush=True)
        rows, header = waveflow_round(args, wf_env)
        wf.append(rows)
        print(f"round {r + 1} of {args.rounds}: PyTorch ...", file=sys.stderr, flush=True)
        pt.append(pytorch_round(args, pt_env))

    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], env=pt_env,
                                   stdout=subprocess.PIPE, text=True).stdout.strip()
    out = [f"<!-- {time.strftime('%Y-%m-%d %H:%M')}; {args.rounds} alternated rounds; fp32; {args.threads} threads;"
           f" {'AVX2 stand-in; ' if args.avx2 else ''}PyTorch {torch_version} -->"]
    out += [f"    {h}" for h in header]
    if args.block_columns:
        out.append(f"    WAVEFLOW_BLOCK_COLUMNS={args.block_columns}")
    out.append("")
    out.append("| preset | phase | waveflow | %sgemm | PyTorch | vs the same round | vs PyTorch's best round |")
    out.append("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for phase in args.phases:
            key = (preset, phase)
            pairs = [(w[key], p[key]) for w, p in zip(wf, pt) if key in w and key in p]
            if not pairs:
                out.append(f"| {preset} | {phase} | – | – | – | – | – |")
                continue
            ours = [w[0] for w, _ in pairs]
            theirs = [p for _, p in pairs]
            sgemm = sorted({w[1] for w, _ in pairs}, key=lambda s: float(s.rstrip("%")))
            same = [w / p for w, p in zip(ours, theirs)]
            best = [w / max(theirs) for w in ours]
            out.append(f"| {preset} | {phase} | {span(ours)} | {sgemm[0]}" + (f"–{sgemm[-1]}" if len(sgemm) > 1 else "")
                       + f" | {span(theirs)} | {span(same, '{:.2f}×')} | {span(best, '{:.2f}×')} |")
    lpc = [p for p in args.presets if torch_preset(p) != p and any((p, ph) in r for r in pt for ph in args.phases)]
    if lpc:
        out.append("")
        out.append("PyTorch's figures for " + ", ".join(lpc) + " are its model of the flows alone ("
                   + ", ".join(torch_preset(p) for p in lpc) + "), without the LPC front.")
    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.markdown + ".tmp", args.markdown)


if __name__ == "__main__":
    main()
