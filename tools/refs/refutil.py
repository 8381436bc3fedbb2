"""Shared helpers for the reference generators in tools/refs/ (dev tool; the C build never needs Python)."""
import json
import os
import platform
import struct

import torch


def versions():
    """Exact versions of everything that can change the numbers."""
    import diffusers
    import numpy
    import safetensors
    import transformers
    try:
        import tokenizers
        tok = tokenizers.__version__
    except ImportError:  # pragma: no cover
        tok = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
        "tokenizers": tok,
        "torch_num_threads": torch.get_num_threads(),
        "device": "cpu",
        "dtype": "float32",
        "machine": platform.machine(),
    }


def set_threads(n):
    torch.set_num_threads(int(n))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32"}


def write_safetensors(path, tensors, metadata=None):
    """Byte-reproducible safetensors writer: header = {"__metadata__": sorted, then tensors sorted by name}, data in
    that order, header padded with spaces to a multiple of 8. (safetensors' own save_file orders __metadata__
    entries differently from run to run, so two identical runs would not give identical files.)"""
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    blobs, off = [], 0
    for k in sorted(tensors):
        t = tensors[k]
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t)
        t = t.detach().to("cpu").contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[k] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def save_st(path, tensors, description, settings):
    """Write tensors (name -> tensor) as safetensors with __metadata__ {description, settings(JSON)}."""
    meta = {"description": description, "settings": json.dumps(settings, sort_keys=True, ensure_ascii=True)}
    write_safetensors(path, tensors, meta)


def load_st(path):
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def max_abs(a, b):
    a = a.detach().double()
    b = b.detach().double()
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return (a - b).abs().max().item()


class Hooks:
    """Forward hooks that record module outputs as act.<name> (first element when the output is a tuple)."""

    def __init__(self, model, names, prefix="act."):
        self.acts = {}
        self.handles = []
        mods = dict(model.named_modules())
        for n in names:
            m = mods[n]
            self.handles.append(m.register_forward_hook(self._make(prefix + n)))

    def _make(self, key):
        def hook(_m, _inp, out):
            if isinstance(out, (tuple, list)):
                first = out[0]
                # down blocks return (hidden, res_samples tuple)
                if len(out) == 2 and isinstance(out[1], (tuple, list)):
                    for j, r in enumerate(out[1]):
                        self.acts[f"{key}.res_samples.{j}"] = r.detach().clone()
                out = first
            if hasattr(out, "sample") and not isinstance(out, torch.Tensor):
                out = out.sample
            self.acts[key] = out.detach().clone()
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def analytic_image(h, w):
    """[1,3,h,w] in [-1,1]: ch0 sin(3x+y), ch1 cos(2y-x), ch2 x*y with x,y = linspace(-1,1) (x along width, y along rows).
    Same recipe as shipped tiny-sdxl-ref/vae.safetensors (square case)."""
    y = torch.linspace(-1, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(-1, 1, w).view(1, w).expand(h, w)
    img = torch.stack([torch.sin(3 * x + y), torch.cos(2 * y - x), x * y], 0)
    return img.unsqueeze(0).float().contiguous()


def randn(shape, seed):
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(*shape, generator=g, dtype=torch.float32)


def quiet():
    import logging
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
