#!/usr/bin/env python3
"""Writes the torch.save fixtures of taxon's restricted .pt reader with Python's own torch.save (Debian's
python3-torch 1.13) and upstream CLIP's VisionTransformer (OpenAI's clip/model.py, loaded by file path as
tests/data/text/make_goldens.py does). Development only; the C++ tests read the committed files and never need Python.

    scripts/text/setup-venv && build-text-venv/bin/python tests/data/pt/make_pt_fixtures.py

Writes, next to this script:
  vit_fp32.pt, vit_fp16.pt, vit_bf16.pt   model.state_dict() (an OrderedDict with _metadata) of a tiny CLIP visual
                                          tower (8 px, patch 4, width 16, 1 layer, output 8) in three dtypes;
  wrapped_state_dict.pt                   {"state_dict": fp16 dict, "epoch": 3, "args": {...}} (training scripts);
  wrapped_model.pt                        {"model": fp16 dict};
  ddp.pt                                  DDP's keys: "module." + the visual tower's keys (fp16);
  warp.pt                                 the seeds' WarpModule around a CLIP-like model: "model.visual." keys (fp16);
  ddp_warp.pt                             both: "module.model.visual." keys (fp16);
  tensors.pt                              shared storage, a strided view with an offset, every dtype taxon reads,
                                          a 0-d tensor and plain values (numbers, strings, bytes, lists, tuples, None);
  evil.pt                                 a zip whose data.pkl calls os.system (crafted: torch.save never writes it);
  legacy.pt                               torch.save(..., _use_new_zipfile_serialization=False) (pre-1.6 format);
  goldens.json                            the input and Python's forward output of each vit_*.pt, and every value of
                                          tensors.pt, for bit-for-bit checks.
"""
import collections
import importlib.util
import io
import json
import os
import pickle
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.find_spec("clip")
s = importlib.util.spec_from_file_location("clip_model", os.path.join(os.path.dirname(spec.origin), "model.py"))
clip_model = importlib.util.module_from_spec(s)
s.loader.exec_module(clip_model)


class Clipish(torch.nn.Module):  # the part of CLIP that matters here: the visual tower under "visual."
    def __init__(self, visual):
        super().__init__()
        self.visual = visual


class WarpModule(torch.nn.Module):  # deepglint/unicom retrieval.py's pass-through wrapper, as the seeds use it
    def __init__(self, model):
        super().__init__()
        self.model = model


class DDPKeys(torch.nn.Module):  # DistributedDataParallel's state_dict: the wrapped module under "module."
    def __init__(self, module):
        super().__init__()
        self.module = module


def out(name):
    return os.path.join(HERE, name)


torch.manual_seed(5)
visual = clip_model.VisionTransformer(input_resolution=8, patch_size=4, width=16, layers=1, heads=1, output_dim=8)
visual.eval()
# A fixed, dtype-exact input (multiples of 1/64) shared with the C++ test.
x = (torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) % 29 - 14) / 64

goldens = {"input_shape": list(x.shape), "input": x.flatten().tolist(), "forward": {}}
for dtype, name in [(torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")]:
    sd = collections.OrderedDict((k, v.to(dtype)) for k, v in visual.state_dict().items())
    sd._metadata = visual.state_dict()._metadata  # what model.state_dict() carries (BUILD in the pickle)
    torch.save(sd, out(f"vit_{name}.pt"))
    # Python's forward with the weights as stored, in fp32 (as taxon loads them).
    ref = clip_model.VisionTransformer(input_resolution=8, patch_size=4, width=16, layers=1, heads=1, output_dim=8)
    ref.load_state_dict(torch.load(out(f"vit_{name}.pt")))
    ref.float().eval()
    with torch.no_grad():
        goldens["forward"][name] = ref(x).flatten().tolist()

half = visual.half().state_dict()
torch.save({"state_dict": half, "epoch": 3, "args": {"lr": 1e-4, "name": "ViT-tiny", "layers": [1]}},
           out("wrapped_state_dict.pt"))
torch.save({"model": half}, out("wrapped_model.pt"))
torch.save(DDPKeys(visual).state_dict(), out("ddp.pt"))
torch.save(WarpModule(Clipish(visual)).state_dict(), out("warp.pt"))
torch.save(DDPKeys(WarpModule(Clipish(visual))).state_dict(), out("ddp_warp.pt"))

base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8 - 1
tensors = {
    "base": base,
    "view": base[1:, ::2],         # strided, non-zero storage offset, same storage as "base"
    "same": base,                  # the very same tensor
    "f64": torch.tensor([1.0 / 3, -2.5e300], dtype=torch.float64),
    "f16": torch.tensor([0.1, -65504.0, 6e-8], dtype=torch.float16),
    "bf16": torch.tensor([0.1, -3.0e38, 1.0], dtype=torch.bfloat16),
    "i64": torch.tensor([-(2 ** 62), 7], dtype=torch.int64),
    "i32": torch.tensor([-(2 ** 31), 2 ** 31 - 1], dtype=torch.int32),
    "i16": torch.tensor([-300, 300], dtype=torch.int16),
    "i8": torch.tensor([-128, 127], dtype=torch.int8),
    "u8": torch.tensor([0, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "values": {"float": 0.1, "ints": [0, 255, 256, 65535, 65536, -1, 2 ** 31, -(2 ** 40)], "none": None,
               "flags": (True, False), "text": "Pseudanthias squamipinnis", "bytes": b"\x00\xff"},
}
torch.save(tensors, out("tensors.pt"))
goldens["tensors"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.flatten().tolist()}
                      for k, v in tensors.items() if isinstance(v, torch.Tensor)}


class System:  # pickles as GLOBAL 'posix system' + REDUCE: what a hostile "checkpoint" carries
    def __reduce__(self):
        return (os.system, ("echo taxon-fixture-pwned",))


with zipfile.ZipFile(out("evil.pt"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("evil/data.pkl", pickle.dumps({"weight": System()}, protocol=2))
    z.writestr("evil/version", "3\n")

torch.save({"w": torch.ones(2)}, out("legacy.pt"), _use_new_zipfile_serialization=False)

with open(out("goldens.json"), "w") as f:
    json.dump(goldens, f, indent=1)
    f.write("\n")
for name in sorted(os.listdir(HERE)):
    print(f"{os.path.getsize(out(name)):7d}  {name}")
