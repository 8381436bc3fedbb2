#!/usr/bin/env python3
"""Build a tiny random SDXL of a variant configuration (tools/refs/variants.py) and write, under OUT/<name>/:

  model/                    diffusers layout (model_index.json, unet/, vae/, text_encoder/, text_encoder_2/,
                            tokenizer/, tokenizer_2/ (copied from shared/refs/tiny-sdxl), scheduler/), fp32 safetensors
  model-single-file/<name>.safetensors   the same weights as one Stability SGM checkpoint (sgm.py)
  model-single-file/<name>.yaml          SGM-style config (+ a `nonstandard:` block)
  ref.safetensors           reference activations computed by diffusers from model/ (see its __metadata__)
  variant.json              summary: configs, derived facts, round-trip result, file sizes

    python tools/refs/make_variant.py --variant all --out tests/data/refs/variants [--threads 2]

The single-file round trip is verified with diffusers' own SGM->diffusers converters (bit-identical tensors),
and the script fails if it is not.
"""
import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import refutil  # noqa: E402

refutil.quiet()
import torch  # noqa: E402
from torch import nn  # noqa: E402

import sgm  # noqa: E402
import variants as V  # noqa: E402

DEFAULT_TOKENIZERS = os.environ.get("SDXL_SHARED_REFS", "/work/shared/refs") + "/tiny-sdxl"


# ----------------------------------------------------------------------------------------------------------------
# configs

def derive(v):
    """Full constructor arguments for the four models and the scheduler."""
    t1 = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1, max_position_embeddings=77, layer_norm_eps=1e-5,
              attention_dropout=0.0, initializer_factor=2.0, projection_dim=v["te1"]["hidden_size"])
    t1.update(v["te1"])
    t2 = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1, max_position_embeddings=77, layer_norm_eps=1e-5,
              attention_dropout=0.0, initializer_factor=2.0)
    t2.update(v["te2"])
    u = dict(v["unet"])
    n = len(u["block_out_channels"])
    vae_factor = 2 ** (len(v["vae"]["block_out_channels"]) - 1)
    H, W = v["image"]
    assert H % vae_factor == 0 and W % vae_factor == 0
    h, w = H // vae_factor, W // vae_factor
    assert h % 2 ** (n - 1) == 0 and w % 2 ** (n - 1) == 0, "latent must divide by the UNet's downsampling"
    u.update(
        sample_size=max(h, w),
        in_channels=4, out_channels=4,
        up_block_types=["CrossAttnUpBlock2D" if t.startswith("CrossAttn") else "UpBlock2D"
                        for t in reversed(u["down_block_types"])],
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=t1["hidden_size"] + t2["hidden_size"],
        addition_embed_type="text_time",
        projection_class_embeddings_input_dim=6 * u["addition_time_embed_dim"] + t2["projection_dim"],
        act_fn="silu", flip_sin_to_cos=True, freq_shift=0, norm_eps=1e-5,
    )
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", sample_size=max(H, W), force_upcast=True,
               down_block_types=["DownEncoderBlock2D"] * len(v["vae"]["block_out_channels"]),
               up_block_types=["UpDecoderBlock2D"] * len(v["vae"]["block_out_channels"]))
    vae.update(v["vae"])
    sched = dict(V.SDXL_EULER)
    sched.update(v.get("scheduler", {}))
    return dict(unet=u, vae=vae, te1=t1, te2=t2, scheduler=sched, latent_hw=(h, w), vae_scale_factor=vae_factor)


# ----------------------------------------------------------------------------------------------------------------
# models

def perturb_(model, gen):
    """Default inits leave every norm at weight 1 / bias 0 and every CLIP bias at 0, which would hide a C bug that
    drops or swaps them. Give them seeded random values (deterministic: module order is construction order)."""
    with torch.no_grad():
        for _name, mod in model.named_modules():
            if isinstance(mod, (nn.LayerNorm, nn.GroupNorm)) and mod.weight is not None:
                mod.weight.add_(0.2 * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.add_(0.1 * torch.randn(mod.bias.shape, generator=gen))
            elif isinstance(mod, (nn.Linear, nn.Conv2d)) and mod.bias is not None and not mod.bias.any():
                mod.bias.add_(0.05 * torch.randn(mod.bias.shape, generator=gen))


def build_models(v, cfg):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    seed = v["seed"]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**cfg["vae"])
    torch.manual_seed(seed + 2)
    te1 = CLIPTextModel(CLIPTextConfig(**cfg["te1"]))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["te2"]))
    gen = torch.Generator().manual_seed(seed + 3)
    for m in (unet, vae, te1, te2):
        perturb_(m, gen)
        m.eval()
    return unet, vae, te1, te2


def save_diffusers(out, unet, vae, te1, te2, cfg, tokenizers_from):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer
    tok1 = CLIPTokenizer.from_pretrained(os.path.join(tokenizers_from, "tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(os.path.join(tokenizers_from, "tokenizer_2"))
    sched = EulerDiscreteScheduler(**cfg["scheduler"])
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
                                     unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True, add_watermarker=False)
    if os.path.exists(out):
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):  # byte-identical copies of the shipped tiny tokenizers
        shutil.rmtree(os.path.join(out, sub))
        shutil.copytree(os.path.join(tokenizers_from, sub), os.path.join(out, sub))
        for f in os.listdir(os.path.join(out, sub)):
            os.chmod(os.path.join(out, sub, f), 0o644)
        os.chmod(os.path.join(out, sub), 0o755)


# ----------------------------------------------------------------------------------------------------------------
# single file

def write_single_file(dirp, name, pipe, cfg, image_hw, settings_meta):
    sd = sgm.to_sgm(pipe.unet.state_dict(), pipe.unet.config, pipe.vae.state_dict(), pipe.vae.config,
                    pipe.text_encoder.state_dict(), pipe.text_encoder_2.state_dict())
    os.makedirs(dirp, exist_ok=True)
    path = os.path.join(dirp, f"{name}.safetensors")
    meta = {
        "description": f"tiny SDXL test variant {name} in Stability's SGM single-file layout (model.diffusion_model.*, "
                       "first_stage_model.*, conditioner.embedders.0.transformer.text_model.* (HF CLIP), "
                       "conditioner.embedders.1.model.* (OpenCLIP: in_proj = cat(q,k,v), text_projection [hidden, proj])); "
                       "same weights as ../model (diffusers layout). Config: the .yaml beside this file.",
        "scaling_factor": repr(float(pipe.vae.config.scaling_factor)),
        "settings": json.dumps(settings_meta, sort_keys=True),
    }
    refutil.write_safetensors(path, sd, meta)
    yml = sgm.sgm_yaml(pipe.unet.config, pipe.vae.config, pipe.text_encoder.config.to_dict(),
                       pipe.text_encoder_2.config.to_dict(), image_hw)
    with open(os.path.join(dirp, f"{name}.yaml"), "w") as f:
        f.write(yml)
    return path, len(sd)


def verify_single_file(path, yaml_path, model_dir, pipe):
    """Convert the SGM file back with diffusers' own converters and compare bit for bit."""
    import yaml
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import load_file
    ckpt = load_file(path)
    res = {}

    def cmp(label, got, want):
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        diff = [k for k in want if k in got and not (got[k].shape == want[k].shape and torch.equal(got[k], want[k]))]
        res[label] = dict(tensors=len(want), missing=missing, unexpected=extra, different=diff,
                          ok=not (missing or extra or diff))

    cmp("unet", sfu.convert_ldm_unet_checkpoint(dict(ckpt), dict(pipe.unet.config)), pipe.unet.state_dict())
    cmp("vae", sfu.convert_ldm_vae_checkpoint(dict(ckpt), dict(pipe.vae.config)), pipe.vae.state_dict())
    t1 = sfu.create_text_encoder_from_ldm_clip_checkpoint(os.path.join(model_dir, "text_encoder"), dict(ckpt),
                                                           local_files_only=True)
    want1 = {k: v for k, v in pipe.text_encoder.state_dict().items()}
    cmp("text_encoder", t1.state_dict(), want1)
    t2 = sfu.create_text_encoder_from_open_clip_checkpoint(os.path.join(model_dir, "text_encoder_2"), dict(ckpt),
                                                            prefix=sgm.TE2_PREFIX, has_projection=True,
                                                            local_files_only=True)
    cmp("text_encoder_2", t2.state_dict(), pipe.text_encoder_2.state_dict())

    # What diffusers' single-file code would infer from the yaml alone (informative; not used for the comparison).
    with open(yaml_path) as f:
        orig = yaml.safe_load(f)
    inf_u = sfu.create_unet_diffusers_config(orig, image_size=pipe.vae.config.sample_size)
    inf_v = sfu.create_vae_diffusers_config(orig, image_size=pipe.vae.config.sample_size)
    uc, vc = pipe.unet.config, pipe.vae.config
    lv = [i for i, t in enumerate(uc.down_block_types) if t.startswith("CrossAttn")] + [len(uc.block_out_channels) - 1]

    def per_level(x, n):
        return list(x) if isinstance(x, (list, tuple)) else [x] * n
    n = len(uc.block_out_channels)
    mism = {}
    for k in ("down_block_types", "up_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
              "use_linear_projection", "addition_embed_type", "addition_time_embed_dim",
              "projection_class_embeddings_input_dim"):
        a = list(inf_u[k]) if isinstance(inf_u[k], (list, tuple)) else inf_u[k]
        b = list(uc[k]) if isinstance(uc[k], (list, tuple)) else uc[k]
        if a != b:
            mism[k] = dict(inferred=a, actual=b)
    for k in ("attention_head_dim", "transformer_layers_per_block"):
        a = per_level(inf_u[k], n) if inf_u[k] is not None else [None] * n
        b = per_level(uc[k], n)
        if [a[i] for i in lv] != [b[i] for i in lv]:
            mism[k] = dict(inferred=inf_u[k], actual=b)
    if inf_u.get("class_embed_type") is not None:
        mism["class_embed_type"] = dict(inferred=inf_u["class_embed_type"], actual=None)
    for k in ("block_out_channels", "layers_per_block", "scaling_factor", "latent_channels"):
        a = list(inf_v[k]) if isinstance(inf_v[k], (list, tuple)) else inf_v[k]
        b = list(vc[k]) if isinstance(vc[k], (list, tuple)) else vc[k]
        if a != b:
            mism["vae." + k] = dict(inferred=a, actual=b)
    if vc.norm_num_groups != 32:
        mism["vae.norm_num_groups"] = dict(inferred=32, actual=vc.norm_num_groups)
    if uc.norm_num_groups != 32:
        mism["unet.norm_num_groups"] = dict(inferred=32, actual=uc.norm_num_groups)
    res["config_inferred_by_diffusers_single_file_differs"] = mism
    res["all_tensors_bit_identical"] = all(r["ok"] for r in res.values() if isinstance(r, dict) and "ok" in r)
    return res


# ----------------------------------------------------------------------------------------------------------------
# references

UNET_HOOKS_FIXED = ["time_proj", "time_embedding", "add_time_proj", "add_embedding", "conv_in", "conv_norm_out", "conv_out"]


def unet_hook_names(unet):
    names = list(UNET_HOOKS_FIXED)
    names += [f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
    names += ["mid_block"] + [f"up_blocks.{i}" for i in range(len(unet.up_blocks))]
    names += ["down_blocks.0.resnets.0"]
    # the first transformer block of the first attention module (proj_in shows conv [B,C,H,W] vs linear [B,HW,C])
    first = None
    for n, m in unet.named_modules():
        if type(m).__name__ == "Transformer2DModel":
            first = n
            break
    names += [f"{first}.proj_in", f"{first}.transformer_blocks.0.attn1", f"{first}.transformer_blocks.0.attn2",
              f"{first}.transformer_blocks.0.ff", first]
    return names, first


def make_refs(pipe, v, cfg, name):
    H, W = v["image"]
    h, w = cfg["latent_hw"]
    sf = pipe.vae.config.scaling_factor
    t = {}
    P, NEG = V.PROMPTS, V.NEGATIVE

    # tokens
    for tag, tk in (("tok1", pipe.tokenizer), ("tok2", pipe.tokenizer_2)):
        kw = dict(padding="max_length", max_length=tk.model_max_length, truncation=True, return_tensors="pt")
        t[f"{tag}.input_ids"] = tk(P, **kw).input_ids
        t[f"{tag}.neg_input_ids"] = tk([NEG], **kw).input_ids

    with torch.no_grad():
        # text encoders on the two prompts
        for tag, enc, ids in (("te1", pipe.text_encoder, t["tok1.input_ids"]), ("te2", pipe.text_encoder_2, t["tok2.input_ids"])):
            o = enc(ids, output_hidden_states=True)
            t[f"{tag}.hidden_states.0"] = o.hidden_states[0]
            t[f"{tag}.penultimate"] = o.hidden_states[-2]
            t[f"{tag}.last_hidden_state"] = o.last_hidden_state
            if tag == "te1":
                t["te1.pooler_output"] = o.pooler_output
            else:
                t["te2.text_embeds"] = o.text_embeds

        # encode_prompt
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        for case, kw in (("negNone", dict(prompt=P, negative_prompt=None)),
                         ("negText", dict(prompt=P[0], negative_prompt=NEG))):
            out = pipe.encode_prompt(device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, **kw)
            for n_, x in zip(names, out):
                t[f"encode_prompt.{case}.{n_}"] = x
        assert not t["encode_prompt.negNone.negative_prompt_embeds"].any()
        assert not t["encode_prompt.negNone.negative_pooled_prompt_embeds"].any()

        # one UNet forward, batch 2 = [negative, positive] of case negText
        lat = refutil.randn((1, 4, h, w), V.SEEDS["unet_latent"])
        t["in.sample"] = lat.repeat(2, 1, 1, 1)
        t["in.timestep"] = torch.tensor([V.TIMESTEP], dtype=torch.float32)
        t["in.encoder_hidden_states"] = torch.cat([t["encode_prompt.negText.negative_prompt_embeds"],
                                                   t["encode_prompt.negText.prompt_embeds"]])
        t["in.text_embeds"] = torch.cat([t["encode_prompt.negText.negative_pooled_prompt_embeds"],
                                         t["encode_prompt.negText.pooled_prompt_embeds"]])
        t["in.time_ids"] = torch.tensor([[H, W, 0, 0, H, W]] * 2, dtype=torch.float32)
        hook_names, first_attn = unet_hook_names(pipe.unet)
        hooks = refutil.Hooks(pipe.unet, hook_names)
        t["out.noise_pred"] = pipe.unet(t["in.sample"], t["in.timestep"], encoder_hidden_states=t["in.encoder_hidden_states"],
                                        added_cond_kwargs={"text_embeds": t["in.text_embeds"], "time_ids": t["in.time_ids"]}).sample
        hooks.remove()
        t.update(hooks.acts)

        # VAE
        z = refutil.randn((1, 4, h, w), V.SEEDS["vae_latent"])
        t["decode.in.latents"] = z
        t["decode.out.sample"] = pipe.vae.decode(z / sf).sample
        img = refutil.analytic_image(H, W)
        t["encode.in.image"] = img
        dist = pipe.vae.encode(img).latent_dist
        t["encode.out.mean"] = dist.mean
        t["encode.out.logvar"] = dist.logvar

        # 3-step Euler pipeline (negative None -> zero negative embeds), latents passed in, output_type latent
        steps = {}

        def cb(_p, i, _t, kw):
            steps[f"pipeline_euler.step{i}.latents_after"] = kw["latents"].clone()
            return {}
        pl = refutil.randn((1, 4, h, w), V.SEEDS["pipeline_latent"])
        t["pipeline_euler.in.latents"] = pl
        out = pipe(prompt=P[0], negative_prompt=None, num_inference_steps=V.PIPELINE_STEPS, guidance_scale=V.GUIDANCE,
                   height=H, width=W, latents=pl.clone(), output_type="latent", callback_on_step_end=cb,
                   return_dict=True).images
        t["pipeline_euler.out.latents"] = out
        t.update(steps)
        t["pipeline_euler.sched.timesteps"] = pipe.scheduler.timesteps.float()
        t["pipeline_euler.sched.sigmas"] = pipe.scheduler.sigmas.float()
        t["pipeline_euler.sched.init_noise_sigma"] = torch.tensor([float(pipe.scheduler.init_noise_sigma)])

    t = {k: (x.contiguous() if x.dtype in (torch.int64,) else x.float().contiguous()) for k, x in t.items()}
    info = dict(first_attention=first_attn, hooks=hook_names)
    return t, info


def describe(name, v, cfg, info):
    H, W = v["image"]
    h, w = cfg["latent_hw"]
    u = cfg["unet"]
    return (
        f"Reference activations of tiny SDXL test variant '{name}' ({v['summary']}), computed by diffusers "
        f"StableDiffusionXLPipeline from ./model on CPU in fp32 (versions and every setting in metadata 'settings'). "
        f"Image {H}x{W} (HxW), latent [1,4,{h},{w}], vae_scale_factor {cfg['vae_scale_factor']}, "
        f"scaling_factor {cfg['vae']['scaling_factor']}. "
        f"PROMPTS = settings.prompts (2), NEG = settings.negative_prompt. "
        "tok1/tok2.input_ids [2,77] int64 = tokenizer/tokenizer_2 as encode_prompt calls them (padding max_length 77, "
        "truncation; tok1 pads with <|endoftext|> 913, tok2 with '!' 0); tokN.neg_input_ids [1,77] for NEG. "
        "te1/te2 on the PROMPTS ids: hidden_states.0 = token + position embeddings; penultimate = hidden_states[-2] = "
        "output of layer L-1 of L, no final LN (what SDXL uses; for a 1-layer encoder it is hidden_states.0); last_hidden_state = final LN of the last; "
        "te1.pooler_output = last_hidden_state at the eos position; te2.text_embeds = text_projection(pooled) (no bias). "
        "encode_prompt.negNone.* = encode_prompt(PROMPTS, negative_prompt=None, do_classifier_free_guidance=True): "
        "negative embeds and pooled are exact zeros (force_zeros_for_empty_prompt); encode_prompt.negText.* = "
        "encode_prompt(PROMPTS[0], negative_prompt=NEG). prompt_embeds = cat(te1 penultimate, te2 penultimate) on the last dim "
        f"[.,77,{u['cross_attention_dim']}]; pooled = te2 text_embeds. "
        "UNet forward: in.sample = randn(seed settings.seeds.unet_latent) [1,4,h,w] repeated to batch 2, in.timestep = [501.0], "
        "in.encoder_hidden_states / in.text_embeds = cat([negative, positive]) of encode_prompt.negText, "
        f"in.time_ids = [H, W, 0, 0, H, W] = [{H},{W},0,0,{H},{W}] for both rows -> out.noise_pred. "
        "act.<module> = forward-hook output of that diffusers submodule (first element of a tuple; down blocks also give "
        "act.down_blocks.N.res_samples.j). act.time_proj = sinusoid of the timestep (flip_sin_to_cos: [cos, sin], shift 0), "
        "act.add_time_proj = the same sinusoid (dim addition_time_embed_dim) of each of the 6 time_ids, flattened [B*6, dim]; "
        "add_embedding input = cat(text_embeds, add_time_proj.reshape(B, 6*dim)); emb = time_embedding + add_embedding. "
        f"The hooked transformer is {info['first_attention']}. "
        "VAE: decode.out.sample = vae.decode(decode.in.latents / scaling_factor).sample with decode.in.latents = "
        "randn(seed settings.seeds.vae_latent); encode.in.image = analytic image in [-1,1] (ch0 sin(3x+y), ch1 cos(2y-x), "
        "ch2 x*y, x = linspace(-1,1,W) along columns, y = linspace(-1,1,H) along rows); encode.out.mean / logvar = "
        "latent_dist (logvar clamped to [-30, 20]). "
        f"pipeline_euler.*: pipe(prompt=PROMPTS[0], negative_prompt=None, num_inference_steps={V.PIPELINE_STEPS}, "
        f"guidance_scale={V.GUIDANCE}, height={H}, width={W}, latents=pipeline_euler.in.latents (randn seed "
        "settings.seeds.pipeline_latent, AS PASSED: the pipeline multiplies it by init_noise_sigma), output_type='latent') "
        "-> out.latents (not divided by scaling_factor); stepN.latents_after = latents after scheduler step N; "
        f"sched.* = the scheduler's timesteps, sigmas and init_noise_sigma. time_ids [{H},{W},0,0,{H},{W}]; "
        "CFG noise = uncond + guidance*(text - uncond) with zero negative embeds."
    )


# ----------------------------------------------------------------------------------------------------------------

def du(path):
    tot = 0
    for root, _d, files in os.walk(path):
        for f in files:
            tot += os.path.getsize(os.path.join(root, f))
    return tot


def run_variant(name, out_root, tokenizers_from, refs_only=False):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer
    v = V.VARIANTS[name] if name in V.VARIANTS else V.EXTRA_VARIANTS[name]
    cfg = derive(v)
    vdir = os.path.join(out_root, name)
    mdir = os.path.join(vdir, "model")
    t0 = time.time()
    if not refs_only:
        unet, vae, te1, te2 = build_models(v, cfg)
        save_diffusers(mdir, unet, vae, te1, te2, cfg, tokenizers_from)
        built = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": te1.state_dict(),
                 "text_encoder_2": te2.state_dict()}
    # everything below uses the files as written
    pipe = StableDiffusionXLPipeline.from_pretrained(mdir, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.tokenizer) is CLIPTokenizer and type(pipe.tokenizer_2) is CLIPTokenizer
    if not refs_only:
        for comp, sd in built.items():
            got = getattr(pipe, comp).state_dict()
            assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), f"{comp} reload differs"
    settings = dict(
        variant=name, summary=v["summary"], seed=v["seed"], image_hw=list(v["image"]), latent_hw=list(cfg["latent_hw"]),
        vae_scale_factor=cfg["vae_scale_factor"],
        init=("torch.manual_seed(seed) -> UNet2DConditionModel(**unet); manual_seed(seed+1) -> AutoencoderKL(**vae); "
              "manual_seed(seed+2) -> CLIPTextModel(te1) then CLIPTextModelWithProjection(te2) (transformers init with "
              "initializer_factor 2.0); then Generator(seed+3) in module order over unet, vae, te1, te2: every "
              "LayerNorm/GroupNorm weight += 0.2*randn, bias += 0.1*randn; every all-zero Linear/Conv2d bias += 0.05*randn"),
        unet=dict(pipe.unet.config), vae=dict(pipe.vae.config), text_encoder=pipe.text_encoder.config.to_dict(),
        text_encoder_2=pipe.text_encoder_2.config.to_dict(), scheduler=dict(pipe.scheduler.config),
        prompts=V.PROMPTS, negative_prompt=V.NEGATIVE, seeds=V.SEEDS, timestep=V.TIMESTEP, guidance_scale=V.GUIDANCE,
        pipeline_steps=V.PIPELINE_STEPS, versions=refutil.versions(),
    )
    settings = json.loads(json.dumps(settings, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
    for k in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler"):  # no local paths in the outputs
        for junk in ("_name_or_path", "_commit_hash", "_use_default_values"):
            settings[k].pop(junk, None)
    result = {}
    result["params"] = {c: int(sum(p.numel() for p in getattr(pipe, c).parameters()))
                        for c in ("unet", "vae", "text_encoder", "text_encoder_2")}
    sf_dir = os.path.join(vdir, "model-single-file")
    if not refs_only:
        path, ntens = write_single_file(sf_dir, name, pipe, cfg, v["image"],
                                        {k: settings[k] for k in ("variant", "unet", "vae", "text_encoder", "text_encoder_2",
                                                                  "scheduler", "versions")})
        rt = verify_single_file(path, os.path.join(sf_dir, f"{name}.yaml"), mdir, pipe)
        if not rt["all_tensors_bit_identical"]:
            raise SystemExit(f"{name}: single-file round trip FAILED: {json.dumps(rt, indent=1)}")
        result["single_file"] = dict(tensors=ntens, round_trip=rt)
    tensors, info = make_refs(pipe, v, cfg, name)
    refutil.save_st(os.path.join(vdir, "ref.safetensors"), tensors, describe(name, v, cfg, info), settings)
    result["ref_tensors"] = len(tensors)
    result["seconds"] = round(time.time() - t0, 1)
    return vdir, settings, result, tensors


def write_summary(vdir, name, settings, result, tensors):
    u, vae = settings["unet"], settings["vae"]
    t1, t2 = settings["text_encoder"], settings["text_encoder_2"]
    heads = u["attention_head_dim"]
    ch = u["block_out_channels"]
    heads_l = heads if isinstance(heads, list) else [heads] * len(ch)
    tl = u["transformer_layers_per_block"]
    tl_l = tl if isinstance(tl, list) else [tl] * len(ch)
    attn_lv = [i for i, t in enumerate(u["down_block_types"]) if t.startswith("CrossAttn")]
    summary = dict(
        variant=name, summary=settings["summary"], image_hw=settings["image_hw"], latent_hw=settings["latent_hw"],
        vae_scale_factor=settings["vae_scale_factor"],
        unet_attention_levels=attn_lv,
        # head size of each down level's attention (null: that level has none); up level i mirrors down level n-1-i
        unet_head_dim_per_level=[c // n if i in attn_lv else None for i, (c, n) in enumerate(zip(ch, heads_l))],
        unet_mid_block=dict(channels=ch[-1], heads=heads_l[-1], head_dim=ch[-1] // heads_l[-1],
                            transformer_layers=tl_l[-1]),
        parameters=result["params"],
        files={os.path.relpath(os.path.join(r, f), vdir): os.path.getsize(os.path.join(r, f))
               for r, _d, fs in os.walk(vdir) for f in sorted(fs)},
        total_bytes=du(vdir),
        ref_tensors={k: list(x.shape) for k, x in sorted(tensors.items())},
        single_file=result.get("single_file"),
        configs=dict(unet=u, vae=vae, text_encoder=t1, text_encoder_2=t2, scheduler=settings["scheduler"]),
        versions=settings["versions"],
    )
    path = os.path.join(vdir, "variant.json")
    for _ in range(2):  # the second pass counts variant.json itself
        summary["files"] = {os.path.relpath(os.path.join(r, f), vdir): os.path.getsize(os.path.join(r, f))
                            for r, _d, fs in sorted(os.walk(vdir)) for f in sorted(fs)}
        summary["total_bytes"] = sum(summary["files"].values())
        with open(path, "w") as f:
            f.write(compact_json(summary) + "\n")
    return summary


def compact_json(obj):
    """Indented JSON with short lists (shapes, channel tuples) kept on one line."""
    import re
    text = json.dumps(obj, indent=1, sort_keys=False)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="all", help="a name from variants.py, a comma list, or 'all' (= VARIANTS; EXTRA_VARIANTS only by name)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "data", "refs", "variants"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokenizers", default=DEFAULT_TOKENIZERS,
                    help="folder with tokenizer/ and tokenizer_2/ to copy (shared/refs/tiny-sdxl)")
    ap.add_argument("--refs-only", action="store_true",
                    help="recompute ref.safetensors from an existing OUT/<name>/model (e.g. with another thread count)")
    a = ap.parse_args()
    refutil.set_threads(a.threads)
    names = []
    for n in a.variant.split(","):
        names += list(V.VARIANTS) if n == "all" else [n]
    for name in names:
        vdir, settings, result, tensors = run_variant(name, os.path.abspath(a.out), a.tokenizers, refs_only=a.refs_only)
        if not a.refs_only:
            s = write_summary(vdir, name, settings, result, tensors)
            rt = result["single_file"]["round_trip"]
            print(f"{name}: {s['total_bytes'] / 1e6:.2f} MB, single file {result['single_file']['tensors']} tensors, "
                  f"round trip bit-identical: {rt['all_tensors_bit_identical']} "
                  f"({', '.join(k + ' ' + str(rt[k]['tensors']) for k in ('unet', 'vae', 'text_encoder', 'text_encoder_2'))}), "
                  f"{result['ref_tensors']} ref tensors, {result['seconds']} s")
        else:
            print(f"{name}: ref.safetensors rewritten ({result['ref_tensors']} tensors, {result['seconds']} s)")


if __name__ == "__main__":
    main()
