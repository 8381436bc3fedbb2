#!/usr/bin/env python3
"""Reference values of torch's CUDA generator for src/sample/rng_philox.c.

For each (seed, shape): g = torch.Generator("cuda").manual_seed(seed);
x = torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).
Prints the first 8 and last 4 values (as float32 hex bit patterns and decimals)
and the bit-sum (sum over elements of the uint32 bit pattern, as an integer),
and writes every tensor's raw float32 little-endian bytes, one after another in
manifest order, to OUT/randn_cuda.bin with OUT/manifest.txt describing them.
Also a second draw from the same generator (offset handling) and the device's
SM count / max threads per SM (they fix torch's grid size).

Run on a CUDA machine:  python3 tools/refs/cuda_randn_refs.py OUTDIR
"""
import os
import struct
import sys

import torch

out = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(out, exist_ok=True)
p = torch.cuda.get_device_properties(0)
info = ["torch %s cuda %s device '%s' sm_count %d max_threads_per_sm %s" % (
    torch.__version__, torch.version.cuda, p.name, p.multi_processor_count,
    getattr(p, "max_threads_per_multi_processor", "?"))]
print(info[0])

cases = []
for seed in (0, 1, 42, 12345):
    for shape in ((1, 4, 64, 64), (1, 4, 128, 128), (2, 4, 8, 8), (7,), (17,)):
        cases.append((seed, shape, 1))
# grid-stride path (more elements than threads) and the second draw (offset)
for seed in (0, 42):
    cases.append((seed, (1, 4, 256, 256), 1))
    cases.append((seed, (1, 4, 512, 512), 1))
cases.append((0, (1, 4, 64, 64), 2))
cases.append((7, (17,), 2))
cases.append((7, (1, 4, 512, 512), 2))


def bits(t):
    return (t.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF)


def hx(vals):
    return " ".join("%08x" % v for v in vals)


off = 0
lines = []
with open(os.path.join(out, "randn_cuda.bin"), "wb") as f:
    for seed, shape, draw in cases:
        g = torch.Generator("cuda").manual_seed(seed)
        for _ in range(draw):
            x = torch.randn(shape, generator=g, device="cuda", dtype=torch.float32)
        xc = x.cpu().contiguous().reshape(-1)
        b = bits(xc)
        n = xc.numel()
        f.write(struct.pack("<%di" % n, *xc.view(torch.int32).tolist()))
        first = b[:8].tolist()
        last = b[-4:].tolist()
        line = "seed %d shape %s draw %d numel %d byteoff %d bitsum %d gen_offset_after %s first8 %s last4 %s | %s ... %s" % (
            seed, "x".join(map(str, shape)), draw, n, off, int(b.sum().item()),
            g.get_offset() if hasattr(g, "get_offset") else "?",
            hx(first), hx(last),
            " ".join("%.9g" % v for v in xc[:8].tolist()), " ".join("%.9g" % v for v in xc[-4:].tolist()))
        print(line)
        lines.append(line)
        off += 4 * n
with open(os.path.join(out, "manifest.txt"), "w") as f:
    f.write("\n".join(info + lines) + "\n")
