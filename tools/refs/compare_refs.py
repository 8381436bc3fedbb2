#!/usr/bin/env python3
"""Compare two safetensors files tensor by tensor (e.g. ref.safetensors from two runs with different thread counts,
or a C engine's dump against a reference). Prints, per tensor group (name up to the first '.', or act.<module>),
the max abs difference and that difference relative to max|reference|.

    python tools/refs/compare_refs.py A.safetensors B.safetensors [--per-tensor] [--json out.json]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refutil  # noqa: E402


def group_of(k):
    parts = k.split(".")
    if parts[0] in ("act", "in", "out", "encode", "decode", "encode_prompt", "pipeline_euler"):
        return ".".join(parts[:2]) if parts[0] in ("encode_prompt",) else parts[0]
    return parts[0]


def compare(a_path, b_path):
    a, _ = refutil.load_st(a_path)
    b, _ = refutil.load_st(b_path)
    rows = {}
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            rows[k] = dict(missing_in="A" if k not in a else "B")
            continue
        d = refutil.max_abs(a[k], b[k])
        m = a[k].double().abs().max().item() if a[k].numel() else 0.0
        rows[k] = dict(max_abs=d, max_ref=m, rel=(d / m if m else d), exact=bool(d == 0.0), shape=list(a[k].shape))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--per-tensor", action="store_true")
    ap.add_argument("--json")
    x = ap.parse_args()
    rows = compare(x.a, x.b)
    groups = {}
    for k, r in rows.items():
        if "missing_in" in r:
            print(f"{k}: missing in {r['missing_in']}")
            continue
        g = groups.setdefault(group_of(k), dict(max_abs=0.0, rel=0.0, n=0, exact=0))
        g["max_abs"] = max(g["max_abs"], r["max_abs"])
        g["rel"] = max(g["rel"], r["rel"])
        g["n"] += 1
        g["exact"] += r["exact"]
        if x.per_tensor:
            print(f"  {k:60s} max|d| {r['max_abs']:.3g}  rel {r['rel']:.3g}  (max|ref| {r['max_ref']:.3g})")
    for g, r in groups.items():
        print(f"{g:28s} {r['n']:3d} tensors ({r['exact']} bit-identical)  max|d| {r['max_abs']:.3g}  max rel {r['rel']:.3g}")
    if x.json:
        with open(x.json, "w") as f:
            json.dump(dict(groups=groups, tensors=rows), f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
