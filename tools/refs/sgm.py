"""diffusers <-> Stability "SGM" single-file layout for SDXL-style models (dev tool).

Written from the documented key-mapping facts (shared/refs/README.md, "tiny-sdxl-sgm"):
  UNet  -> model.diffusion_model.*   (input_blocks / middle_block / output_blocks, resnet in_layers/out_layers/emb_layers)
  VAE   -> first_stage_model.*       (encoder.down.i.block.j, decoder.up.{L-1-i}.block.j, mid.block_1/2, mid.attn_1 with
                                      q/k/v/proj_out stored as 1x1 conv weights [C,C,1,1])
  TE1   -> conditioner.embedders.0.transformer.text_model.*   (HF CLIP layout, unchanged)
  TE2   -> conditioner.embedders.1.model.*  (OpenCLIP layout: resblocks.N.attn.in_proj_weight/bias = cat(q,k,v) on dim 0,
                                      out_proj, ln_1/ln_2, mlp.c_fc/c_proj, token_embedding, positional_embedding,
                                      ln_final, text_projection stored TRANSPOSED [hidden, proj])
No code was copied from diffusers' scripts/convert_diffusers_to_original_sdxl.py; the mapping is rebuilt from the
block structure (layers_per_block, which levels have attention, number of VAE levels) so that it works for any
number of levels (the diffusers script hard-codes SDXL's 3 UNet / 4 VAE levels).
"""
import re

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TE1_PREFIX = "conditioner.embedders.0.transformer."
TE2_PREFIX = "conditioner.embedders.1.model."

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest, table):
    head, _, tail = rest.partition(".")  # e.g. "conv1", "weight"
    if head not in table:
        raise KeyError(rest)
    return table[head] + "." + tail


def unet_key(k, cfg):
    """diffusers UNet2DConditionModel key -> SGM key (without prefix). cfg = unet.config (dict-like)."""
    L = cfg["layers_per_block"]
    up_types = cfg["up_block_types"]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    mod, _, p = k.rpartition(".")
    if mod in fixed:
        return fixed[mod] + "." + p
    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        blk = 1 + i * (L + 1) + j
        return f"input_blocks.{blk}.0.{_resnet(rest, _UNET_RESNET)}" if kind == "resnets" else f"input_blocks.{blk}.1.{rest}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (L + 1)}.0.op.{m[2]}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", k)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{0 if j == 0 else 2}.{_resnet(rest, _UNET_RESNET)}"
        return f"middle_block.1.{rest}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        blk = i * (L + 1) + j
        return f"output_blocks.{blk}.0.{_resnet(rest, _UNET_RESNET)}" if kind == "resnets" else f"output_blocks.{blk}.1.{rest}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k)
    if m:
        i = int(m[1])
        slot = 2 if up_types[i].startswith("CrossAttn") else 1
        return f"output_blocks.{i * (L + 1) + L}.{slot}.conv.{m[2]}"
    raise KeyError(k)


def vae_key(k, cfg):
    """diffusers AutoencoderKL key -> SGM key (without prefix). Returns (key, is_attention_matrix)."""
    n = len(cfg["block_out_channels"])
    for a, b in (("quant_conv.", "quant_conv."), ("post_quant_conv.", "post_quant_conv.")):
        if k.startswith(a):
            return b + k[len(a):], False
    m = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(.+)", k)
    if m:
        return f"{m[1]}.{'norm_out' if m[2] == 'conv_norm_out' else m[2]}.{m[3]}", False
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", k)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", k)
    if m:
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}", (m[2] != "group_norm" and m[3] == "weight")
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k)
    if m:  # the decoder's up blocks are numbered from the lowest resolution in diffusers, from the highest in SGM
        return f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k)
    if m:
        return f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    raise KeyError(k)


def te2_to_openclip(sd):
    """HF CLIPTextModelWithProjection state dict -> OpenCLIP text tower (without prefix)."""
    out = {}
    layers = {}
    for k, v in sd.items():
        if k == "text_model.embeddings.position_ids":
            continue
        if k == "text_projection.weight":
            out["text_projection"] = v.t().contiguous()  # [proj, hidden] -> [hidden, proj]
            continue
        simple = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                  "text_model.embeddings.position_embedding.weight": "positional_embedding",
                  "text_model.final_layer_norm.weight": "ln_final.weight",
                  "text_model.final_layer_norm.bias": "ln_final.bias"}
        if k in simple:
            out[simple[k]] = v
            continue
        m = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", k)
        if not m:
            raise KeyError(k)
        n, rest = int(m[1]), m[2]
        base = f"transformer.resblocks.{n}."
        qkv = re.fullmatch(r"self_attn\.(q|k|v)_proj\.(weight|bias)", rest)
        if qkv:
            layers.setdefault((n, qkv[2]), {})[qkv[1]] = v
            continue
        table = {"self_attn.out_proj.": "attn.out_proj.", "layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.",
                 "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj."}
        for a, b in table.items():
            if rest.startswith(a):
                out[base + b + rest[len(a):]] = v
                break
        else:
            raise KeyError(k)
    for (n, wb), d in layers.items():
        out[f"transformer.resblocks.{n}.attn.in_proj_{wb}"] = torch.cat([d["q"], d["k"], d["v"]], 0).contiguous()
    return out


def to_sgm(unet_sd, unet_cfg, vae_sd, vae_cfg, te1_sd, te2_sd):
    """Return the single-file state dict (all four parts)."""
    out = {}

    def put(k, v):
        if k in out:
            raise ValueError(f"two tensors map to {k}")
        out[k] = v.contiguous()

    for k, v in unet_sd.items():
        put(UNET_PREFIX + unet_key(k, unet_cfg), v)
    for k, v in vae_sd.items():
        nk, attn = vae_key(k, vae_cfg)
        put(VAE_PREFIX + nk, v.reshape(*v.shape, 1, 1) if attn else v)
    for k, v in te1_sd.items():
        if k.endswith("position_ids"):
            continue
        put(TE1_PREFIX + k, v)
    for k, v in te2_to_openclip(te2_sd).items():
        put(TE2_PREFIX + k, v)
    return out


def _heads_spec(ucfg):
    """How the SGM config can state the heads: ('num_heads', n) / ('num_head_channels', d) / (None, None)."""
    ch = list(ucfg["block_out_channels"])
    heads = ucfg["attention_head_dim"]
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(ch)
    lv = [i for i, t in enumerate(ucfg["down_block_types"]) if t.startswith("CrossAttn")]
    used = sorted(set(lv + [len(ch) - 1]))  # the mid block uses the last level's heads
    nh = {heads[i] for i in used}
    hd = {ch[i] // heads[i] for i in used}
    # SDXL states a constant head size (num_head_channels: 64). diffusers' converter reads num_head_channels only when
    # use_linear_in_transformer is true and turns it into heads = (model_channels // num_head_channels) * mult, which
    # needs model_channels to be a multiple of the head size; otherwise state a constant number of heads.
    if len(hd) == 1 and ucfg["use_linear_projection"] and ch[0] % next(iter(hd)) == 0:
        return "num_head_channels", hd.pop()
    if len(nh) == 1:
        return "num_heads", nh.pop()
    return None, None


def sgm_yaml(ucfg, vcfg, t1cfg, t2cfg, image_hw):
    """SGM-style config text (the layout of Stability's sd_xl_base.yaml) for these diffusers configs,
    plus a top-level `nonstandard:` block with the values SGM's format cannot state (SGM ignores unknown top-level keys)."""
    import yaml
    ch = list(ucfg["block_out_channels"])
    mc = ch[0]
    assert all(c % mc == 0 for c in ch)
    tl = ucfg["transformer_layers_per_block"]
    tl = list(tl) if isinstance(tl, (list, tuple)) else [tl] * len(ch)
    attn_levels = [i for i, t in enumerate(ucfg["down_block_types"]) if t.startswith("CrossAttn")]
    kind, val = _heads_spec(ucfg)
    net = {
        "adm_in_channels": ucfg["projection_class_embeddings_input_dim"],
        "num_classes": "sequential",
        "use_checkpoint": False,
        "in_channels": ucfg["in_channels"],
        "out_channels": ucfg["out_channels"],
        "model_channels": mc,
        "attention_resolutions": sorted([2 ** i for i in attn_levels], reverse=True),
        "num_res_blocks": ucfg["layers_per_block"],
        "channel_mult": [c // mc for c in ch],
        kind or "num_heads": val if kind else -1,  # only one of the two keys: diffusers reads num_heads if present
        "use_linear_in_transformer": bool(ucfg["use_linear_projection"]),
        # every level's value, as sd_xl_base.yaml does ([1, 2, 10] although level 0 has no attention): diffusers takes
        # the mid block's depth from the last entry, not from transformer_depth_middle
        "transformer_depth": tl,
        "transformer_depth_middle": tl[-1],
        "context_dim": ucfg["cross_attention_dim"],
        "legacy": False,
        "spatial_transformer_attn_type": "softmax",
    }
    vch = list(vcfg["block_out_channels"])
    assert all(c % vch[0] == 0 for c in vch)
    atd = ucfg["addition_time_embed_dim"]
    cfg = {"model": {"target": "sgm.models.diffusion.DiffusionEngine", "params": {
        "scale_factor": vcfg["scaling_factor"],
        "disable_first_stage_autocast": True,
        "denoiser_config": {"target": "sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser", "params": {
            "num_idx": 1000,
            "scaling_config": {"target": "sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling"},
            "discretization_config": {"target": "sgm.modules.diffusionmodules.discretizer.LegacyDDPMDiscretization"}}},
        "network_config": {"target": "sgm.modules.diffusionmodules.openaimodel.UNetModel", "params": net},
        "conditioner_config": {"target": "sgm.modules.GeneralConditioner", "params": {"emb_models": [
            {"is_trainable": False, "input_key": "txt", "target": "sgm.modules.encoders.modules.FrozenCLIPEmbedder",
             "params": {"layer": "hidden", "layer_idx": t1cfg["num_hidden_layers"] - 1}},
            {"is_trainable": False, "input_key": "txt", "target": "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2",
             "params": {"freeze": True, "layer": "penultimate", "always_return_pooled": True, "legacy": False}},
            {"is_trainable": False, "input_key": "original_size_as_tuple",
             "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND", "params": {"outdim": atd}},
            {"is_trainable": False, "input_key": "crop_coords_top_left",
             "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND", "params": {"outdim": atd}},
            {"is_trainable": False, "input_key": "target_size_as_tuple",
             "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND", "params": {"outdim": atd}},
        ]}},
        "first_stage_config": {"target": "sgm.models.autoencoder.AutoencoderKLInferenceWrapper", "params": {
            "embed_dim": vcfg["latent_channels"],
            "ddconfig": {"attn_type": "vanilla", "double_z": True, "z_channels": vcfg["latent_channels"],
                         "resolution": max(image_hw), "in_channels": vcfg["in_channels"], "out_ch": vcfg["out_channels"],
                         "ch": vch[0], "ch_mult": [c // vch[0] for c in vch], "num_res_blocks": vcfg["layers_per_block"],
                         "attn_resolutions": [], "dropout": 0.0},
            "lossconfig": {"target": "torch.nn.Identity"}}},
    }}}

    def te(c):
        return {k: c[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                  "hidden_act", "max_position_embeddings", "layer_norm_eps", "projection_dim", "eos_token_id")}
    heads = ucfg["attention_head_dim"]
    cfg["nonstandard"] = {
        "comment": "Values SGM's config format cannot state (SGM hard-codes GroupNorm(32) in the UNet and VAE, takes the text "
                   "encoders' shapes from the pretrained CLIP-L / OpenCLIP bigG definitions, and has one heads value for all levels). "
                   "SGM ignores this block; a loader of this test file should read it.",
        "unet_norm_num_groups": ucfg["norm_num_groups"],
        "unet_heads_per_level": list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(ch),
        "unet_heads_expressible": kind is not None,
        "unet_upcast_attention": bool(ucfg["upcast_attention"]),
        "unet_addition_time_embed_dim": atd,
        "vae_norm_num_groups": vcfg["norm_num_groups"],
        "vae_scaling_factor": vcfg["scaling_factor"],
        "text_encoder": te(t1cfg),
        "text_encoder_2": te(t2cfg),
    }
    head = ("# SGM-style config of a tiny SDXL test variant (generated by tools/refs/make_variant.py).\n"
            "# Standard SGM fields under model:, extra facts under nonstandard: (see its comment).\n")
    return head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=120)
