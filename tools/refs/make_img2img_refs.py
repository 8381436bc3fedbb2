"""img2img references: diffusers 0.27.2 StableDiffusionXLImg2ImgPipeline (torch 2.2.2, CPU, float32).

Writes to --out (default tests/data/refs/img2img):
  tiny_<sampler>.safetensors  tiny-sdxl (tests/data/refs/tiny-sdxl), init image demo/reference/base_red_circle.png
                              (64x64), prompt P0, no negative, guidance 5, seed 7, strength 0.5, 6 steps:
                              "init_latents" (posterior sample x scaling_factor), "noise", "noisy" (after
                              scheduler.add_noise), "latents" (final, output_type="latent"), "image" (output_type="np",
                              [1,H,W,3] f32 in [0,1]); metadata: start_step, timesteps. Samplers: Euler, Euler a,
                              DPM++ 2M, DDIM (clip_sample and set_alpha_to_one false, as SDXL base's config),
                              Heun (start_step counts model calls: order·t_start), DPM++ 2M SDE, UniPC, LCM.
  init_red_circle.png         the init image (a copy of demo/reference/base_red_circle.png)
  demo_blue_star.safetensors  the same tensors for the demo run below
  demo_blue_star.png          demo model, same init image, "a blue star on a yellow background", guidance 6, seed 5,
                              strength 0.6, 10 Euler steps, the PIL image diffusers returns.
The rng order is diffusers': one torch.Generator("cpu").manual_seed(seed); the VAE posterior's sample() draws its
randn first, then prepare_latents draws the noise.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refutil import set_threads, versions, write_safetensors  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,  # noqa: E402
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LCMScheduler, StableDiffusionXLImg2ImgPipeline,
                       UniPCMultistepScheduler)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
P0 = "a photo of an astronaut riding a horse on mars"
SAMPLERS = {
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "heun": HeunDiscreteScheduler,
    "dpmpp_2m_sde": DPMSolverMultistepScheduler,  # algorithm_type sde-dpmsolver++ (see load)
    "unipc": UniPCMultistepScheduler,
    "lcm": LCMScheduler,
}


def load(model, cls, name=None):
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(model, torch_dtype=torch.float32)
    extra = {}
    if cls is DDIMScheduler:  # SDXL base's scheduler config carries these (as this engine's defaults do)
        extra = dict(clip_sample=False, set_alpha_to_one=False)
    if name == "dpmpp_2m_sde":
        extra = dict(algorithm_type="sde-dpmsolver++")
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(out, init, name, cls, seed=7, strength=0.5, steps=6, guidance=5.0, model="tests/data/refs/tiny-sdxl",
        prompt=P0, file=None):
    pipe = load(os.path.join(ROOT, model), cls, name)
    captured = {}
    orig_add_noise = pipe.scheduler.add_noise

    def add_noise(x, noise, t):
        captured["init_latents"] = x.clone()
        captured["noise"] = noise.clone()
        captured["t"] = t.clone()
        y = orig_add_noise(x, noise, t)
        captured["noisy"] = y.clone()
        return y

    pipe.scheduler.add_noise = add_noise
    kw = dict(prompt=prompt, image=init, strength=strength, num_inference_steps=steps, guidance_scale=guidance)
    lat = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="latent", **kw).images
    img = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw).images
    t_start = (steps - min(int(steps * strength), steps)) * pipe.scheduler.order
    meta = {"sampler": name, "seed": str(seed), "strength": str(strength), "steps": str(steps),
            "guidance": str(guidance), "start_step": str(t_start), "prompt": prompt,
            "latent_timestep": str(float(captured["t"][0])),
            "timesteps": json.dumps([float(t) for t in pipe.scheduler.timesteps]),
            "versions": json.dumps(versions(), sort_keys=True)}
    tensors = {k: captured[k].contiguous() for k in ("init_latents", "noise", "noisy")}
    tensors["latents"] = lat.contiguous()
    tensors["image"] = torch.from_numpy(np.ascontiguousarray(img)).float()
    write_safetensors(os.path.join(out, file or f"tiny_{name}.safetensors"), tensors, meta)
    print(name, "start_step", t_start, "t", float(captured["t"][0]))


def demo(out, init):
    pipe = load(os.path.join(ROOT, "demo/model"), EulerDiscreteScheduler)
    img = pipe(prompt="a blue star on a yellow background", image=init, strength=0.6, num_inference_steps=10,
               guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(5)).images[0]
    img.save(os.path.join(out, "demo_blue_star.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/data/refs/img2img"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    set_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    init_path = os.path.join(a.out, "init_red_circle.png")  # a copy, so the refs stand alone
    shutil.copyfile(os.path.join(ROOT, "demo/reference/base_red_circle.png"), init_path)
    init = Image.open(init_path).convert("RGB")
    for name, cls in SAMPLERS.items():
        run(a.out, init, name, cls)
    run(a.out, init, "euler", EulerDiscreteScheduler, seed=5, strength=0.6, steps=10, guidance=6.0, model="demo/model",
        prompt="a blue star on a yellow background", file="demo_blue_star.safetensors")
    demo(a.out, init)


if __name__ == "__main__":
    main()
