#!/usr/bin/env python3
"""Writes the PyTorch-import fixtures (issue 19): small WaveGlow checkpoints
saved by torch.save exactly as the authors' training code saves them, the
tensors `waveflow import` must produce from each, and the NLL each scores.
Run once by a developer (needs torch); the outputs are committed, building and
testing need no Python:

    python3 scripts/make-torch-fixtures.py

The WaveGlow classes below re-create the authors' published modules (the
`glow` module: WaveGlow, WN, Invertible1x1Conv, with their attribute and
parameter names) in both layouts:

  current  WN.k.start / cond_layer / in_layers.i / res_skip_layers.i / end
  first    WN.k.start / cond_layers.i / in_layers.i / res_layers.i (all but the
           last layer) / skip_layers.i / end, and every odd flow transforming
           the first half (the authors' glow_old.py); alternate_halves = true
  middle   res_skip_layers.i with per-layer cond_layers.i (the authors' code from
           Nov 2018 to Aug 2019, e.g. the published waveglow_256channels.pt)

The only deviation: the upsampler is ConvTranspose1d(M, M, 4*hop, stride=hop)
with a small hop (the authors hard-code 1024 and 256). Tiny sizes: M 8, hop 16,
G 8, K 4, E 2, S 2, L 2, C 4.

Writes into Tests/WaveFlowTests/Fixtures/torch/:

  mel.npy [8, 8] <f4, audio.npy [120] <f4     the scored input (shared)
  <name>.pt                                   checkpoints (table MODELS/FILES)
  <model>_expected.safetensors                the effective tensors in spec names
                                              (weight norm folded in Float64 from
                                              the stored g and v, rounded to F32)
  <model>_nll.npy [1] <f8                     NLL (nats/sample) of audio given mel,
                                              by the authors' forward code run in
                                              Float64 on the stored weights
  tiny*.pt, err_*.pt                          container and error cases

The NLL is cross-checked against a functional forward of MODEL-SPEC 12 on the
expected tensors (agreement to 1e-6 asserted).
"""
import collections
import copy
import io
import json
import math
import os
import pickle
import struct
import sys
import types
import zipfile
import zlib

import numpy as np
import torch

torch.set_default_dtype(torch.float32)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "WaveFlowTests", "Fixtures", "torch")
M, HOP, G, K, E, S, L, C = 8, 16, 8, 4, 2, 2, 2, 4

# --- the authors' modules (module `glow`) ----------------------------------
glow = types.ModuleType("glow")
sys.modules["glow"] = glow


def fused_add_tanh_sigmoid_multiply(input_a, input_b, n_channels):
    n_channels_int = n_channels[0]
    in_act = input_a + input_b
    t_act = torch.tanh(in_act[:, :n_channels_int, :])
    s_act = torch.sigmoid(in_act[:, n_channels_int:, :])
    return t_act * s_act


def wnorm(m):
    return torch.nn.utils.weight_norm(m, name="weight")


class Invertible1x1Conv(torch.nn.Module):
    def __init__(self, c):
        super(Invertible1x1Conv, self).__init__()
        self.conv = torch.nn.Conv1d(c, c, kernel_size=1, stride=1, padding=0, bias=False)
        W = torch.linalg.qr(torch.FloatTensor(c, c).normal_())[0]
        W = W + 0.2 * torch.randn(c, c) / math.sqrt(c)  # not orthogonal: log|det W| != 0
        if torch.det(W) < 0:
            W[:, 0] = -1 * W[:, 0]
        self.conv.weight.data = W.view(c, c, 1)

    def forward(self, z):
        batch_size, group_size, n_of_groups = z.size()
        W = self.conv.weight.squeeze()
        log_det_W = batch_size * n_of_groups * torch.logdet(W)
        return self.conv(z), log_det_W


class WNCurrent(torch.nn.Module):
    """glow.py since Aug 2019 (one cond_layer); `per_layer_cond` gives the
    Nov 2018 - Aug 2019 variant (res_skip_layers with cond_layers)."""

    def __init__(self, n_in_channels, n_mel_channels, n_layers, n_channels, kernel_size, additive=False,
                 per_layer_cond=False):
        super(WNCurrent, self).__init__()
        self.n_layers = n_layers
        self.n_channels = n_channels
        self.in_layers = torch.nn.ModuleList()
        self.res_skip_layers = torch.nn.ModuleList()
        self.start = wnorm(torch.nn.Conv1d(n_in_channels, n_channels, 1))
        end = torch.nn.Conv1d(n_channels, (1 if additive else 2) * n_in_channels, 1)
        self.end = end
        if per_layer_cond:
            self.cond_layers = torch.nn.ModuleList()
        else:
            self.cond_layer = wnorm(torch.nn.Conv1d(n_mel_channels, 2 * n_channels * n_layers, 1))
        for i in range(n_layers):
            dilation = 2 ** i
            padding = int((kernel_size * dilation - dilation) / 2)
            self.in_layers.append(wnorm(torch.nn.Conv1d(n_channels, 2 * n_channels, kernel_size,
                                                        dilation=dilation, padding=padding)))
            if per_layer_cond:
                self.cond_layers.append(wnorm(torch.nn.Conv1d(n_mel_channels, 2 * n_channels, 1)))
            res_skip_channels = 2 * n_channels if i < n_layers - 1 else n_channels
            self.res_skip_layers.append(wnorm(torch.nn.Conv1d(n_channels, res_skip_channels, 1)))

    def forward(self, forward_input):
        audio, spect = forward_input
        audio = self.start(audio)
        output = torch.zeros_like(audio)
        n_channels_tensor = torch.IntTensor([self.n_channels])
        if hasattr(self, "cond_layer"):
            spect = self.cond_layer(spect)
        for i in range(self.n_layers):
            if hasattr(self, "cond_layer"):
                o = i * 2 * self.n_channels
                cond = spect[:, o:o + 2 * self.n_channels, :]
            else:
                cond = self.cond_layers[i](spect)
            acts = fused_add_tanh_sigmoid_multiply(self.in_layers[i](audio), cond, n_channels_tensor)
            res_skip_acts = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                audio = audio + res_skip_acts[:, :self.n_channels, :]
                output = output + res_skip_acts[:, self.n_channels:, :]
            else:
                output = output + res_skip_acts
        return self.end(output)


class WNFirst(torch.nn.Module):
    """The authors' first WN (glow_old.py, Nov 2018)."""

    def __init__(self, n_in_channels, n_mel_channels, n_layers, n_channels, kernel_size):
        super(WNFirst, self).__init__()
        self.n_layers = n_layers
        self.n_channels = n_channels
        self.in_layers = torch.nn.ModuleList()
        self.res_layers = torch.nn.ModuleList()
        self.skip_layers = torch.nn.ModuleList()
        self.cond_layers = torch.nn.ModuleList()
        self.start = wnorm(torch.nn.Conv1d(n_in_channels, n_channels, 1))
        self.end = torch.nn.Conv1d(n_channels, 2 * n_in_channels, 1)
        for i in range(n_layers):
            dilation = 2 ** i
            padding = int((kernel_size * dilation - dilation) / 2)
            self.in_layers.append(wnorm(torch.nn.Conv1d(n_channels, 2 * n_channels, kernel_size,
                                                        dilation=dilation, padding=padding)))
            self.cond_layers.append(wnorm(torch.nn.Conv1d(n_mel_channels, 2 * n_channels, 1)))
            if i < n_layers - 1:
                self.res_layers.append(wnorm(torch.nn.Conv1d(n_channels, n_channels, 1)))
            self.skip_layers.append(wnorm(torch.nn.Conv1d(n_channels, n_channels, 1)))

    def forward(self, forward_input):
        audio, spect = forward_input
        audio = self.start(audio)
        for i in range(self.n_layers):
            acts = fused_add_tanh_sigmoid_multiply(self.in_layers[i](audio), self.cond_layers[i](spect),
                                                   torch.IntTensor([self.n_channels]))
            if i < self.n_layers - 1:
                audio = self.res_layers[i](acts) + audio
            if i == 0:
                output = self.skip_layers[i](acts)
            else:
                output = self.skip_layers[i](acts) + output
        return self.end(output)


class WaveGlow(torch.nn.Module):
    def __init__(self, n_mel_channels, n_flows, n_group, n_early_every, n_early_size, WN_config, hop=HOP,
                 wn_class=WNCurrent, alternate=False, additive=False):
        super(WaveGlow, self).__init__()
        self.upsample = torch.nn.ConvTranspose1d(n_mel_channels, n_mel_channels, 4 * hop, stride=hop)
        assert n_group % 2 == 0
        self.n_flows = n_flows
        self.n_group = n_group
        self.n_early_every = n_early_every
        self.n_early_size = n_early_size
        self.WN = torch.nn.ModuleList()
        self.convinv = torch.nn.ModuleList()
        n_half = int(n_group / 2)
        n_remaining_channels = n_group
        for k in range(n_flows):
            if k % self.n_early_every == 0 and k > 0:
                n_half = n_half - int(self.n_early_size / 2)
                n_remaining_channels = n_remaining_channels - self.n_early_size
            self.convinv.append(Invertible1x1Conv(n_remaining_channels))
            extra = {"additive": True} if additive else {}
            self.WN.append(wn_class(n_half, n_mel_channels * n_group, **WN_config, **extra))
        self.n_remaining_channels = n_remaining_channels
        # Not attributes of the authors' class: kept out of the pickle below.
        self._alternate, self._additive = alternate, additive

    def forward(self, forward_input):
        spect, audio = forward_input
        spect = self.upsample(spect)
        assert spect.size(2) >= audio.size(1)
        if spect.size(2) > audio.size(1):
            spect = spect[:, :, :audio.size(1)]
        spect = spect.unfold(2, self.n_group, self.n_group).permute(0, 2, 1, 3)
        spect = spect.contiguous().view(spect.size(0), spect.size(1), -1).permute(0, 2, 1)
        audio = audio.unfold(1, self.n_group, self.n_group).permute(0, 2, 1)
        output_audio, log_s_list, log_det_W_list = [], [], []
        for k in range(self.n_flows):
            if k % self.n_early_every == 0 and k > 0:
                output_audio.append(audio[:, :self.n_early_size, :])
                audio = audio[:, self.n_early_size:, :]
            audio, log_det_W = self.convinv[k](audio)
            log_det_W_list.append(log_det_W)
            n_half = int(audio.size(1) / 2)
            odd = self._alternate and k % 2 == 1
            if odd:
                audio_1, audio_0 = audio[:, :n_half, :], audio[:, n_half:, :]
            else:
                audio_0, audio_1 = audio[:, :n_half, :], audio[:, n_half:, :]
            output = self.WN[k]((audio_0, spect))
            if self._additive:
                log_s, b = torch.zeros_like(audio_1), output
            else:
                log_s, b = output[:, n_half:, :], output[:, :n_half, :]
            audio_1 = torch.exp(log_s) * audio_1 + b
            log_s_list.append(log_s)
            audio = torch.cat([audio_1, audio_0], 1) if odd else torch.cat([audio_0, audio_1], 1)
        output_audio.append(audio)
        return torch.cat(output_audio, 1), log_s_list, log_det_W_list

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_alternate", "_additive", "_layout"):
            state.pop(key, None)
        return state


for cls, name in [(Invertible1x1Conv, "Invertible1x1Conv"), (WaveGlow, "WaveGlow")]:
    cls.__module__ = "glow"
    setattr(glow, name, cls)


def use_wn(cls):
    """Makes `cls` the pickled glow.WN (the name the authors' pickles reference)."""
    cls.__module__, cls.__name__, cls.__qualname__ = "glow", "WN", "WN"
    glow.WN = cls


# --- models -----------------------------------------------------------------
def build(seed, layout="current", weight_norm=True, additive=False):
    torch.manual_seed(seed)
    wn_class = WNFirst if layout == "first" else WNCurrent
    cfg = dict(n_layers=L, n_channels=C, kernel_size=3)
    if layout == "middle":
        cfg["per_layer_cond"] = True
    m = WaveGlow(M, K, G, E, S, cfg, wn_class=wn_class, alternate=(layout == "first"), additive=additive)
    with torch.no_grad():  # every weight random (the authors zero `end`; here it must act)
        for name, p in m.named_parameters():
            if ".end." in name:
                p.uniform_(-0.5 / math.sqrt(C), 0.5 / math.sqrt(C))
            elif name.endswith("weight_g"):
                p.uniform_(0.5, 1.5)
    if not weight_norm:
        remove_weight_norm(m)
    m._layout = layout
    return m


def remove_weight_norm(m):
    for mod in m.modules():
        if hasattr(mod, "weight_g"):
            torch.nn.utils.remove_weight_norm(mod)


def detach_computed_weights(model):
    """weight_norm leaves each module's computed `weight` as a non-leaf tensor
    attribute, which deepcopy refuses; a detached copy of it is equivalent."""
    for mod in model.modules():
        if hasattr(mod, "weight_g") and "weight" in mod.__dict__:
            mod.weight = mod.weight.detach()


def effective64(model):
    """The effective weights, weight norm folded in Float64 (dim 0)."""
    m = model
    out = {}
    for name, p in m.state_dict().items():
        if name.endswith("weight_g"):
            continue
        if name.endswith("weight_v"):
            v = p.double()
            g = m.state_dict()[name[:-1] + "g"].double()
            norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
            out[name[:-2]] = g * v / norm
        else:
            out[name] = p.double()
    return out


def spec_tensors(model):
    """Spec names (MODEL-SPEC 12.7) -> float32 arrays: what the import must give."""
    w = {k: v.float().numpy() for k, v in effective64(model).items()}
    out = {}
    for k in range(K):
        p = f"WN.{k}."
        if model._layout == "first":
            for i in range(L):
                parts = ([w[p + f"res_layers.{i}.weight"]] if i < L - 1 else []) + [w[p + f"skip_layers.{i}.weight"]]
                w[p + f"res_skip_layers.{i}.weight"] = np.concatenate(parts)
                parts = ([w[p + f"res_layers.{i}.bias"]] if i < L - 1 else []) + [w[p + f"skip_layers.{i}.bias"]]
                w[p + f"res_skip_layers.{i}.bias"] = np.concatenate(parts)
        if model._layout in ("first", "middle"):
            for s in ("weight", "bias"):
                w[p + f"cond_layer.{s}"] = np.concatenate([w[p + f"cond_layers.{i}.{s}"] for i in range(L)])
    keep = lambda n: not any(x in n for x in ("res_layers", "skip_layers.", "cond_layers")) or "res_skip" in n
    return {n: a for n, a in w.items() if keep(n)}


def nll_authors(model, mel, audio):
    """NLL by the authors' forward, Float64, weight norm folded in Float64."""
    detach_computed_weights(model)
    m = copy.deepcopy(model).double()
    m._alternate, m._additive = model._alternate, model._additive  # not pickled (see __getstate__)
    remove_weight_norm(m)
    with torch.no_grad():
        z, log_s_list, log_det_w_list = m((torch.from_numpy(mel).double()[None], torch.from_numpy(audio).double()[None]))
        logdet = sum(x.sum() for x in log_s_list) + sum(log_det_w_list)
        T = audio.shape[0]
        return float((0.5 * (z ** 2).sum() + 0.5 * T * math.log(2 * math.pi) - logdet) / T)


def nll_spec(w, mel, audio, alternate, additive):
    """MODEL-SPEC 12 written out on the spec-named tensors (Float64)."""
    t = {k: torch.from_numpy(v).double() for k, v in w.items()}
    F = torch.nn.functional
    mel64, x = torch.from_numpy(mel).double()[None], torch.from_numpy(audio).double()
    T = x.shape[0]
    u = F.conv_transpose1d(mel64, t["upsample.weight"], t["upsample.bias"], stride=HOP)[0, :, :T]
    cg = u.reshape(M, T // G, G).permute(0, 2, 1).reshape(M * G, T // G)[None]
    A = x.reshape(T // G, G).T[None]
    early, logdet = [], 0.0
    for k in range(K):
        if k > 0 and k % E == 0:
            early.append(A[:, :S])
            A = A[:, S:]
        W = t[f"convinv.{k}.conv.weight"]
        A = F.conv1d(A, W)
        logdet += A.shape[2] * torch.linalg.slogdet(W[:, :, 0])[1]
        nh = A.shape[1] // 2
        tr, inp = (slice(0, nh), slice(nh, 2 * nh)) if alternate and k % 2 == 1 else (slice(nh, 2 * nh), slice(0, nh))
        p = f"WN.{k}."
        a = F.conv1d(A[:, inp], t[p + "start.weight"], t[p + "start.bias"])
        s = F.conv1d(cg, t[p + "cond_layer.weight"], t[p + "cond_layer.bias"])
        skip = 0
        for i in range(L):
            y = F.conv1d(a, t[p + f"in_layers.{i}.weight"], t[p + f"in_layers.{i}.bias"], dilation=2 ** i, padding=2 ** i)
            y = y + s[:, 2 * C * i:2 * C * (i + 1)]
            g = torch.tanh(y[:, :C]) * torch.sigmoid(y[:, C:])
            r = F.conv1d(g, t[p + f"res_skip_layers.{i}.weight"], t[p + f"res_skip_layers.{i}.bias"])
            if i < L - 1:
                a, skip = a + r[:, :C], skip + r[:, C:]
            else:
                skip = skip + r
        out = F.conv1d(skip, t[p + "end.weight"], t[p + "end.bias"])
        shift = out[:, :nh]
        log_s = torch.zeros_like(shift) if additive else out[:, nh:2 * nh]
        A = A.clone()
        A[:, tr] = A[:, tr] * torch.exp(log_s) + shift
        logdet += log_s.sum()
    z = torch.cat(early + [A], 1)
    return float((0.5 * (z ** 2).sum() + 0.5 * T * math.log(2 * math.pi) - logdet) / T)


# --- writers -------------------------------------------------------------------
def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def save(obj, name, legacy=False):
    path = os.path.join(OUT, name)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def module_checkpoint(model, optimizer_state=None):
    """The authors' train.py: {'model': <WaveGlow>, 'iteration', 'optimizer', 'learning_rate'}."""
    use_wn(WNFirst if model._layout == "first" else WNCurrent)
    return {"model": model, "iteration": 1234,
            "optimizer": optimizer_state if optimizer_state is not None else {"state": {}, "param_groups": []},
            "learning_rate": 1e-4}


def rezip(src, dst, zip64=False, compress=False):
    """Rewrites a torch.save zip archive entry for entry: stored with every size and
    offset in zip64 extra fields (zip64=True), or with data.pkl deflated."""
    entries = []
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            entries.append((info.filename, z.read(info.filename)))
    out, central = bytearray(), bytearray()
    for name, data in entries:
        nb = name.encode()
        method, payload = 0, data
        if compress and name.endswith("data.pkl"):
            co = zlib.compressobj(9, zlib.DEFLATED, -15)
            method, payload = 8, co.compress(data) + co.flush()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        offset = len(out)
        if zip64:
            extra = struct.pack("<HHQQ", 1, 16, len(data), len(payload))
            out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(nb), len(extra)) + nb + extra + payload
            cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(payload), offset)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF,
                                   0xFFFFFFFF, len(nb), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + nb + cextra
        else:
            out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), len(data),
                               len(nb), 0) + nb + payload
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload),
                                   len(data), len(nb), 0, 0, 0, 0, 0, offset) + nb
    cd_offset = len(out)
    out += central
    n = len(entries)
    if zip64:
        z64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), cd_offset, 0)
    with open(dst, "wb") as f:
        f.write(bytes(out))


class Forbidden:
    """Pickles as a call of os.system: a crafted file the importer must refuse."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    rng = np.random.default_rng(19)
    F_ = 8
    mel = rng.uniform(-6.0, 0.0, size=(M, F_)).astype("<f4")
    ts = np.arange(120) / 22050
    audio = (0.3 * np.sin(2 * np.pi * 220 * ts) + 0.1 * np.sin(2 * np.pi * 1500 * ts + 1)
             + 0.02 * rng.standard_normal(120)).astype("<f4")
    np.save(os.path.join(OUT, "mel.npy"), mel)
    np.save(os.path.join(OUT, "audio.npy"), audio)

    models = {
        "current_wn": build(1),                                      # current layout, weight norm kept
        "current_plain": build(2, weight_norm=False),                # weight norm removed
        "first_wn": build(3, layout="first"),                        # first layout (glow_old.py)
        "first_plain": build(4, layout="first", weight_norm=False),
        "middle_wn": build(5, layout="middle"),                      # res_skip_layers + cond_layers
        "additive_plain": build(6, weight_norm=False, additive=True),
        "half": build(7, weight_norm=False),                         # saved with HalfStorage
    }
    with torch.no_grad():  # the half model's weights are what its file holds
        for p in models["half"].parameters():
            p.copy_(p.half().float())

    # Adam state for one file: moments and step tensors beside the model
    # (over the first WN's start layer only, to keep the file small).
    opt = torch.optim.Adam(models["current_wn"].WN[0].start.parameters(), lr=1e-4)
    models["current_wn"].zero_grad()
    z, ls, ld = models["current_wn"]((torch.from_numpy(mel)[None], torch.from_numpy(audio)[None]))
    ((z ** 2).sum() - sum(x.sum() for x in ls) - sum(ld)).backward()
    opt.step()

    files = [
        # (file, model, how)
        ("current_wn_zip_module.pt", "current_wn", "module_adam"),
        ("current_wn_legacy_module.pt", "current_wn", "module_legacy"),
        ("current_wn_zip_prefix.pt", "current_wn", "state_dict_prefix"),
        ("current_plain_zip_sd.pt", "current_plain", "state_dict_top"),
        ("current_plain_legacy_sd.pt", "current_plain", "state_dict_top_legacy"),
        ("first_wn_zip_module.pt", "first_wn", "module"),
        ("first_wn_legacy_sd.pt", "first_wn", "state_dict_key_legacy"),
        ("first_plain_zip_sd.pt", "first_plain", "state_dict_model_key"),
        ("middle_wn_legacy_module.pt", "middle_wn", "module_legacy"),
        ("additive_plain_zip_sd.pt", "additive_plain", "state_dict_top"),
        ("half_zip_sd.pt", "half", "half"),
    ]
    summary = []
    for fname, mname, how in files:
        m = models[mname]
        if how == "module_adam":
            save(module_checkpoint(m, opt.state_dict()), fname)
        elif how == "module":
            save(module_checkpoint(m), fname)
        elif how == "module_legacy":
            save(module_checkpoint(m), fname, legacy=True)
        elif how == "state_dict_prefix":
            save({"state_dict": collections.OrderedDict(("module." + k, v) for k, v in m.state_dict().items()),
                  "epoch": 3}, fname)
        elif how == "state_dict_top":
            save(m.state_dict(), fname)
        elif how == "state_dict_top_legacy":
            save(m.state_dict(), fname, legacy=True)
        elif how == "state_dict_key_legacy":
            save({"state_dict": m.state_dict()}, fname, legacy=True)
        elif how == "state_dict_model_key":
            save({"model": m.state_dict(), "iteration": 7}, fname)
        elif how == "half":
            save(collections.OrderedDict((k, v.half()) for k, v in m.state_dict().items()), fname)
        summary.append(f"{fname}: {os.path.getsize(os.path.join(OUT, fname))} bytes")

    for mname, m in models.items():
        w = spec_tensors(m)
        write_safetensors(os.path.join(OUT, f"{mname}_expected.safetensors"), w)
        v = nll_authors(m, mel, audio)
        v_spec = nll_spec(w, mel, audio, m._layout == "first", m._additive)
        assert abs(v - v_spec) < 1e-6, (mname, v, v_spec)
        np.save(os.path.join(OUT, f"{mname}_nll.npy"), np.array([v]))
        summary.append(f"{mname}: nll {v:.10f} (spec forward on the F32 expected tensors {v_spec:.10f})")

    # --- container cases and errors: a tinier model (M 4, hop 8, K 2) ------------
    torch.manual_seed(99)
    use_wn(WNCurrent)
    tiny = WaveGlow(4, 2, 8, 2, 2, dict(n_layers=2, n_channels=2, kernel_size=3), hop=8)
    remove_weight_norm(tiny)
    sd = tiny.state_dict()
    save(sd, "tiny_zip.pt")
    rezip(os.path.join(OUT, "tiny_zip.pt"), os.path.join(OUT, "tiny_zip64.pt"), zip64=True)
    rezip(os.path.join(OUT, "tiny_zip.pt"), os.path.join(OUT, "err_compressed.pt"), compress=True)
    save(sd, "tiny_legacy.pt", legacy=True)
    missing = collections.OrderedDict((k, v) for k, v in sd.items() if k != "WN.1.end.bias")
    save(missing, "err_missing_tensor.pt")
    wrong = collections.OrderedDict(sd)
    wrong["WN.0.in_layers.1.weight"] = torch.zeros(4, 2, 5)
    save(wrong, "err_shape_mismatch.pt")
    renamed = collections.OrderedDict((k.replace("res_skip_layers", "gate_layers"), v) for k, v in sd.items())
    save(renamed, "err_unknown_layout.pt")
    taco = collections.OrderedDict([
        ("embedding.weight", torch.randn(12, 8)),
        ("encoder.convolutions.0.0.conv.weight", torch.randn(8, 8, 5)),
        ("encoder.lstm.weight_ih_l0", torch.randn(16, 8)),
        ("decoder.prenet.layers.0.linear_layer.weight", torch.randn(8, 4)),
        ("decoder.attention_rnn.weight_ih", torch.randn(32, 16)),
        ("postnet.convolutions.0.0.conv.weight", torch.randn(8, 4, 5)),
    ])
    save({"state_dict": taco, "iteration": 10, "learning_rate": 1e-3}, "err_tacotron2.pt")
    # A legacy-format file whose pickle calls os.system (never loaded here).
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                              "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump({"model": Forbidden()}, buf, protocol=2)
    pickle.dump([], buf, protocol=2)
    with open(os.path.join(OUT, "err_forbidden_global.pt"), "wb") as f:
        f.write(buf.getvalue())
    with open(os.path.join(OUT, "err_plain_pickle.pt"), "wb") as f:
        pickle.dump({"upsample.weight": [1.0, 2.0]}, f, protocol=2)

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    for line in summary:
        print(line)
    print(f"total {total} bytes in {len(os.listdir(OUT))} files")


if __name__ == "__main__":
    main()
