#!/usr/bin/env python3
"""Upscaler and .pth reference fixtures for darkroom, made with spandrel (and torch).

The networks are spandrel's own definitions, imported at run time from a
copy of its source that is never committed (spandrel 0.4.2, commit
b0c3eb2d of github.com/chaiNNer-org/spandrel):

  spandrel/architectures/ESRGAN/__arch/RRDB.py      RRDBNet (old arch, loads new-arch keys)
  spandrel/architectures/ESRGAN/__init__.py         ESRGANArch.load: new -> old key conversion,
                                                    scale / nb / unshuffle inferred from shapes
  spandrel/architectures/Compact/__arch/SRVGG.py    SRVGGNetCompact
  spandrel/architectures/Compact/__init__.py        CompactArch.load
  spandrel/architectures/__arch_helpers/{block,padding}.py, spandrel/util/__init__.py,
  spandrel/__helpers/{model_descriptor,size_req}.py

with empty spandrel/__init__.py, spandrel/__helpers/__init__.py and
spandrel/architectures/__init__.py (the real ones import every
architecture). Layout under the folder given on PYTHONPATH:

    spandrel/... (as above)

Every net is tiny and random: RRDBNet with nf 8, gc 4 (spandrel fixes gc at
32, the growth width of every released model; the script wraps its B.RRDB
to build gc 4), 2 RRDB blocks; SRVGGNetCompact with 8 features and 3 body
convolutions. Convolutions are He-initialised (std sqrt(2/fan_in)), biases
N(0, 0.02), PReLU slopes uniform in [0.05, 0.4] per channel; the last
convolution is rescaled so the output has a standard deviation of about
0.2 around 0.5 (RRDBNet) or adds about 0.15 to the nearest-upsampled input
(Compact): outputs are not flat. Weights are stored in the dtype named per
case; the reference runs in float32 on CPU from the stored values, through
the nn.Module's forward (spandrel's RRDBNet.forward pads by reflection to a
multiple of the unshuffle factor and crops; no clamp).

Cases (OUT/<case>.safetensors, outputs in OUT/cases.safetensors):

  esrgan_old_x4   old ESRGAN layout (model.0, model.1.sub.N.RDBk.convj.0, model.1.sub.2,
                  model.3, model.6, model.8, model.10), x4, F32
  esrgan_old_x2   old layout, x2 (model.3, model.5, model.7), F16
  rrdb_x4         new basicsr / Real-ESRGAN layout (conv_first, body.N.rdbk.convj, conv_body,
                  conv_up1, conv_up2, conv_hr, conv_last), x4, F32; also rrdb_x4.pth =
                  torch.save({"params_ema": state_dict}) as Real-ESRGAN releases ship
  rrdb_x2         new layout with Real-ESRGAN's pixel-unshuffle input (in 12 channels), x2, F16
  rrdb_x1         new layout, unshuffle by 4 (in 48 channels), x1, F16
  compact_x4      SRVGGNetCompact (body.N conv + PReLU, pixel shuffle), x4, F16
  compact_x2      SRVGGNetCompact x2, F32

cases.safetensors: "input" [1, 3, 17, 22] in 0..1 and "<case>/output".

.pth reader fixtures (OUT/pth/):

  benign.pth          torch.save (zip, pickle protocol 2) of a nested dict:
                      F32, F16, BF16, F64, I64, I32, U8 tensors, a transposed (strided)
                      view, a view at a storage offset, two tensors sharing a storage,
                      an nn.Parameter, a 0-d tensor, an empty tensor, non-tensor leaves
  benign_p4.pth       the same with pickle_protocol=4 (FRAME, STACK_GLOBAL, MEMOIZE)
  benign_legacy.pth   the same in torch's legacy (pre-1.6, non-zip) format
  benign_expect.safetensors  every tensor of benign.pth, contiguous, under its flattened
                      name ("nested.inner.w"); F64 stored as F32
  evil_system.pth     a state dict plus an object whose __reduce__ is os.system
                      (pickled as posix.system, called by REDUCE)
  evil_eval.pth       builtins.eval via REDUCE (pickled as __builtin__.eval, protocol 2)
  evil_popen.pth      a GLOBAL of subprocess.Popen (called by REDUCE)
  evil_inst.pth       torch's zip layout around a hand-written pickle that calls
                      os.system with the INST opcode (torch.save never writes INST)

Every evil file is checked to be refused by torch.load(weights_only=True),
and never loaded otherwise. Usage (no network):

    PYTHONPATH=<folder with spandrel/> python3 gen_upscaler_fixtures.py --out OUTDIR
"""
import argparse
import io
import os
import subprocess
import zipfile

import torch
from safetensors.torch import save_file

import spandrel.architectures.__arch_helpers.block as B
from spandrel.architectures.Compact import CompactArch
from spandrel.architectures.ESRGAN import ESRGANArch

GC = 4
_orig_rrdb = B.RRDB


def _rrdb_small_gc(*args, gc=32, **kwargs):
    return _orig_rrdb(*args, gc=GC, **kwargs)


B.RRDB = _rrdb_small_gc

H, W = 17, 22
NF, NB = 8, 2


def make_input():
    g = torch.Generator().manual_seed(7)
    y = torch.linspace(0, 1, H).view(1, 1, H, 1)
    x = torch.linspace(0, 1, W).view(1, 1, 1, W)
    base = torch.cat([0.5 + 0.4 * torch.sin(6 * x + 3 * y), y * x, 0.5 + 0.3 * torch.cos(9 * y - 2 * x)], 1)
    noise = 0.1 * torch.randn((1, 3, H, W), generator=g)
    return (base + noise).clamp(0, 1).contiguous()


def old_keys(scale_log2, in_nc, out_nc=3, nf=NF, nb=NB, gc=GC):
    """Old-layout names and shapes of spandrel's RRDBNet."""
    shapes = {"model.0": (nf, in_nc)}
    for n in range(nb):
        for r in range(1, 4):
            for c in range(1, 6):
                shapes[f"model.1.sub.{n}.RDB{r}.conv{c}.0"] = (gc if c < 5 else nf, nf + (c - 1) * gc)
    shapes[f"model.1.sub.{nb}"] = (nf, nf)
    for k in range(1, scale_log2 + 1):
        shapes[f"model.{3 * k}"] = (nf, nf)
    shapes[f"model.{3 * scale_log2 + 2}"] = (nf, nf)
    shapes[f"model.{3 * scale_log2 + 4}"] = (out_nc, nf)
    return shapes


def random_convs(shapes, g):
    sd = {}
    for name, (o, i) in shapes.items():
        sd[name + ".weight"] = torch.randn((o, i, 3, 3), generator=g) * (2.0 / (i * 9)) ** 0.5
        sd[name + ".bias"] = torch.randn((o,), generator=g) * 0.02
    return sd


def to_new(sd, scale_log2, nb=NB):
    """Old-layout names to basicsr's RRDBNet names."""
    out = {}
    last = 3 * scale_log2 + 4
    for k, v in sd.items():
        parts = k.split(".")
        if k.startswith("model.1.sub."):
            n = int(parts[3])
            if n == nb:
                out["conv_body." + parts[-1]] = v
            else:
                out[f"body.{n}.{parts[4].lower()}.{parts[5]}.{parts[-1]}"] = v
            continue
        idx = int(parts[1])
        name = {0: "conv_first", last - 2: "conv_hr", last: "conv_last"}.get(idx)
        if name is None:
            name = f"conv_up{idx // 3}"
        out[name + "." + parts[-1]] = v
    return out


def stored(sd, dtype):
    """The values as stored in dtype, and the float32 tensors the reference runs on."""
    st = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    return st, {k: v.float() for k, v in st.items()}


@torch.no_grad()
def run(arch, sd32, x):
    desc = arch.load(dict(sd32))
    model = desc.model.float().eval()
    return model(x), desc


@torch.no_grad()
def calibrate(arch, sd, x, last_w, last_b, target, mean, residual=None):
    out, _ = run(arch, sd, x)
    if residual is not None:
        out = out - residual
    std = out.std().item()
    assert std > 0, "flat output"
    sd[last_w] = sd[last_w] * (target / std)
    sd[last_b] = sd[last_b] * (target / std)
    if mean is not None:
        out2, _ = run(arch, sd, x)
        sd[last_b] = sd[last_b] + (mean - out2.mean().item())


def rrdb_case(name, scale_log2, in_nc, new, dtype, x, g, cases, out_dir, pth=False):
    sd = random_convs(old_keys(scale_log2, in_nc), g)
    last = f"model.{3 * scale_log2 + 4}"
    calibrate(ESRGANArch(), sd, x, last + ".weight", last + ".bias", 0.2, 0.5)
    if new:
        sd = to_new(sd, scale_log2)
    st, sd32 = stored(sd, dtype)
    out, desc = run(ESRGANArch(), sd32, x)
    print(f"{name}: spandrel scale {desc.scale}, in {desc.input_channels}, tags {desc.tags}; "
          f"out {tuple(out.shape)} mean {out.mean():.3f} std {out.std():.3f}")
    assert out.std() > 0.05
    save_file(st, os.path.join(out_dir, name + ".safetensors"))
    if pth:
        torch.save({"params_ema": st}, os.path.join(out_dir, name + ".pth"))
    cases[name + "/output"] = out.contiguous()


def compact_case(name, scale, dtype, x, g, cases, out_dir, nf=NF, nconv=3):
    sd = {}
    chans = [(nf, 3)] + [(nf, nf)] * nconv + [(3 * scale * scale, nf)]
    for i, (o, c) in enumerate(chans):
        sd[f"body.{2 * i}.weight"] = torch.randn((o, c, 3, 3), generator=g) * (2.0 / (c * 9)) ** 0.5
        sd[f"body.{2 * i}.bias"] = torch.randn((o,), generator=g) * 0.02
        if i < len(chans) - 1:
            sd[f"body.{2 * i + 1}.weight"] = 0.05 + 0.35 * torch.rand((o,), generator=g)
    last = 2 * (len(chans) - 1)
    base = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    calibrate(CompactArch(), sd, x, f"body.{last}.weight", f"body.{last}.bias", 0.15, None, residual=base)
    st, sd32 = stored(sd, dtype)
    out, desc = run(CompactArch(), sd32, x)
    print(f"{name}: spandrel scale {desc.scale}, tags {desc.tags}; out {tuple(out.shape)} "
          f"residual std {(out - base).std():.3f}")
    assert (out - base).std() > 0.05
    save_file(st, os.path.join(out_dir, name + ".safetensors"))
    cases[name + "/output"] = out.contiguous()


# --- .pth reader fixtures -------------------------------------------------------

def benign_tree():
    g = torch.Generator().manual_seed(11)
    big = torch.randn((5, 4), generator=g)
    shared = torch.arange(12, dtype=torch.float32)
    return {
        "f32": torch.randn((2, 3), generator=g),
        "f16": torch.randn((4,), generator=g).half(),
        "bf16": torch.randn((2, 2), generator=g).bfloat16(),
        "f64": torch.randn((3,), generator=g).double(),
        "i64": torch.arange(5, dtype=torch.int64) - 2,
        "i32": torch.arange(6, dtype=torch.int32).view(2, 3),
        "u8": torch.arange(7, dtype=torch.uint8),
        "transposed": big.t(),  # strides (1, 4)
        "offset": big[2:4],  # storage offset 8
        "shared_a": shared[:6].view(2, 3),
        "shared_b": shared[6:],
        "param": torch.nn.Parameter(torch.randn((3, 2), generator=g)),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros((0, 3)),
        "nested": {"inner": {"w": torch.randn((2, 2), generator=g)}, "note": "text", "n": 3},
        "epoch": 12,
        "lr": 1e-4,
        "flags": [True, False, None],
    }


def flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "."))
        elif isinstance(v, torch.Tensor):
            t = v.detach().contiguous()
            if t.dtype == torch.float64:
                t = t.float()
            out[prefix + k] = t.clone()
    return out


class Reduce:
    """An object that pickles as a call of fn(*args): never unpickled here."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def write_inst_pth(path):
    # torch's zip layout, with a pickle (protocol 0 opcodes) that calls
    # os.system("echo pwned") through INST: MARK, a unicode arg, INST os system, STOP.
    pkl = b"(Vecho pwned\nios\nsystem\n."
    root = "evil_inst"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(root + "/data.pkl", pkl)
        z.writestr(root + "/byteorder", "little")
        z.writestr(root + "/version", "3\n")


def pth_fixtures(out_dir):
    d = os.path.join(out_dir, "pth")
    os.makedirs(d, exist_ok=True)
    tree = benign_tree()
    torch.save(tree, os.path.join(d, "benign.pth"))
    torch.save(tree, os.path.join(d, "benign_p4.pth"), pickle_protocol=4)
    torch.save(tree, os.path.join(d, "benign_legacy.pth"), _use_new_zipfile_serialization=False)
    save_file(flatten(tree), os.path.join(d, "benign_expect.safetensors"))
    for name in ("benign.pth", "benign_p4.pth", "benign_legacy.pth"):
        # torch's weights_only unpickler knows no FRAME opcode (protocol 4):
        # this benign file, written just above, is read back in full.
        back = torch.load(os.path.join(d, name), weights_only=name != "benign_p4.pth")
        assert torch.equal(back["transposed"], tree["transposed"]), name
    sd = {"conv.weight": torch.ones((2, 2))}
    evil = {
        "evil_system.pth": Reduce(os.system, ("echo pwned",)),
        "evil_eval.pth": Reduce(eval, ("print('pwned')",)),
        "evil_popen.pth": Reduce(subprocess.Popen, (["echo", "pwned"],)),
    }
    for name, obj in evil.items():
        torch.save({"state_dict": sd, "extra": obj}, os.path.join(d, name))
    write_inst_pth(os.path.join(d, "evil_inst.pth"))
    for name in list(evil) + ["evil_inst.pth"]:
        try:
            torch.load(os.path.join(d, name), weights_only=True)
        except Exception as e:  # noqa: BLE001 - any refusal will do
            print(f"{name}: torch weights_only refuses: {str(e).splitlines()[0][:120]}")
        else:
            raise AssertionError(name + " loaded with weights_only=True")
        with zipfile.ZipFile(os.path.join(d, name)) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
            print(f"  {pkl}: {z.read(pkl)[:80]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    x = make_input()
    cases = {"input": x}
    rrdb_case("esrgan_old_x4", 2, 3, False, torch.float32, x, g, cases, args.out)
    rrdb_case("esrgan_old_x2", 1, 3, False, torch.float16, x, g, cases, args.out)
    rrdb_case("rrdb_x4", 2, 3, True, torch.float32, x, g, cases, args.out, pth=True)
    rrdb_case("rrdb_x2", 2, 12, True, torch.float16, x, g, cases, args.out)
    rrdb_case("rrdb_x1", 2, 48, True, torch.float16, x, g, cases, args.out)
    compact_case("compact_x4", 4, torch.float16, x, g, cases, args.out)
    compact_case("compact_x2", 2, torch.float32, x, g, cases, args.out)
    save_file(cases, os.path.join(args.out, "cases.safetensors"))
    pth_fixtures(args.out)
    print("torch", torch.__version__)
    total = 0
    for root, _, files in os.walk(args.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
