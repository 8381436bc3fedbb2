"""Make the torch.save test files of tests/data/torch/ (dev tool; the C build and tests never need Python).

    /work/venv-refs/bin/python tools/refs/make_torch_cases.py [--out tests/data/torch]

What it writes (all small, a few KB at most):

  Real torch.save output (torch 2.2.2), each with a reference .safetensors written from the same values
  (every tensor made contiguous, numbers as 0-dim F64/I64 tensors, strings in __metadata__), flattened the
  way src/io/torchfile.h documents: nested dict keys joined with ".", int keys in decimal.
    basic_zip.pt          torch.save(basic)                              zip, pickle protocol 2 (the default)
    basic_zip_p5.pt       torch.save(basic, pickle_protocol=5)           zip, FRAME/MEMOIZE/STACK_GLOBAL
    basic_legacy.pt       torch.save(basic, _use_new_zipfile_serialization=False)
    basic_legacy_p4.pt    the same with pickle_protocol=4
    basic.safetensors     reference for the four basic_* files
      basic: an OrderedDict of f32/f16/bf16/f64/i64/i32/i16/i8/u8/bool tensors, a 0-dim tensor, a 5-dim
      tensor, an empty tensor, an nn.Parameter, a transposed tensor, a sliced transposed tensor (storage offset + steps),
      three views of one storage at different offsets, an expanded (stride 0) tensor, Python float / int
      (small, negative, > 2^31) values and a non-ASCII string.
    nested_zip.pt, nested_legacy.pt, nested.safetensors
      {"state_dict": nn.Sequential(Linear, LayerNorm).state_dict() (an OrderedDict with a `_metadata`
      attribute, so the pickle has BUILD), "epoch", "global_step", "hparams": {"lr", "name"},
      "by_index": {0: tensor, 1: 2.5}, and six leaves the reader ignores: a list, True, None, bytes
      (protocol 2 pickles them through _codecs.encode), torch.float16, torch.Size}.
    float8_zip.pt, float8.safetensors
      {"e4m3": float8_e4m3fn, "e5m2": float8_e5m2 tensors}: torch 2.x's _rebuild_tensor_v3 + UntypedStorage
      + dtype form. (Zip only: torch 2.2's own legacy loader cannot read an UntypedStorage back.)
    small_zip.pt, small_legacy.pt, small.safetensors
      {"w": 2x2 f32, "alpha": 4.0}: small enough for the every-prefix truncation test and as fuzz seeds.
    small_deflate_zip.pt         small_zip.pt re-zipped with every entry deflated (torch stores entries
                                 uncompressed, but tools that re-zip a checkpoint may compress it).
    unsupported_complex_zip.pt   torch.save({"c": complex64 tensor}): UNSUPPORTED.
    root_list_zip.pt             torch.save([tensor]): the saved object is not a dict.

  Malicious files: real torch.save output of a dict holding a tensor and an object whose __reduce__
  returns (function, (command,)); torch.load(weights_only=False) runs the command (checked below, in a
  subprocess: the marker file appears; it is then removed). The command creates
  /tmp/sdxl_torch_pwned_<case>, which the C test checks does NOT exist after reading the file.
    evil_os_system_zip.pt, evil_os_system_legacy.pt
      os.system pickles as GLOBAL 'posix system' on Linux; the bytes are rewritten to 'os system' (same
      function: os re-exports posix.system) so the refused global reads os.system; the zip is rebuilt
      around the edited data.pkl with Python's zipfile.
    evil_eval_zip.pt, evil_eval_legacy.pt
      builtins.eval of "__import__('os').system('touch ...')", pickle protocol 4 (STACK_GLOBAL).

  Hand-crafted files (a small pickler that emits torch's persistent ids and _rebuild_tensor_v2 calls,
  and zip / legacy writers following torch's layout); torch.load accepts crafted_ok_*.pt (checked),
  which validates the crafting, and the bad_* files differ from it in one point each:
    crafted_ok_zip.pt, crafted_ok_legacy.pt     {"t": 2x3 f32 at offset 1 of a 7-element storage}
    bad_storage_size_zip.pt      the persistent id declares 100 elements, data/0 holds 6
    bad_storage_size_legacy.pt   the persistent id declares 9 elements, the record holds 7
    bad_stride_zip.pt, bad_stride_legacy.pt   size (2, 3), stride (4, 1) at offset 1: reaches element 8 of 7
    bad_offset_overflow_zip.pt   storage_offset 2^62 with stride 2^62: 64-bit overflow
    bad_expand_zip.pt            size (2^20, 2^20), stride (0, 0) over one element: 4 TiB of f32
    bad_missing_record_zip.pt    the persistent id names key "7", which has no data/7 entry
    bad_big_endian_zip.pt        byteorder record "big" (UNSUPPORTED)
    bad_dup_name_zip.pt          {"a.b": t, "a": {"b": t}}: two leaves flatten to "a.b"

Not byte-reproducible: legacy files name storages by memory address and zip files carry a random
serialization id; the values are fixed (seeded), so re-running gives files that read the same.
"""
import argparse
import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import torch
import safetensors.torch

MAGIC = 0x1950A86A20F9469CFC6C
PWNED = "/tmp/sdxl_torch_pwned_"


# ---- reference values ---------------------------------------------------------------------------------------

def basic_dict():
    torch.manual_seed(0)
    base = torch.arange(12, dtype=torch.float32) * 0.5 - 2.0
    m = torch.randn(3, 4)
    d = collections.OrderedDict()
    d["f32"] = torch.randn(2, 3)
    d["f16"] = torch.randn(4, 5).half()
    d["bf16"] = torch.randn(3, 2).bfloat16()
    d["f64"] = torch.randn(2, 2, dtype=torch.float64)
    d["i64"] = torch.arange(-3, 3, dtype=torch.int64).reshape(2, 3) * 1000000007
    d["i32"] = torch.tensor([1, -2, 3], dtype=torch.int32)
    d["i16"] = torch.tensor([[-300, 7]], dtype=torch.int16)
    d["i8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    d["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    d["bool"] = torch.tensor([True, False, True])
    d["scalar"] = torch.tensor(3.25)
    d["nd5"] = torch.randn(1, 2, 1, 2, 2)
    d["empty"] = torch.zeros(0, 3)
    d["param"] = torch.nn.Parameter(torch.randn(3))
    d["transposed"] = m.t()
    d["sliced"] = m.t()[1:, ::2]
    d["view_a"] = base[2:5]
    d["view_b"] = base[5:11].view(2, 3)
    d["base"] = base
    d["expanded"] = torch.arange(3.0).expand(4, 3)
    d["alpha"] = 8.0
    d["rank"] = 4
    d["neg"] = -7
    d["big"] = 2 ** 40 + 3
    d["note"] = "trained with \u00e9 \u2713"
    assert not d["transposed"].is_contiguous() and not d["sliced"].is_contiguous()
    assert d["view_a"].untyped_storage().data_ptr() == d["view_b"].untyped_storage().data_ptr()
    assert d["expanded"].stride() == (0, 1)
    return d


def nested_dict():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    sd = net.state_dict()
    assert hasattr(sd, "_metadata")
    return {
        "state_dict": sd,
        "epoch": 3,
        "global_step": 1200,
        "hparams": {"lr": 1e-4, "name": "tiny"},
        "by_index": {0: torch.ones(2), 1: 2.5},
        # ignored by the reader:
        "callbacks": [1, 2],
        "flag": True,
        "nothing": None,
        "blob": b"\x00\x01ab",
        "dtype": torch.float16,
        "shape": torch.Size([2, 3]),
    }


def float8_dict():
    return {"e4m3": torch.tensor([0.5, -1.0, 2.0, 448.0]).to(torch.float8_e4m3fn),
            "e5m2": torch.tensor([[0.25, -3.0], [57344.0, 0.0]]).to(torch.float8_e5m2)}


def small_dict():
    return {"w": torch.tensor([[1.0, -2.0], [0.25, 3.5]]), "alpha": 4.0}


def flatten(obj, prefix="", out=None, meta=None):
    """The reader's documented flattening, in Python: tensors, numbers -> tensors, strings -> metadata."""
    if out is None:
        out, meta = {}, {}
    for k, v in obj.items():
        if isinstance(k, bool) or not isinstance(k, (str, int)):
            continue
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            flatten(v, name, out, meta)
        elif isinstance(v, torch.Tensor):
            out[name] = v.detach().contiguous().clone()
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, float):
            out[name] = torch.tensor(v, dtype=torch.float64)
        elif isinstance(v, int):
            out[name] = torch.tensor(v, dtype=torch.int64)
        elif isinstance(v, str):
            meta[name] = v
    return out, meta


def write_ref(path, obj):
    tensors, meta = flatten(obj)
    safetensors.torch.save_file(tensors, path, metadata=meta or None)


# ---- zip and legacy writers for edited / crafted pickles ----------------------------------------------------

def rezip(src_path, dst_path, edit, compression=zipfile.ZIP_STORED):
    """Copy a torch zip, passing data.pkl through edit(bytes) -> bytes."""
    with zipfile.ZipFile(src_path) as zin, zipfile.ZipFile(dst_path, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = edit(data)
            zout.writestr(info.filename, data)


def write_zip(path, prefix, pkl, records, byteorder=b"little"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        z.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in records.items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", b"3\n")


def write_legacy(path, pkl, records):
    """records: [(key, numel written in the file, bytes)] in file order."""
    out = io.BytesIO()
    out.write(pickle.dumps(MAGIC, protocol=2))
    out.write(pickle.dumps(1001, protocol=2))
    out.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
    out.write(pkl)
    out.write(pickle.dumps([k for k, _, _ in records], protocol=2))
    for _, numel, data in records:
        out.write(struct.pack("<q", numel))
        out.write(data)
    with open(path, "wb") as f:
        f.write(out.getvalue())


class FakeStorage:
    def __init__(self, key, numel, stype=torch.FloatStorage):
        self.key, self.numel, self.stype = key, numel, stype


class FakeTensor:
    """Pickles as torch does a tensor: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


def craft_pickle(obj, legacy):
    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, FakeStorage):
                pid = ("storage", o.stype, o.key, "cpu", o.numel)
                return pid + (None,) if legacy else pid
            return None

    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def f32_bytes(values):
    return struct.pack(f"<{len(values)}f", *values)


# ---- the cases ----------------------------------------------------------------------------------------------

def save(obj, path, **kw):
    torch.save(obj, path, **kw)
    print(f"  {os.path.basename(path):32s} {os.path.getsize(path):6d} bytes")


class EvilSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {self.marker}')",))


def check_live(path, marker):
    """torch.load without weights_only runs the payload: the file really is malicious."""
    if os.path.exists(marker):
        os.remove(marker)
    code = ("import torch, sys; torch.load(sys.argv[1], weights_only=False)")
    subprocess.run([sys.executable, "-c", code, path], check=False, capture_output=True)
    assert os.path.exists(marker), f"{path}: the payload did not run under torch.load"
    os.remove(marker)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "torch"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)  # noqa: E731
    print(f"torch {torch.__version__}, safetensors {safetensors.__version__} -> {out}")

    basic = basic_dict()
    save(basic, p("basic_zip.pt"))
    save(basic, p("basic_zip_p5.pt"), pickle_protocol=5)
    save(basic, p("basic_legacy.pt"), _use_new_zipfile_serialization=False)
    save(basic, p("basic_legacy_p4.pt"), _use_new_zipfile_serialization=False, pickle_protocol=4)
    write_ref(p("basic.safetensors"), basic)

    nested = nested_dict()
    save(nested, p("nested_zip.pt"))
    save(nested, p("nested_legacy.pt"), _use_new_zipfile_serialization=False)
    write_ref(p("nested.safetensors"), nested)

    f8 = float8_dict()
    save(f8, p("float8_zip.pt"))
    write_ref(p("float8.safetensors"), f8)

    small = small_dict()
    save(small, p("small_zip.pt"))
    save(small, p("small_legacy.pt"), _use_new_zipfile_serialization=False)
    rezip(p("small_zip.pt"), p("small_deflate_zip.pt"), lambda b: b, zipfile.ZIP_DEFLATED)
    write_ref(p("small.safetensors"), small)

    save({"c": torch.zeros(2, dtype=torch.complex64)}, p("unsupported_complex_zip.pt"))
    save([torch.ones(2)], p("root_list_zip.pt"))

    # every file above reads back in torch as what the reference holds
    for name, ref, suffixes in [("basic", basic, ["zip", "zip_p5", "legacy", "legacy_p4"]),
                                ("nested", nested, ["zip", "legacy"]), ("float8", f8, ["zip"]),
                                ("small", small, ["zip", "legacy", "deflate_zip"])]:
        want, meta = flatten(ref)
        for suffix in suffixes:
            got, gmeta = flatten(torch.load(p(f"{name}_{suffix}.pt"), weights_only=False))
            assert got.keys() == want.keys() and gmeta == meta, name
            for k in want:
                assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
                assert torch.equal(got[k].reshape(-1).view(torch.uint8), want[k].reshape(-1).view(torch.uint8)), k

    # ---- malicious
    w = torch.tensor([1.0, 2.0])
    tmp = p("tmp.pt")
    marker = PWNED + "os_system"
    torch.save({"w": w, "payload": EvilSystem(marker)}, tmp)
    rezip(tmp, p("evil_os_system_zip.pt"), lambda b: b.replace(b"cposix\nsystem\n", b"cos\nsystem\n"))
    torch.save({"w": w, "payload": EvilSystem(marker)}, tmp, _use_new_zipfile_serialization=False)
    with open(tmp, "rb") as f:
        data = f.read()
    assert data.count(b"cposix\nsystem\n") == 1
    with open(p("evil_os_system_legacy.pt"), "wb") as f:
        f.write(data.replace(b"cposix\nsystem\n", b"cos\nsystem\n"))
    marker_e = PWNED + "eval"
    torch.save({"w": w, "payload": EvilEval(marker_e)}, p("evil_eval_zip.pt"), pickle_protocol=4)
    torch.save({"w": w, "payload": EvilEval(marker_e)}, p("evil_eval_legacy.pt"),
               _use_new_zipfile_serialization=False, pickle_protocol=4)
    os.remove(tmp)
    for name, m in [("evil_os_system_zip.pt", marker), ("evil_os_system_legacy.pt", marker),
                    ("evil_eval_zip.pt", marker_e), ("evil_eval_legacy.pt", marker_e)]:
        check_live(p(name), m)
        print(f"  {name:32s} {os.path.getsize(p(name)):6d} bytes (payload runs under torch.load)")

    # ---- crafted
    vals = [0.5, -1.0, 2.0, 3.0, -4.5, 6.25, 7.0]  # 7 elements; t = vals[1:7] as 2x3
    s7 = FakeStorage("0", 7)
    ok = {"t": FakeTensor(s7, 1, (2, 3), (3, 1))}
    write_zip(p("crafted_ok_zip.pt"), "crafted", craft_pickle(ok, False), {"0": f32_bytes(vals)})
    write_legacy(p("crafted_ok_legacy.pt"), craft_pickle(ok, True), [("0", 7, f32_bytes(vals))])
    for suffix in ["zip", "legacy"]:
        t = torch.load(p(f"crafted_ok_{suffix}.pt"), weights_only=True)["t"]
        assert torch.equal(t, torch.tensor(vals[1:7]).reshape(2, 3)), suffix

    write_zip(p("bad_storage_size_zip.pt"), "crafted",
              craft_pickle({"t": FakeTensor(FakeStorage("0", 100), 0, (6,), (1,))}, False), {"0": f32_bytes(vals[:6])})
    write_legacy(p("bad_storage_size_legacy.pt"),
                 craft_pickle({"t": FakeTensor(FakeStorage("0", 9), 0, (7,), (1,))}, True),
                 [("0", 7, f32_bytes(vals))])
    bad_stride = {"t": FakeTensor(s7, 1, (2, 3), (4, 1))}
    write_zip(p("bad_stride_zip.pt"), "crafted", craft_pickle(bad_stride, False), {"0": f32_bytes(vals)})
    write_legacy(p("bad_stride_legacy.pt"), craft_pickle(bad_stride, True), [("0", 7, f32_bytes(vals))])
    write_zip(p("bad_offset_overflow_zip.pt"), "crafted",
              craft_pickle({"t": FakeTensor(s7, 2 ** 62, (2,), (2 ** 62,))}, False), {"0": f32_bytes(vals)})
    write_zip(p("bad_expand_zip.pt"), "crafted",
              craft_pickle({"t": FakeTensor(FakeStorage("0", 1), 0, (2 ** 20, 2 ** 20), (0, 0))}, False),
              {"0": f32_bytes(vals[:1])})
    write_zip(p("bad_missing_record_zip.pt"), "crafted",
              craft_pickle({"t": FakeTensor(FakeStorage("7", 7), 0, (7,), (1,))}, False), {"0": f32_bytes(vals)})
    write_zip(p("bad_big_endian_zip.pt"), "crafted", craft_pickle(ok, False), {"0": f32_bytes(vals)}, b"big")
    t6 = FakeTensor(s7, 0, (6,), (1,))
    write_zip(p("bad_dup_name_zip.pt"), "crafted", craft_pickle({"a.b": t6, "a": {"b": t6}}, False),
              {"0": f32_bytes(vals)})
    for name in sorted(os.listdir(out)):
        if name.startswith(("crafted_", "bad_")):
            print(f"  {name:32s} {os.path.getsize(p(name)):6d} bytes")


if __name__ == "__main__":
    main()
