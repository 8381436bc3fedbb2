"""GPU anchor: diffusers' StableDiffusionXLPipeline at full SDXL base size with
random weights (bf16, SDPA), 1024x1024, 30 Euler steps, CFG 5.0.

This is the peer figure the CUDA back end of sdxl-worker has to beat. It needs
no download: every component is built from its SDXL base config and randomly
initialised on the GPU; the CLIP tokenizers are built from the standard CLIP
BPE merges shipped in data/. Dev tool only (never run by the build or CI).

Run on a machine with torch + diffusers:
    python3 bench/gpu/diffusers_sdxl_anchor.py [--steps 30] [--runs 2] [--batch 1]
Prints seconds per image, denoising it/s (one it = one CFG UNet call of batch 2),
peak GPU memory, and a JSON line with the same figures.
"""
import argparse, gzip, json, os, sys, tempfile, time

import torch
import diffusers
from diffusers import (AutoencoderKL, EulerDiscreteScheduler,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import (CLIPTextConfig, CLIPTextModel,
                          CLIPTextModelWithProjection, CLIPTokenizer)

HERE = os.path.dirname(os.path.abspath(__file__))
BPE = os.path.join(HERE, "..", "..", "data", "clip_bpe_simple_vocab_16e6.txt.gz")


def byte_symbols():
    """CLIP's reversible byte -> printable unicode table (printable bytes map to
    themselves, the rest to 256+n in byte order)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
            + list(range(ord("\xae"), ord("\xff") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    # vocabulary order: printable bytes first, then the remapped ones
    return [table[b] for b in keep] + [table[b] for b in range(256) if b not in keep]


def write_tokenizer(folder, pad):
    lines = gzip.open(BPE, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(l.split()) for l in lines[1:1 + 48894]]
    syms = byte_symbols()
    vocab = syms + [s + "</w>" for s in syms] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "pad_token": pad,
                   "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                   "unk_token": "<|endoftext|>", "do_lower_case": True}, f)
    return CLIPTokenizer.from_pretrained(folder)


def build(dtype):
    dev = torch.device("cuda")
    unet_cfg = dict(sample_size=128, in_channels=4, out_channels=4,
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    block_out_channels=(320, 640, 1280), layers_per_block=2,
                    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
                    cross_attention_dim=2048, use_linear_projection=True,
                    addition_embed_type="text_time", addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=2816, norm_num_groups=32)
    vae_cfg = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                   block_out_channels=(128, 256, 512, 512),
                   down_block_types=("DownEncoderBlock2D",) * 4,
                   up_block_types=("UpDecoderBlock2D",) * 4,
                   sample_size=1024, scaling_factor=0.13025, force_upcast=True)
    te1_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                             num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                             hidden_act="quick_gelu", projection_dim=768,
                             bos_token_id=0, eos_token_id=2, pad_token_id=1)
    te2_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                             num_hidden_layers=32, num_attention_heads=20, max_position_embeddings=77,
                             hidden_act="gelu", projection_dim=1280,
                             bos_token_id=0, eos_token_id=2, pad_token_id=1)
    torch.manual_seed(0)
    with dev:
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        te1 = CLIPTextModel(te1_cfg)
        te2 = CLIPTextModelWithProjection(te2_cfg)
    # keep activations finite with random weights: shrink every weight a little
    with torch.no_grad():
        for m in (unet, vae, te1, te2):
            for p in m.parameters():
                p.mul_(0.5)
    parts = [m.to(dtype).eval() for m in (unet, vae, te1, te2)]
    tmp = tempfile.mkdtemp()
    tok1 = write_tokenizer(os.path.join(tmp, "tok1"), "<|endoftext|>")
    tok2 = write_tokenizer(os.path.join(tmp, "tok2"), "!")
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
                                   prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(vae=parts[1], text_encoder=parts[2], text_encoder_2=parts[3],
                                     tokenizer=tok1, tokenizer_2=tok2, unet=parts[0], scheduler=sched,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    nparams = {n: sum(p.numel() for p in m.parameters()) for n, m in
               zip(("unet", "vae", "te1", "te2"), parts)}
    return pipe, nparams


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cfg", type=float, default=5.0)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    pipe, nparams = build(torch.bfloat16)
    torch.cuda.synchronize()
    print(f"built in {time.perf_counter() - t0:.1f}s; params {nparams}; torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, {torch.cuda.get_device_name()}", flush=True)
    print("attention processor:", type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__)

    step_times = []

    def on_step(p, i, t, kw):
        torch.cuda.synchronize()
        step_times.append(time.perf_counter())
        return kw

    prompt = "a photo of an astronaut riding a horse on mars"
    # warm-up (cuDNN/cuBLAS heuristics, allocator)
    pipe(prompt, num_inference_steps=3, guidance_scale=a.cfg, height=a.size, width=a.size,
         num_images_per_prompt=a.batch, output_type="np")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    results = []
    for r in range(a.runs):
        step_times.clear()
        g = torch.Generator("cuda").manual_seed(r)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = pipe(prompt, num_inference_steps=a.steps, guidance_scale=a.cfg, height=a.size,
                   width=a.size, num_images_per_prompt=a.batch, generator=g, output_type="np",
                   callback_on_step_end=on_step)
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
        # steady-state denoise rate from step 2 on (first step includes encode)
        its = (len(step_times) - 1) / (step_times[-1] - step_times[0])
        results.append(dict(seconds_per_image=total / a.batch, total_s=total, it_per_s=its))
        print(f"run {r}: {total:.3f}s for {a.batch} image(s), {its:.2f} it/s (CFG, UNet batch {2 * a.batch})",
              flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**30
    best = min(results, key=lambda x: x["total_s"])
    summary = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   diffusers=diffusers.__version__, size=a.size, steps=a.steps, batch=a.batch,
                   cfg=a.cfg, dtype="bf16", attention="SDPA", seconds_per_image=best["seconds_per_image"],
                   it_per_s=best["it_per_s"], peak_gib=peak, runs=results)
    print(f"peak GPU memory {peak:.2f} GiB")
    print("JSON " + json.dumps(summary))


if __name__ == "__main__":
    main()
