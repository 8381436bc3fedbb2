#!/usr/bin/env python3
"""Scheduler-only references for the samplers the tiny-model pipeline refs lack.

For each case: <Class>.from_config(SDXL's EulerDiscreteScheduler config in
tests/data/refs/tiny-sdxl/scheduler/scheduler_config.json, plus overrides),
set_timesteps(N), then a loop with a deterministic fake model
    model_out = 0.1 * scale_model_input(x, t) + (t / 1000) * pattern
(float32 throughout) and, for stochastic samplers, a torch CPU generator
seeded with `seed` passed to step().  Saved per case (safetensors):
    timesteps [M] f32, sigmas [K] f32 (if the scheduler has them),
    init_noise_sigma [1] f32, x_init [1,4,8,8], pattern [1,4,8,8],
    samples [M,1,4,8,8] (x after every step() call),
metadata: case, class, steps, seed (-1 = none), overrides (JSON).
Run: /work/venv-refs/bin/python tools/refs/make_sampler_refs.py [--out DIR]
"""
import argparse
import json
import os

import torch
import diffusers

from refutil import write_safetensors  # byte-reproducible (sorted header)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "tests/data/refs/tiny-sdxl/scheduler/scheduler_config.json")

# name, class, steps, seed, overrides
CASES = [
    ("heun_leading_5", "HeunDiscreteScheduler", 5, -1, {}),
    ("heun_karras_4", "HeunDiscreteScheduler", 4, -1, {"use_karras_sigmas": True}),
    ("heun_trailing_v_3", "HeunDiscreteScheduler", 3, -1,
     {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
    ("dpmpp2m_sde_karras_6", "DPMSolverMultistepScheduler", 6, 42,
     {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    ("dpmpp2m_sde_leading_5", "DPMSolverMultistepScheduler", 5, 1234,
     {"algorithm_type": "sde-dpmsolver++"}),
    ("lcm_4", "LCMScheduler", 4, 7, {}),
    ("lcm_1", "LCMScheduler", 1, 3, {}),
    ("lcm_6_v", "LCMScheduler", 6, 11, {"prediction_type": "v_prediction"}),
    ("unipc_leading_6", "UniPCMultistepScheduler", 6, -1, {}),
    ("unipc_karras_5", "UniPCMultistepScheduler", 5, -1, {"use_karras_sigmas": True}),
    ("unipc_trailing_v_4", "UniPCMultistepScheduler", 4, -1,
     {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
    ("unipc_linspace_2", "UniPCMultistepScheduler", 2, -1, {"timestep_spacing": "linspace"}),
]


def make(case, out_dir):
    name, cls_name, steps, seed, over = case
    with open(BASE) as f:
        cfg = json.load(f)
    cfg.update(over)
    sched = getattr(diffusers, cls_name).from_config(cfg)
    sched.set_timesteps(steps)
    g = torch.Generator("cpu").manual_seed(1000 + steps)
    x_init = torch.randn((1, 4, 8, 8), generator=g, dtype=torch.float32)
    pattern = torch.randn((1, 4, 8, 8), generator=g, dtype=torch.float32)
    gen = torch.Generator("cpu").manual_seed(seed) if seed >= 0 else None
    x = x_init * sched.init_noise_sigma
    samples = []
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        out = 0.1 * xin + (float(t) / 1000.0) * pattern
        kw = {"generator": gen} if gen is not None else {}
        x = sched.step(out, t, x, return_dict=False, **kw)[0]
        samples.append(x.clone())
    tensors = {
        "timesteps": sched.timesteps.to(torch.float32).contiguous(),
        "init_noise_sigma": torch.tensor([float(sched.init_noise_sigma)], dtype=torch.float32),
        "x_init": x_init.contiguous(),
        "pattern": pattern.contiguous(),
        "samples": torch.stack(samples).contiguous(),
    }
    if getattr(sched, "sigmas", None) is not None:
        tensors["sigmas"] = sched.sigmas.to(torch.float32).contiguous()
    meta = {"case": name, "class": cls_name, "steps": str(steps), "seed": str(seed),
            "overrides": json.dumps(over, sort_keys=True),
            "diffusers": diffusers.__version__, "torch": torch.__version__}
    path = os.path.join(out_dir, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    print(f"{path}: {len(samples)} calls, t={sched.timesteps.tolist()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/data/refs/samplers"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    for c in CASES:
        make(c, a.out)


if __name__ == "__main__":
    main()
