#!/usr/bin/env python3
"""Verify this Python setup against the shipped references: regenerate shared/refs/tiny-sdxl-ref from
shared/refs/tiny-sdxl with the recorded inputs and print the max abs difference of every tensor group; also
convert shared/refs/tiny-sdxl with sgm.py and compare with shared/refs/tiny-sdxl-sgm (must be bit-identical).

    python tools/refs/check_shipped.py [--refs /work/shared/refs] [--threads 2] [--pipeline]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refutil  # noqa: E402

refutil.quiet()
import torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--refs", default=os.environ.get("SDXL_SHARED_REFS", "/work/shared/refs"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", action="store_true", help="also rerun the 4-step Euler pipeline (slower)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    refutil.set_threads(a.threads)
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    model = os.path.join(a.refs, "tiny-sdxl")
    refd = os.path.join(a.refs, "tiny-sdxl-ref")
    pipe = StableDiffusionXLPipeline.from_pretrained(model, torch_dtype=torch.float32)
    assert type(pipe.tokenizer) is CLIPTokenizer and type(pipe.tokenizer_2) is CLIPTokenizer, "slow CLIPTokenizer expected"
    res = {"versions": refutil.versions()}

    def report(group, ref, got, exact=False):
        worst = 0.0
        for k in sorted(ref):
            if k not in got:
                continue
            d = refutil.max_abs(ref[k], got[k])
            worst = max(worst, d)
            res.setdefault(group, {})[k] = d
        res.setdefault("worst", {})[group] = worst
        print(f"{group:24s} max|diff| = {worst:.3g}  ({len([k for k in ref if k in got])} tensors)" + ("  [must be 0]" if exact else ""))

    # tokens
    tok, meta = refutil.load_st(os.path.join(refd, "tokens.safetensors"))
    prompts = json.loads(meta["prompts"])
    got = {}
    for name, tk in (("tok1", pipe.tokenizer), ("tok2", pipe.tokenizer_2)):
        got[f"{name}.input_ids"] = tk(prompts, padding="max_length", max_length=tk.model_max_length, truncation=True,
                                      return_tensors="pt").input_ids
        for i, p in enumerate(prompts):
            got[f"{name}.untruncated_ids.{i}"] = torch.tensor(tk(p).input_ids)
    report("tokens", tok, got, exact=True)

    # text encoders
    te, _ = refutil.load_st(os.path.join(refd, "text_encoders.safetensors"))
    got = {}
    with torch.no_grad():
        for name, enc, ids in (("te1", pipe.text_encoder, tok["tok1.input_ids"]), ("te2", pipe.text_encoder_2, tok["tok2.input_ids"])):
            o = enc(ids, output_hidden_states=True)
            for i, h in enumerate(o.hidden_states):
                got[f"{name}.hidden_states.{i}"] = h
            got[f"{name}.penultimate"] = o.hidden_states[-2]
            if name == "te1":
                got["te1.last_hidden_state"] = o.last_hidden_state
                got["te1.pooler_output"] = o.pooler_output
            else:
                got["te2.last_hidden_state"] = o.last_hidden_state
                got["te2.text_embeds"] = o.text_embeds
    report("text_encoders", te, got)

    # encode_prompt (two of the four cases)
    ep, meta = refutil.load_st(os.path.join(refd, "encode_prompt.safetensors"))
    got = {}
    with torch.no_grad():
        for case, kw in (("batch4_negNone", dict(prompt=prompts, negative_prompt=None)),
                         ("p0_negText", dict(prompt=prompts[0], negative_prompt=meta["negative_prompt"]))):
            out = pipe.encode_prompt(device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, **kw)
            for n, t in zip(("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"), out):
                got[f"{case}.{n}"] = t
    report("encode_prompt", ep, got)

    # unet forward with hooks
    uf, _ = refutil.load_st(os.path.join(refd, "unet_forward.safetensors"))
    names = sorted({k[len("act."):].split(".res_samples")[0] for k in uf if k.startswith("act.")})
    hooks = refutil.Hooks(pipe.unet, names)
    with torch.no_grad():
        out = pipe.unet(uf["in.sample"], uf["in.timestep"], encoder_hidden_states=uf["in.encoder_hidden_states"],
                        added_cond_kwargs={"text_embeds": uf["in.text_embeds"], "time_ids": uf["in.time_ids"]}).sample
    hooks.remove()
    got = dict(hooks.acts)
    got["out.noise_pred"] = out
    report("unet_forward", uf, got)
    res["unet_forward_noise_pred_maxdiff"] = refutil.max_abs(uf["out.noise_pred"], out)
    res["attn_processor"] = type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__

    # vae
    vr, _ = refutil.load_st(os.path.join(refd, "vae.safetensors"))
    sf = pipe.vae.config.scaling_factor
    got = {}
    with torch.no_grad():
        got["decode.out.sample"] = pipe.vae.decode(vr["decode.in.latents"] / sf).sample
        got["decode.out.image01"] = (got["decode.out.sample"] / 2 + 0.5).clamp(0, 1)
        img = refutil.analytic_image(vr["encode.in.image"].shape[2], vr["encode.in.image"].shape[3])
        got["encode.in.image"] = img
        dist = pipe.vae.encode(vr["encode.in.image"]).latent_dist
        got["encode.out.mean"] = dist.mean
        got["encode.out.logvar"] = dist.logvar
        got["encode.out.std"] = dist.std
        got["encode.out.mean_scaled"] = dist.mean * sf
    report("vae", vr, got)

    # my SGM converter (sgm.py) on the shipped diffusers model vs the shipped single file
    import sgm
    sd = sgm.to_sgm(pipe.unet.state_dict(), pipe.unet.config, pipe.vae.state_dict(), pipe.vae.config,
                    pipe.text_encoder.state_dict(), pipe.text_encoder_2.state_dict())
    want, _ = refutil.load_st(os.path.join(a.refs, "tiny-sdxl-sgm", "tiny_sdxl_sgm.safetensors"))
    same = set(sd) == set(want) and all(torch.equal(sd[k], want[k]) for k in want)
    res["sgm_converter"] = dict(tensors=len(sd), shipped=len(want), bit_identical=same)
    print(f"{'sgm converter':24s} {len(sd)} tensors vs shipped {len(want)}: bit-identical {same}")

    if a.pipeline:
        pr, _ = refutil.load_st(os.path.join(refd, "pipeline_euler.safetensors"))
        steps = {}

        def cb(p, i, t, kw):
            steps[f"step{i}.latents_after"] = kw["latents"].clone()
            return {}
        with torch.no_grad():
            lat = pipe(prompt=prompts[0], negative_prompt=None, num_inference_steps=4, guidance_scale=5.0, height=64, width=64,
                       latents=pr["in.latents"].clone(), output_type="latent", callback_on_step_end=cb).images
        got = dict(steps)
        got["out.latents"] = lat
        got["sched.timesteps"] = pipe.scheduler.timesteps
        got["sched.sigmas"] = pipe.scheduler.sigmas
        report("pipeline_euler", pr, got)

    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
    print(json.dumps(res["versions"]))
    print("attention processor:", res["attn_processor"])


if __name__ == "__main__":
    main()
