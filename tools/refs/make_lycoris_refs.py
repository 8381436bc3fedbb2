#!/usr/bin/env python3
"""LyCORIS / DoRA / full-diff / PEFT test adapters for the tiny SDXL model, and torch reference outputs for them.

Dev tool (the C build never needs Python). Writes into tests/data/lora/ (--out):

  adapters (seeded, every tensor drawn from torch.Generator().manual_seed(SEED[name]) in a fixed order):
    loha_kohya.safetensors       LoHa (hada_w1_a/b, hada_w2_a/b; hada_t1/t2 = Tucker on some 3x3 convs), fp32, kohya names in
                                 diffusers style (lora_unet_down_blocks_1_attentions_0_..., lora_te1_...): all 132 UNet
                                 transformer Linears (rank 4, alpha 2), six 3x3 convs (three Tucker), all 30 TE1 Linears.
                                 Three modules carry no .alpha (alpha = rank).
    lokr_sgm_fp16.safetensors    LoKr, fp16 (alpha too), kohya names in SGM style (lora_unet_input_blocks_4_1_..., _middle_block_,
                                 _output_blocks_, resnets in_layers_2 / out_layers_3 / emb_layers_1 / skip_connection, input_blocks_3_0_op,
                                 output_blocks_2_2_conv), lora_te2_...: full w1 + factorized w2, factorized w1 + full w2, both
                                 factorized (same rank), both full (alpha present and ignored), two 3x3 convs with lokr_t2 (Tucker),
                                 3x3 convs with a factorized w2 (w2_b [r, d*kh*kw]), a 1x1 conv.
    dora_kohya.safetensors       LoRA/LoCon + dora_scale, fp32, diffusers-style kohya names: dora_scale [1,in] / [1,in,1,1]
                                 (per input channel, LyCORIS <= 3.1 and A1111 layout) on Linears and convs, one LoHa + dora_scale,
                                 and two modules with dora_scale [out,1] / [out,1,1,1] (per output row, the layout LyCORIS >= 3.2
                                 writes by default, "wd_on_output").
    locon_mid_bf16.safetensors   LoCon, bf16: lora_mid (Tucker) on 3x3 convs, one plain 3x3 LoCon, a 1x1 conv, plain LoRA on Linears;
                                 SGM kohya names; alpha absent on some modules (alpha = rank).
    full_diff.safetensors        .diff (Linear and conv weights), .diff_b (biases), w_norm/b_norm (GroupNorm, LayerNorm, TE
                                 final_layer_norm), fp32, diffusers-style kohya names (lora_unet_down_blocks_0_resnets_0_norm1, ...).
    peft_prefixed.safetensors    PEFT LoRA state dict of the UNet, keys base_model.model.<module>.lora_A.weight / lora_B.weight,
                                 mixed ranks (4 and 2, incl. a 3x3 conv), no alpha (scale 1).
    dora_peft.safetensors        PEFT DoRA, keys unet.<module>.lora_A.weight / lora_B.weight / lora_magnitude_vector, rank 4, no alpha;
                                 lora_magnitude_vector is [out] for Linears and [1,out,1,1] for a conv (PEFT's own layout).
    lora_a_legacy.pt             shared/refs/tiny-lora/lora_a_kohya.safetensors re-saved with torch.save(...,
                                 _use_new_zipfile_serialization=False) (legacy pickle, tensors in sorted key order). Not
                                 byte-reproducible (storages are named by address): an existing file with equal tensors is kept.
  copies of shared/refs/tiny-lora/: lora_a_kohya.safetensors, lora_a_kohya.pt, lora_c_kohya_sgm_fp16.safetensors,
    lora_a_peft.safetensors, lora_a_diffusers.safetensors, lora_refs.safetensors, modules.tsv.
  lycoris_refs.safetensors       outputs of the UNMODIFIED diffusers/transformers modules with merged weights (see below);
  lycoris_report.json            the checks printed at the end (lycoris / PEFT cross-checks, self-checks, sizes).

How the references are made: every adapter file is read back from disk (fp16/bf16 upcast to fp32) and merged into the tiny
model (tests/data/refs/tiny-sdxl, fp32) by the formulas in delta() below: W' = W + m * Delta for each target parameter
(strength m from STRENGTHS). Then:
  <X>.unet.noise_pred       UNet forward on tests/data/refs/tiny-sdxl-ref/unet_forward.safetensors in.* (as lora_refs does)
  <X>.te1.penultimate       TE1 hidden_states[-2] for tokens.safetensors tok1.input_ids   (only if X touches TE1)
  <X>.te2.penultimate, <X>.te2.text_embeds   TE2 for tok2.input_ids                        (only if X touches TE2)
  <X>.w.<component>.<module path>.weight|bias   merged parameters of a few modules (component = unet | text_encoder |
                                                text_encoder_2, module path = diffusers/transformers module name)
  stack.*      loha 0.6 + lokr -0.4 + lora_a 0.8 + dora 1.0, every Delta_i computed against the base W: W' = W + sum m_i Delta_i
  stack_seq.unet.noise_pred   the same four applied one after another (A1111/ComfyUI: each adapter sees the weight the
                              previous ones produced; only DoRA depends on it). Informational.
Strengths are in the file's __metadata__ ("strengths", "stack" JSON and one entry per adapter).

Checks (printed; the script fails if one fails): every adapter changes each of its outputs by > 1e-3; my LoRA merge of
lora_a at 0.8 reproduces lora_refs.safetensors a0.8 (diffusers/PEFT); the lycoris_lora package (if importable) rebuilds the
same merged weight for each module within 1e-5 through its module forward path (see README for the known lycoris
merge_to/functional differences, which are reported, not fatal); PEFT (if importable) merges peft_prefixed and dora_peft
(at m = 1) to the same weights.

    /work/venv-refs/bin/python tools/refs/make_lycoris_refs.py [--out tests/data/lora] [--shared /work/shared/refs/tiny-lora]
        [--threads 2] [--no-lycoris] [--no-peft]
Optional cross-check packages (not needed for the files): pip install lycoris_lora==3.1.0 peft==0.10.0
"""
import argparse
import copy
import json
import os
import shutil
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refutil  # noqa: E402
import sgm  # noqa: E402

refutil.quiet()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "tests/data/refs/tiny-sdxl")
REFIN = os.path.join(ROOT, "tests/data/refs/tiny-sdxl-ref")
EPS = float(torch.finfo(torch.float32).eps)  # 1.1920929e-07, DoRA norm epsilon (LyCORIS / ComfyUI)

STRENGTHS = OrderedDict([
    ("loha_kohya", 0.7),
    ("lokr_sgm_fp16", -0.5),
    ("dora_kohya", 0.7),
    ("locon_mid_bf16", 0.8),
    ("full_diff", 0.6),
    ("peft_prefixed", 0.9),
    ("dora_peft", 0.75),
])
STACK = [("loha_kohya", 0.6), ("lokr_sgm_fp16", -0.4), ("lora_a_kohya", 0.8), ("dora_kohya", 1.0)]
SEED = {"loha_kohya": 101, "lokr_sgm_fp16": 202, "dora_kohya": 303, "locon_mid_bf16": 404, "full_diff": 505,
        "peft_prefixed": 606, "dora_peft": 707}
COPIES = ["lora_a_kohya.safetensors", "lora_a_kohya.pt", "lora_c_kohya_sgm_fp16.safetensors", "lora_a_peft.safetensors",
          "lora_a_diffusers.safetensors", "lora_refs.safetensors", "modules.tsv"]
# merged parameters stored in lycoris_refs (component, module path, params)
WEIGHT_KEYS = {
    "loha_kohya": [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", ["weight"]),
                   ("unet", "up_blocks.1.resnets.1.conv2", ["weight"]),                 # Tucker (hada_t1/t2)
                   ("unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v", ["weight"]),  # no alpha
                   ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", ["weight"])],
    "lokr_sgm_fp16": [("unet", "down_blocks.0.resnets.1.conv2", ["weight"]),           # lokr_t2 Tucker
                      ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q", ["weight"]),  # both full
                      ("text_encoder_2", "text_model.encoder.layers.3.self_attn.q_proj", ["weight"]),  # w1 factorized
                      ("text_encoder_2", "text_model.encoder.layers.0.mlp.fc1", ["weight"])],
    "dora_kohya": [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", ["weight"]),  # per-input
                   ("unet", "up_blocks.1.resnets.2.conv2", ["weight"]),                              # conv per-input
                   ("unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v", ["weight"]),  # LoHa + dora
                   ("unet", "down_blocks.0.resnets.1.conv1", ["weight"])],                           # per-output conv
    "locon_mid_bf16": [("unet", "down_blocks.0.resnets.0.conv1", ["weight"]),          # lora_mid
                       ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", ["weight"]),  # no alpha
                       ("unet", "up_blocks.1.resnets.0.conv_shortcut", ["weight"])],
    "full_diff": [("unet", "down_blocks.1.attentions.0.proj_in", ["weight", "bias"]),
                  ("unet", "down_blocks.0.resnets.0.norm1", ["weight", "bias"]),
                  ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.norm1", ["weight", "bias"]),
                  ("text_encoder_2", "text_model.final_layer_norm", ["weight", "bias"])],
    "peft_prefixed": [("unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q", ["weight"]),
                      ("unet", "down_blocks.0.resnets.1.time_emb_proj", ["weight"])],
    "dora_peft": [("unet", "up_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q", ["weight"]),
                  ("unet", "down_blocks.1.resnets.0.conv1", ["weight"])],
}


# ------------------------------------------------------------------------------------------------------------------
# the tiny model and the module naming
# ------------------------------------------------------------------------------------------------------------------
class Base:
    """The tiny SDXL UNet and both text encoders (fp32, eval), their base state dicts and the kohya name table."""

    def __init__(self, model_dir):
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection
        self.models = OrderedDict([
            ("unet", UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet"), torch_dtype=torch.float32)),
            ("text_encoder", CLIPTextModel.from_pretrained(os.path.join(model_dir, "text_encoder"), torch_dtype=torch.float32)),
            ("text_encoder_2", CLIPTextModelWithProjection.from_pretrained(os.path.join(model_dir, "text_encoder_2"),
                                                                           torch_dtype=torch.float32)),
        ])
        for m in self.models.values():
            m.eval()
            m.requires_grad_(False)
        self.sd = {c: {k: v.detach().clone() for k, v in m.state_dict().items()} for c, m in self.models.items()}
        self.mods = {c: dict(m.named_modules()) for c, m in self.models.items()}
        # kohya name -> (component, module path); UNet modules get both the diffusers-style and the SGM-style name
        self.kohya = {}
        self.sgm_of = {}
        ucfg = self.models["unet"].config
        prefix = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
        for comp, mods in self.mods.items():
            for path, mod in mods.items():
                if not isinstance(mod, (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)):
                    continue
                self.kohya[prefix[comp] + path.replace(".", "_")] = (comp, path)
                if comp == "unet":
                    s = sgm.unet_key(path + ".weight", ucfg)[: -len(".weight")]
                    self.sgm_of[path] = s
                    self.kohya[prefix[comp] + s.replace(".", "_")] = (comp, path)

    def W(self, comp, path, param="weight"):
        return self.sd[comp][f"{path}.{param}"]

    def name(self, comp, path, style="diffusers"):
        p = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}[comp]
        return p + (self.sgm_of[path] if style == "sgm" and comp == "unet" else path).replace(".", "_")

    def transformer_linears(self):
        return [p for p, m in self.mods["unet"].items() if ".attentions." in p and isinstance(m, nn.Linear)]

    def te_linears(self, comp):
        return [p for p, m in self.mods[comp].items() if ".layers." in p and isinstance(m, nn.Linear)]

    def restore(self):
        for c, m in self.models.items():
            m.load_state_dict(self.sd[c])


# ------------------------------------------------------------------------------------------------------------------
# reading adapter files: group keys per target module
# ------------------------------------------------------------------------------------------------------------------
PEFT_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector")
PEFT_PREFIXES = (("base_model.model.", "unet"), ("unet.", "unet"), ("text_encoder.", "text_encoder"),
                 ("text_encoder_2.", "text_encoder_2"))


def load_adapter(path):
    """-> OrderedDict name -> tensor as stored (safetensors or torch pickle)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        with safe_open(path, framework="pt") as f:
            return OrderedDict((k, f.get_tensor(k)) for k in sorted(f.keys()))
    sd = torch.load(path, map_location="cpu")
    return OrderedDict((k, sd[k]) for k in sorted(sd))


def group(base, sd):
    """Adapter state dict -> OrderedDict (component, module path) -> {suffix: fp32 tensor} (suffix e.g. 'hada_w1_a',
    'lora_up.weight', 'peft:lora_A.weight')."""
    out = OrderedDict()
    for k, v in sd.items():
        v = v.float()
        peft = next((s for s in PEFT_SUFFIXES if k.endswith(s)), None)
        if peft and not k.startswith("lora_"):
            mod = k[: -len(peft)]
            for pre, comp in PEFT_PREFIXES:
                if mod.startswith(pre):
                    target = (comp, mod[len(pre):])
                    break
            else:
                raise KeyError(k)
            out.setdefault(target, {})["peft:" + peft[1:]] = v
            continue
        mod, _, suffix = k.partition(".")
        if mod not in base.kohya:
            raise KeyError(f"unknown module {mod}")
        out.setdefault(base.kohya[mod], {})[suffix] = v
    return out


# ------------------------------------------------------------------------------------------------------------------
# the formulas (reference implementation, float32)
# ------------------------------------------------------------------------------------------------------------------
def lora_delta(p, W):
    """kohya LoRA / LoCon (optional lora_mid Tucker) or PEFT lora_A/lora_B. Returns (Delta0 incl. alpha/r, info)."""
    out = W.shape[0]
    if "peft:lora_A.weight" in p:
        down, up = p["peft:lora_A.weight"], p["peft:lora_B.weight"]
        r = down.shape[0]
        scale, alpha = 1.0, None  # PEFT/diffusers export without alpha: alpha = r
    else:
        down, up = p["lora_down.weight"], p["lora_up.weight"]
        r = down.shape[0]
        alpha = float(p["alpha"]) if "alpha" in p else None
        scale = (alpha if alpha is not None else r) / r
    if "lora_mid.weight" in p:
        mid = p["lora_mid.weight"]  # [r, r, kh, kw]; down [r, in, 1, 1]; up [out, r, 1, 1]
        d = torch.einsum("op,pqhw,qi->oihw", up.reshape(out, r), mid, down.reshape(r, -1))
        typ = "locon-tucker"
    else:
        d = (up.reshape(out, r) @ down.reshape(r, -1)).reshape(W.shape)
        typ = "lora" if W.dim() == 2 else "locon"
    return d * scale, dict(type=typ, rank=r, alpha=alpha, scale=scale)


def loha_delta(p, W):
    w1a, w1b, w2a, w2b = p["hada_w1_a"], p["hada_w1_b"], p["hada_w2_a"], p["hada_w2_b"]
    r = w1b.shape[0]
    alpha = float(p["alpha"]) if "alpha" in p else None
    scale = (alpha if alpha is not None else r) / r
    if "hada_t1" in p:  # Tucker: t [r, r, kh, kw], w_a [r, out], w_b [r, in]
        w1 = torch.einsum("ijhw,jq,ip->pqhw", p["hada_t1"], w1b, w1a)
        w2 = torch.einsum("ijhw,jq,ip->pqhw", p["hada_t2"], w2b, w2a)
        typ = "loha-tucker"
    else:  # w_a [out, r], w_b [r, in*kh*kw]
        w1 = (w1a @ w1b.reshape(r, -1)).reshape(W.shape)
        w2 = (w2a @ w2b.reshape(r, -1)).reshape(W.shape)
        typ = "loha"
    return (w1 * w2) * scale, dict(type=typ, rank=r, alpha=alpha, scale=scale)


def lokr_delta(p, W):
    dim = None
    if "lokr_w1" in p:
        w1 = p["lokr_w1"]
    else:
        w1 = p["lokr_w1_a"] @ p["lokr_w1_b"]
        dim = p["lokr_w1_b"].shape[0]
    a, b = w1.shape
    c, d = W.shape[0] // a, W.shape[1] // b
    k = tuple(W.shape[2:])
    if "lokr_w2" in p:
        w2 = p["lokr_w2"].reshape(c, d, *k)
    else:
        if dim is None:
            dim = p["lokr_w2_b"].shape[0]
        if "lokr_t2" in p:  # t2 [r, r, kh, kw], w2_a [r, c], w2_b [r, d]
            w2 = torch.einsum("ijhw,jq,ip->pqhw", p["lokr_t2"], p["lokr_w2_b"], p["lokr_w2_a"])
        else:  # w2_a [c, r], w2_b [r, d*kh*kw]
            w2 = (p["lokr_w2_a"] @ p["lokr_w2_b"].reshape(p["lokr_w2_b"].shape[0], -1)).reshape(c, d, *k)
    alpha = float(p["alpha"]) if "alpha" in p else None
    scale = 1.0 if dim is None else (alpha if alpha is not None else dim) / dim
    w1x = w1.reshape(a, b, *([1] * len(k)))
    w2 = w2.contiguous()
    d_ = torch.kron(w1x, w2) if k else torch.kron(w1, w2)
    assert d_.shape == W.shape, (d_.shape, W.shape)
    form = ("w1" if "lokr_w1" in p else "w1_ab") + "+" + ("w2" if "lokr_w2" in p else ("t2" if "lokr_t2" in p else "w2_ab"))
    return d_ * scale, dict(type="lokr", form=form, rank=dim, alpha=alpha, scale=scale)


def dora_apply(W, d0, s, peft):
    """Wd - W for Wc = W + d0 rescaled to the magnitude s (A1111 semantics; the strength scales the returned difference)."""
    Wc = W + d0
    nd = W.dim() - 1
    out, inn = W.shape[0], W.shape[1]
    if peft or (s.shape[0] == out and s.numel() == out):  # PEFT magnitude (any shape), [out], [out,1,(1,1)]
        axis = "out"
        s = s.reshape(out, *([1] * nd))
        norm = Wc.reshape(out, -1).norm(dim=1).reshape(out, *([1] * nd))
    elif s.shape[0] == 1 and s.numel() == inn:
        axis = "in"
        s = s.reshape(1, inn, *([1] * (nd - 1)))
        norm = Wc.transpose(0, 1).reshape(inn, -1).norm(dim=1).reshape(1, inn, *([1] * (nd - 1)))
    else:
        raise ValueError(f"dora scale {tuple(s.shape)} does not fit {tuple(W.shape)}")
    Wd = Wc * (s / (norm + EPS))
    return Wd - W, axis


def delta(p, W, bias):
    """Delta of one target module -> ({'weight': dW, 'bias': dB or absent}, info)."""
    res = {}
    if "diff" in p or "diff_b" in p:
        if "diff" in p:
            res["weight"] = p["diff"].reshape(W.shape)
        if "diff_b" in p:
            res["bias"] = p["diff_b"].reshape(bias.shape)
        return res, dict(type="full")
    if "w_norm" in p:
        res["weight"] = p["w_norm"].reshape(W.shape)
        if "b_norm" in p:
            res["bias"] = p["b_norm"].reshape(bias.shape)
        return res, dict(type="norm")
    if "hada_w1_a" in p:
        d0, info = loha_delta(p, W)
    elif "lokr_w1" in p or "lokr_w1_a" in p:
        d0, info = lokr_delta(p, W)
    elif "lora_up.weight" in p or "peft:lora_A.weight" in p:
        d0, info = lora_delta(p, W)
    else:
        raise ValueError(f"unknown adapter type: {sorted(p)}")
    if "dora_scale" in p or "peft:lora_magnitude_vector" in p:
        peft = "peft:lora_magnitude_vector" in p
        d0, axis = dora_apply(W, d0, p["peft:lora_magnitude_vector"] if peft else p["dora_scale"], peft)
        info = dict(info, dora=axis)
    res["weight"] = d0
    return res, info


def adapter_deltas(base, groups, weights=None):
    """-> {(comp, 'path.param'): Delta}. weights: (comp, key) -> current tensor (default: the base weights)."""
    get = (lambda c, k: base.sd[c][k]) if weights is None else weights
    out = {}
    for (comp, path), p in groups.items():
        W = get(comp, f"{path}.weight")
        b = base.sd[comp].get(f"{path}.bias")
        res, _ = delta(p, W, b)
        for param, d in res.items():
            out[(comp, f"{path}.{param}")] = d
    return out


def merged_sd(base, contributions):
    """contributions: list of (deltas, strength). W' = W + sum m_i Delta_i (all against the base)."""
    sd = {c: dict(v) for c, v in base.sd.items()}
    for deltas, m in contributions:
        for (comp, key), d in deltas.items():
            sd[comp][key] = sd[comp][key] + m * d
    return sd


# ------------------------------------------------------------------------------------------------------------------
# running the model
# ------------------------------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, base):
        self.base = base
        self.uf, _ = refutil.load_st(os.path.join(REFIN, "unet_forward.safetensors"))
        self.tok, _ = refutil.load_st(os.path.join(REFIN, "tokens.safetensors"))

    @torch.no_grad()
    def run(self, sd, comps=("unet", "text_encoder", "text_encoder_2")):
        b = self.base
        out = {}
        for c in comps:
            b.models[c].load_state_dict(sd[c])
        if "unet" in comps:
            uf = self.uf
            out["unet.noise_pred"] = b.models["unet"](
                uf["in.sample"], uf["in.timestep"], encoder_hidden_states=uf["in.encoder_hidden_states"],
                added_cond_kwargs={"text_embeds": uf["in.text_embeds"], "time_ids": uf["in.time_ids"]}).sample
        if "text_encoder" in comps:
            o = b.models["text_encoder"](self.tok["tok1.input_ids"], output_hidden_states=True)
            out["te1.penultimate"] = o.hidden_states[-2]
        if "text_encoder_2" in comps:
            o = b.models["text_encoder_2"](self.tok["tok2.input_ids"], output_hidden_states=True)
            out["te2.penultimate"] = o.hidden_states[-2]
            out["te2.text_embeds"] = o.text_embeds
        b.restore()
        return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ------------------------------------------------------------------------------------------------------------------
# making the adapters
# ------------------------------------------------------------------------------------------------------------------
class Gen:
    def __init__(self, base, seed):
        self.base = base
        self.g = torch.Generator().manual_seed(seed)
        self.t = OrderedDict()

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g, dtype=torch.float32)

    def fit(self, p, key, W, ratio, bias=None):
        """Scale p[key] so that std(Delta0) = ratio * std(W) (Delta0 = the plain delta incl. alpha/r, no DoRA)."""
        q = {k: v for k, v in p.items() if k not in ("dora_scale", "peft:lora_magnitude_vector")}
        res, _ = delta(q, W, bias)
        k = ratio * W.std().item() / res["weight"].std().item()
        p[key] = p[key] * k

    def put(self, name, p):
        for k, v in p.items():
            self.t[f"{name}.{k}"] = v

    def loha(self, comp, path, r, alpha, tucker=False, ratio=0.2, style="diffusers", dora=None):
        W = self.base.W(comp, path)
        out, inn, k = W.shape[0], W.shape[1], tuple(W.shape[2:])
        p = OrderedDict()
        if tucker:
            p["hada_t1"] = self.randn(r, r, *k)
            p["hada_w1_a"] = self.randn(r, out)
            p["hada_w1_b"] = self.randn(r, inn)
            p["hada_t2"] = self.randn(r, r, *k)
            p["hada_w2_a"] = self.randn(r, out)
            p["hada_w2_b"] = self.randn(r, inn)
        else:
            kk = 1
            for x in k:
                kk *= x
            p["hada_w1_a"] = self.randn(out, r)
            p["hada_w1_b"] = self.randn(r, inn * kk)
            p["hada_w2_a"] = self.randn(out, r)
            p["hada_w2_b"] = self.randn(r, inn * kk)
        if alpha is not None:
            p["alpha"] = torch.tensor(float(alpha))
        self.fit(p, "hada_w1_a", W, ratio)
        if dora:
            p["dora_scale"] = self.dora_scale(W, p, dora)
        self.put(self.base.name(comp, path, style), p)

    def lora(self, comp, path, r, alpha, mid=False, ratio=0.2, style="diffusers", dora=None):
        W = self.base.W(comp, path)
        out, inn, k = W.shape[0], W.shape[1], tuple(W.shape[2:])
        p = OrderedDict()
        if mid:
            p["lora_down.weight"] = self.randn(r, inn, 1, 1)
            p["lora_mid.weight"] = self.randn(r, r, *k)
        else:
            p["lora_down.weight"] = self.randn(r, inn, *k)
        p["lora_up.weight"] = self.randn(out, r, *([1] * len(k)))
        if alpha is not None:
            p["alpha"] = torch.tensor(float(alpha))
        self.fit(p, "lora_up.weight", W, ratio)
        if dora:
            p["dora_scale"] = self.dora_scale(W, p, dora)
        self.put(self.base.name(comp, path, style), p)

    def dora_scale(self, W, p, axis):
        """A magnitude near the norm of W + Delta0 (per input column or per output row), perturbed by 15 %."""
        d0 = delta({k: v for k, v in p.items() if k != "dora_scale"}, W, None)[0]["weight"]
        Wc = W + d0
        nd = W.dim() - 1
        if axis == "in":
            n = Wc.transpose(0, 1).reshape(W.shape[1], -1).norm(dim=1)
            shape = (1, W.shape[1], *([1] * (nd - 1)))
        else:
            n = Wc.reshape(W.shape[0], -1).norm(dim=1)
            shape = (W.shape[0], *([1] * nd))
        return (n * (1 + 0.15 * self.randn(n.shape[0])).clamp(min=0.5)).reshape(shape)

    def lokr(self, comp, path, w1, w2, r=None, alpha=None, ratio=0.2, style="sgm"):
        """w1: ('full', a, b) | ('ab', a, b); w2: ('full',) | ('ab',) | ('t2',): c, d (and k) follow from W's shape."""
        W = self.base.W(comp, path)
        a, b = w1[1], w1[2]
        c, d, k = W.shape[0] // a, W.shape[1] // b, tuple(W.shape[2:])
        assert a * c == W.shape[0] and b * d == W.shape[1]
        p = OrderedDict()
        if w1[0] == "full":
            p["lokr_w1"] = self.randn(a, b)
        else:
            p["lokr_w1_a"] = self.randn(a, r)
            p["lokr_w1_b"] = self.randn(r, b)
        kk = 1
        for x in k:
            kk *= x
        if w2[0] == "full":
            p["lokr_w2"] = self.randn(c, d, *k)
        elif w2[0] == "t2":
            p["lokr_t2"] = self.randn(r, r, *k)
            p["lokr_w2_a"] = self.randn(r, c)
            p["lokr_w2_b"] = self.randn(r, d)
        else:
            p["lokr_w2_a"] = self.randn(c, r)
            p["lokr_w2_b"] = self.randn(r, d * kk)
        if alpha is not None:
            p["alpha"] = torch.tensor(float(alpha))
        self.fit(p, "lokr_w1" if "lokr_w1" in p else "lokr_w1_a", W, ratio)
        self.put(self.base.name(comp, path, style), p)

    def full(self, comp, path, diff=True, diff_b=False, ratio=0.2):
        W = self.base.W(comp, path)
        name = self.base.name(comp, path)
        if diff:
            self.t[f"{name}.diff"] = ratio * W.std() * self.randn(*W.shape)
        if diff_b:
            b = self.base.W(comp, path, "bias")
            self.t[f"{name}.diff_b"] = (0.1 * max(b.std().item(), 0.02)) * self.randn(*b.shape)

    def norm(self, comp, path, with_bias=True):
        W = self.base.W(comp, path)
        name = self.base.name(comp, path)
        self.t[f"{name}.w_norm"] = 0.15 * self.randn(*W.shape)
        if with_bias:
            self.t[f"{name}.b_norm"] = 0.1 * self.randn(*W.shape)

    def peft(self, prefix, path, r, ratio=0.2, magnitude=False):
        W = self.base.W("unet", path)
        out, inn, k = W.shape[0], W.shape[1], tuple(W.shape[2:])
        p = OrderedDict()
        p["peft:lora_A.weight"] = self.randn(r, inn, *k)
        p["peft:lora_B.weight"] = self.randn(out, r, *([1] * len(k)))
        self.fit(p, "peft:lora_B.weight", W, ratio)
        if magnitude:  # PEFT's layout: Linear [out], Conv2d [1, out, 1, 1] (the row norm, transposed)
            d0 = delta(p, W, None)[0]["weight"]
            n = (W + d0).reshape(out, -1).norm(dim=1)
            m = n * (1 + 0.15 * self.randn(out)).clamp(min=0.5)
            p["peft:lora_magnitude_vector"] = m if W.dim() == 2 else m.reshape(1, out, 1, 1)
        for kk, v in p.items():
            self.t[f"{prefix}{path}.{kk[len('peft:'):]}"] = v


def make_loha(base):
    g = Gen(base, SEED["loha_kohya"])
    no_alpha = {"down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v"}
    for path in base.transformer_linears():
        g.loha("unet", path, 4, None if path in no_alpha else 2.0)
    convs = [("down_blocks.0.resnets.0.conv1", 2, 1.0, False), ("down_blocks.0.downsamplers.0.conv", 2, 2.0, False),
             ("mid_block.resnets.0.conv2", 2, 1.0, False), ("down_blocks.1.resnets.0.conv1", 2, 1.0, True),
             ("up_blocks.1.resnets.1.conv2", 3, 1.5, True), ("up_blocks.0.upsamplers.0.conv", 2, None, True)]
    for path, r, alpha, tucker in convs:
        g.loha("unet", path, r, alpha, tucker=tucker)
    for path in base.te_linears("text_encoder"):
        g.loha("text_encoder", path, 4, None if path == "text_model.encoder.layers.2.mlp.fc1" else 2.0)
    meta = dict(ss_network_module="lycoris.kohya",
                ss_network_args=json.dumps({"algo": "loha", "conv_dim": "2", "conv_alpha": "1", "use_tucker": "true"}),
                ss_network_dim="4", ss_network_alpha="2.0")
    return g.t, meta, "LoHa, fp32, diffusers-style kohya names; rank 4 alpha 2 on Linears, 3x3 convs rank 2-3 " \
                      "(three with hada_t1/t2 Tucker); three modules without alpha (alpha = rank)"


def make_lokr(base):
    g = Gen(base, SEED["lokr_sgm_fp16"])
    blocks = sorted({p.rsplit(".attn1.", 1)[0] for p in base.transformer_linears() if ".attn1.to_q" in p})
    for blk in blocks:
        for q in ("to_q", "to_k", "to_v", "to_out.0"):  # full w1 [4,4] + factorized w2 [16,4]@[4,16]
            g.lokr("unet", f"{blk}.attn1.{q}", ("full", 4, 4), ("ab",), r=4, alpha=2.0)
        for q in ("to_q", "to_out.0"):  # both full: alpha present, ignored (scale 1)
            g.lokr("unet", f"{blk}.attn2.{q}", ("full", 8, 8), ("full",), alpha=4.0)
        for q in ("to_k", "to_v"):  # both factorized, same rank 2
            g.lokr("unet", f"{blk}.attn2.{q}", ("ab", 8, 8), ("ab",), r=2, alpha=1.0)
        # factorized w1 [8,4] = [8,2]@[2,4] + full w2 [64,16]
        g.lokr("unet", f"{blk}.ff.net.0.proj", ("ab", 8, 4), ("full",), r=2, alpha=1.0)
        g.lokr("unet", f"{blk}.ff.net.2", ("full", 4, 16), ("ab",), r=4, alpha=2.0)
    for path in base.transformer_linears():
        if path.endswith(".proj_in"):
            g.lokr("unet", path, ("full", 4, 4), ("ab",), r=4, alpha=2.0)
    # convs
    g.lokr("unet", "down_blocks.1.resnets.0.conv1", ("full", 4, 2), ("t2",), r=4, alpha=2.0)       # Tucker
    g.lokr("unet", "down_blocks.0.resnets.1.conv2", ("full", 2, 2), ("t2",), r=3, alpha=1.5)       # Tucker
    g.lokr("unet", "up_blocks.0.upsamplers.0.conv", ("full", 4, 4), ("ab",), r=4, alpha=2.0)       # w2_b [r, d*9]
    g.lokr("unet", "mid_block.resnets.1.conv1", ("full", 8, 8), ("ab",), r=2, alpha=1.0)
    g.lokr("unet", "down_blocks.0.downsamplers.0.conv", ("full", 2, 2), ("full",), alpha=8.0)    # both full 3x3
    g.lokr("unet", "down_blocks.1.resnets.0.conv_shortcut", ("full", 4, 4), ("full",), alpha=8.0)  # 1x1
    g.lokr("unet", "up_blocks.1.resnets.0.time_emb_proj", ("full", 4, 8), ("ab",), r=2, alpha=1.0)
    for path in base.te_linears("text_encoder_2"):
        if path.endswith("mlp.fc1"):  # [37,32]: w1 [1,4], w2 [37,4]@[4,8]
            g.lokr("text_encoder_2", path, ("full", 1, 4), ("ab",), r=4, alpha=2.0)
        elif path.endswith("mlp.fc2"):  # [32,37]: both full, alpha ignored
            g.lokr("text_encoder_2", path, ("full", 4, 1), ("full",), alpha=16.0)
        elif path == "text_model.encoder.layers.3.self_attn.q_proj":  # factorized w1 + full w2
            g.lokr("text_encoder_2", path, ("ab", 4, 4), ("full",), r=2, alpha=1.0)
        else:
            g.lokr("text_encoder_2", path, ("full", 4, 4), ("ab",), r=2, alpha=1.0)
    t = OrderedDict((k, v.half()) for k, v in g.t.items())
    meta = dict(ss_network_module="lycoris.kohya", ss_network_args=json.dumps({"algo": "lokr", "use_tucker": "true"}),
                ss_base_model_version="sdxl_base_v1-0")
    return t, meta, "LoKr, fp16 (alpha too), SGM-style kohya names; see the README for the module forms"


def make_dora(base):
    g = Gen(base, SEED["dora_kohya"])
    for blk in ("down_blocks.1.attentions.0.transformer_blocks.0", "mid_block.attentions.0.transformer_blocks.1"):
        for q in ("to_q", "to_k", "to_v", "to_out.0"):
            alpha = None if (blk.startswith("mid") and q == "to_k") else 2.0
            g.lora("unet", f"{blk}.attn1.{q}", 4, alpha, dora="in")
    g.lora("unet", "up_blocks.0.attentions.2.transformer_blocks.1.ff.net.2", 4, 2.0, dora="in")
    g.lora("unet", "down_blocks.1.resnets.1.time_emb_proj", 4, 2.0, dora="in")
    g.lora("unet", "down_blocks.1.resnets.0.conv1", 2, 1.0, dora="in")
    g.lora("unet", "up_blocks.1.resnets.2.conv2", 2, 1.0, dora="in")
    g.lora("unet", "up_blocks.0.resnets.1.conv_shortcut", 4, 2.0, dora="in")
    g.loha("unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v", 4, 2.0, dora="in")
    # per-output magnitude (LyCORIS >= 3.2 default wd_on_output): [out, 1] / [out, 1, 1, 1]
    g.lora("unet", "down_blocks.0.resnets.0.time_emb_proj", 4, 2.0, dora="out")
    g.lora("unet", "down_blocks.0.resnets.1.conv1", 2, 1.0, dora="out")
    meta = dict(ss_network_module="lycoris.kohya", ss_network_args=json.dumps({"algo": "lora", "dora_wd": "true"}))
    return g.t, meta, "LoRA/LoCon + dora_scale (per input [1,in,(1,1)] except two per-output [out,1,(1,1)]) and one " \
                      "LoHa + dora_scale, fp32, diffusers-style kohya names"


def make_locon(base):
    g = Gen(base, SEED["locon_mid_bf16"])
    mids = [("down_blocks.0.resnets.0.conv1", 4, 2.0), ("down_blocks.0.resnets.1.conv2", 2, None),
            ("down_blocks.0.downsamplers.0.conv", 2, 1.0), ("down_blocks.1.resnets.1.conv1", 4, 2.0),
            ("mid_block.resnets.0.conv1", 3, 1.5), ("up_blocks.0.resnets.2.conv2", 2, 1.0),
            ("up_blocks.0.upsamplers.0.conv", 4, None), ("up_blocks.1.resnets.0.conv1", 2, 1.0)]
    for path, r, alpha in mids:
        g.lora("unet", path, r, alpha, mid=True, style="sgm")
    g.lora("unet", "up_blocks.1.resnets.2.conv1", 2, 1.0, style="sgm")           # plain 3x3 LoCon (down [r,in,3,3])
    g.lora("unet", "up_blocks.1.resnets.0.conv_shortcut", 4, 2.0, style="sgm")   # 1x1
    g.lora("unet", "down_blocks.0.resnets.0.time_emb_proj", 4, None, style="sgm")
    g.lora("unet", "up_blocks.0.resnets.1.time_emb_proj", 4, 2.0, style="sgm")
    for path in base.transformer_linears():
        if path.startswith("down_blocks.1.attentions.0.") or path.startswith("up_blocks.0.attentions.2."):
            alpha = None if path.endswith("transformer_blocks.0.attn2.to_k") else 2.0
            g.lora("unet", path, 4, alpha, style="sgm")
    t = OrderedDict((k, v.bfloat16()) for k, v in g.t.items())
    meta = dict(ss_network_module="lycoris.kohya", ss_network_args=json.dumps({"algo": "locon", "use_tucker": "true"}),
                ss_base_model_version="sdxl_base_v1-0")
    return t, meta, "LoCon, bf16 (alpha too), SGM-style kohya names: lora_mid Tucker on 3x3 convs, plain LoRA on Linears " \
                    "and a 1x1 conv, one plain 3x3 LoCon; some modules without alpha (alpha = rank)"


def make_full(base):
    g = Gen(base, SEED["full_diff"])
    g.full("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    g.full("unet", "down_blocks.1.attentions.0.proj_in", diff_b=True)
    g.full("unet", "down_blocks.0.resnets.1.conv1", diff_b=True)
    g.full("unet", "up_blocks.1.resnets.0.conv_shortcut", diff_b=True)
    g.full("unet", "time_embedding.linear_1", diff_b=True)
    g.full("text_encoder", "text_model.encoder.layers.0.mlp.fc1", diff_b=True)
    g.full("text_encoder_2", "text_model.encoder.layers.4.self_attn.out_proj")
    g.norm("unet", "down_blocks.0.resnets.0.norm1")                                   # GroupNorm
    g.norm("unet", "down_blocks.1.attentions.0.norm")                                 # GroupNorm (Transformer2D)
    g.norm("unet", "down_blocks.1.attentions.0.transformer_blocks.0.norm1")           # LayerNorm
    g.norm("unet", "mid_block.attentions.0.transformer_blocks.1.norm3")               # LayerNorm
    g.norm("unet", "up_blocks.0.attentions.0.transformer_blocks.0.norm2", with_bias=False)  # w_norm only
    g.norm("unet", "conv_norm_out")
    g.norm("text_encoder", "text_model.encoder.layers.1.layer_norm1")
    g.norm("text_encoder_2", "text_model.encoder.layers.2.layer_norm2")
    g.norm("text_encoder_2", "text_model.final_layer_norm")
    meta = dict(ss_network_module="lycoris.kohya", ss_network_args=json.dumps({"algo": "full", "train_norm": "true"}))
    return g.t, meta, ".diff / .diff_b (full weight / bias deltas) and w_norm / b_norm (norm-layer deltas), fp32, " \
                      "diffusers-style kohya names"


def make_peft(base):
    g = Gen(base, SEED["peft_prefixed"])
    pre = "base_model.model."
    for blk in ("down_blocks.1.attentions.1.transformer_blocks.0", "down_blocks.1.attentions.1.transformer_blocks.1"):
        for q in ("to_q", "to_k", "to_v", "to_out.0"):
            g.peft(pre, f"{blk}.attn1.{q}", 4)
    for q in ("to_q", "to_k", "to_v", "to_out.0"):
        g.peft(pre, f"mid_block.attentions.0.transformer_blocks.0.attn2.{q}", 2 if q == "to_k" else 4)
    g.peft(pre, "up_blocks.0.attentions.0.transformer_blocks.1.ff.net.0.proj", 4)
    g.peft(pre, "up_blocks.0.attentions.0.transformer_blocks.1.ff.net.2", 4)
    g.peft(pre, "up_blocks.0.resnets.2.conv1", 2)
    g.peft(pre, "down_blocks.0.resnets.1.time_emb_proj", 2)
    return g.t, {}, "PEFT LoRA (get_peft_model_state_dict of a PeftModel: base_model.model. prefix), UNet only, fp32, " \
                    "ranks 4 and 2, no alpha (scale 1 per module)"


def make_dora_peft(base):
    g = Gen(base, SEED["dora_peft"])
    for q in ("to_q", "to_k", "to_v", "to_out.0"):
        g.peft("unet.", f"up_blocks.0.attentions.1.transformer_blocks.0.attn1.{q}", 4, magnitude=True)
    for q in ("to_q", "to_v"):
        g.peft("unet.", f"down_blocks.1.attentions.0.transformer_blocks.1.attn2.{q}", 4, magnitude=True)
    g.peft("unet.", "down_blocks.1.resnets.0.conv1", 4, magnitude=True)
    return g.t, {}, "PEFT DoRA (diffusers naming: unet. prefix), fp32, rank 4, no alpha; lora_magnitude_vector is [out] " \
                    "for Linears and [1,out,1,1] for the conv (PEFT's layout; the norm is per output row in both)"


MAKERS = OrderedDict([("loha_kohya", make_loha), ("lokr_sgm_fp16", make_lokr), ("dora_kohya", make_dora),
                      ("locon_mid_bf16", make_locon), ("full_diff", make_full), ("peft_prefixed", make_peft),
                      ("dora_peft", make_dora_peft)])


# ------------------------------------------------------------------------------------------------------------------
# cross-checks
# ------------------------------------------------------------------------------------------------------------------
def proxy_module(W, b, kind, with_bias=False):
    if kind == "groupnorm":
        m = nn.GroupNorm(32, W.shape[0])
    elif kind == "layernorm":
        m = nn.LayerNorm(W.shape[0])
    elif W.dim() == 2:
        m = nn.Linear(W.shape[1], W.shape[0], bias=with_bias and b is not None)
    else:  # stride 1 / padding 0 whatever the real conv has: only the weight matters here
        m = nn.Conv2d(W.shape[1], W.shape[0], tuple(W.shape[2:]), bias=with_bias and b is not None)
    m.weight.data.copy_(W)
    if b is not None and getattr(m, "bias", None) is not None:
        m.bias.data.copy_(b)
    m.requires_grad_(False)
    return m


@torch.no_grad()
def effective_weight(m, W):
    """The weight a (patched) Linear/Conv2d forward uses, recovered by feeding one-hot inputs (no bias)."""
    if W.dim() == 2:
        return m(torch.eye(W.shape[1])).t().contiguous()
    inn, kh, kw = W.shape[1], W.shape[2], W.shape[3]
    n = inn * kh * kw
    x = torch.eye(n).reshape(n, inn, kh, kw)
    y = m(x).reshape(n, W.shape[0])
    return y.t().reshape(W.shape[0], inn, kh, kw).contiguous()


def lycoris_check(base, groups, m):
    """For each module: build the lycoris module from the state dict with the package's own loader
    (get_module/make_module) and compare its merged weight with mine, through (a) its forward path (what
    inference uses when applied) and (b) get_merged_weight (merge_to / parametrize). Falls back to lycoris.functional
    when the loader cannot build the module. Returns rows."""
    import lycoris
    from lycoris.modules import get_module, make_module
    rows = []
    for (comp, path), p in groups.items():
        mod = base.mods[comp][path]
        W = base.W(comp, path)
        b = base.sd[comp].get(f"{path}.bias")
        kind = "groupnorm" if isinstance(mod, nn.GroupNorm) else "layernorm" if isinstance(mod, nn.LayerNorm) else \
            "linear" if W.dim() == 2 else "conv"
        res, info = delta(p, W, b)
        mine_w = W + m * res["weight"] if "weight" in res else W
        mine_b = b + m * res["bias"] if "bias" in res else b
        row = dict(module=f"{comp}.{path}", type=info["type"] + (("+dora-" + info["dora"]) if "dora" in info else ""),
                   form=info.get("form"))
        sd = {f"m.{k}": v.clone() for k, v in p.items() if not k.startswith("peft:")}
        if "alpha" not in p and info["type"] not in ("full", "norm"):
            sd["m.alpha"] = torch.tensor(0.0)  # lycoris' loader does float(alpha); 0 / None means alpha = rank there
            row["note"] = "alpha absent: passed alpha=0 (lycoris: 0 -> rank)"
        try:
            typ, params = get_module(sd, "m")
            org = proxy_module(W, b, kind, with_bias=info["type"] == "full")
            try:
                lm = make_module(typ, params, "m", org)
                if lm is None:
                    raise RuntimeError("make_module returned None")
            except Exception as e:  # noqa: BLE001
                if "dora" not in info:
                    raise
                # the loader builds DoRA modules with the package's default norm axis; build one with the axis the
                # file's dora_scale shape implies, if this lycoris version has that option (wd_on_out, >= 3.2)
                row["loader_error"] = f"{type(e).__name__}: {e}"[:200]
                org = proxy_module(W, b, kind)
                lm = dora_direct(typ, p, info, org)
                row["built_directly"] = f"wd_on_out={info['dora'] == 'out'}"
            row["lycoris_class"] = type(lm).__name__
            try:
                w_merge, b_merge = lm.get_merged_weight(multiplier=m, shape=W.shape, device="cpu")
                row["merge_path_maxdiff"] = refutil.max_abs(w_merge.detach(), mine_w)
                if b_merge is not None and mine_b is not None:
                    row["merge_path_bias_maxdiff"] = refutil.max_abs(b_merge.detach(), mine_b)
            except Exception as e:  # noqa: BLE001
                row["merge_path_error"] = f"{type(e).__name__}: {e}"[:200]
                if info["type"] == "full":  # lycoris' own delta accessor instead
                    dw, db = lm.get_diff_weight(multiplier=m)
                    row["diff_path_maxdiff"] = refutil.max_abs(W + dw.detach().reshape(W.shape), mine_w)
                    if db is not None and mine_b is not None:
                        row["diff_path_bias_maxdiff"] = refutil.max_abs(b + db.detach(), mine_b)
            if kind in ("linear", "conv") and info["type"] not in ("full",):
                lm.multiplier = m
                lm.apply_to()
                row["forward_path_maxdiff"] = refutil.max_abs(effective_weight(org, W), mine_w)
                if "dora" in info and m != 1.0:  # lycoris' DoRA strength semantics differ; check m = 1 too
                    lm.multiplier = 1.0
                    row["forward_path_m1_maxdiff"] = refutil.max_abs(effective_weight(org, W), W + res["weight"])
                lm.restore()
        except Exception as e:  # noqa: BLE001
            row["loader_error"] = f"{type(e).__name__}: {e}"[:200]
            fd = functional_delta(p, W)
            if fd is not None:
                for key, d in fd.items():
                    row[key] = refutil.max_abs(W + m * d, mine_w)
        rows.append(row)
    return rows, lycoris.__file__


def dora_direct(typ, p, info, org):
    import inspect
    if "wd_on_out" not in inspect.signature(typ.__init__).parameters:
        raise RuntimeError("this lycoris version has no wd_on_out (per-output DoRA)")
    r = info["rank"]
    alpha = info["alpha"] if info["alpha"] is not None else 0.0
    kw = dict(weight_decompose=True, wd_on_out=info["dora"] == "out")
    if typ.__name__ == "LoConModule":
        lm = typ("m", org, 1.0, r, alpha, use_tucker="lora_mid.weight" in p, **kw)
        lm.lora_up.weight.data.copy_(p["lora_up.weight"])
        lm.lora_down.weight.data.copy_(p["lora_down.weight"])
        if "lora_mid.weight" in p:
            lm.lora_mid.weight.data.copy_(p["lora_mid.weight"])
    elif typ.__name__ == "LohaModule":
        lm = typ("m", org, 1.0, r, alpha, use_tucker="hada_t1" in p, **kw)
        for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"):
            if k in p:
                getattr(lm, k).data.copy_(p[k])
    else:
        raise RuntimeError(f"no direct build for {typ.__name__}")
    lm.dora_scale.data.copy_(p["dora_scale"])
    return lm


def functional_delta(p, W):
    """lycoris.functional reconstructions (for modules the lycoris loader cannot build)."""
    from lycoris.functional import lokr as flokr
    from lycoris.functional.general import rebuild_tucker
    out = {}
    if "lokr_w1" in p or "lokr_w1_a" in p:
        w1, w1a, w1b = p.get("lokr_w1"), p.get("lokr_w1_a"), p.get("lokr_w1_b")
        w2, w2a, w2b, t = p.get("lokr_w2"), p.get("lokr_w2_a"), p.get("lokr_w2_b"), p.get("lokr_t2")
        alpha = float(p["alpha"]) if "alpha" in p else None
        # (1) functional.lokr.diff_weight as is (its own rank rule: w1a.shape[1] or w2a.shape[1])
        if alpha is not None:
            try:
                d = flokr.diff_weight(w1, w1a, w1b, w2, w2a, w2b, t, gamma=alpha)
                out["functional_diff_weight_maxdiff"] = d.reshape(W.shape)
            except Exception:  # noqa: BLE001
                pass
        # (2) the same primitives (make_kron, rebuild_tucker) with rank = w1_b.shape[0] / w2_b.shape[0]
        dim = w1b.shape[0] if w1 is None else (w2b.shape[0] if w2 is None else None)
        scale = 1.0 if dim is None else (alpha if alpha is not None else dim) / dim
        ww1 = w1 if w1 is not None else w1a @ w1b
        if w2 is None:
            ww2 = rebuild_tucker(t, w2a, w2b) if t is not None else (w2a @ w2b.reshape(w2b.shape[0], -1))
        else:
            ww2 = w2
        if W.dim() == 4 and ww2.dim() == 2:
            ww2 = ww2.reshape(W.shape[0] // ww1.shape[0], W.shape[1] // ww1.shape[1], *W.shape[2:])
        out["functional_make_kron_maxdiff"] = flokr.make_kron(ww1, ww2, scale).reshape(W.shape)
        return out
    return None


def peft_check(base, sd_file, prefix, m, dora):
    """Load the PEFT file into a copy of the UNet with peft (inject_adapter_in_model + set_peft_model_state_dict,
    alpha = r per module), set the scaling to m (what diffusers' set_adapters does) and merge; compare with mine."""
    import peft
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    unet = copy.deepcopy(base.models["unet"])
    sd = OrderedDict((k[len(prefix):], v.float()) for k, v in sd_file.items())
    ranks = OrderedDict()
    for k, v in sd.items():
        if k.endswith(".lora_A.weight"):
            ranks[k[: -len(".lora_A.weight")]] = v.shape[0]
    r0 = max(set(ranks.values()), key=list(ranks.values()).count)
    pat = {p: r for p, r in ranks.items() if r != r0}
    cfg = LoraConfig(r=r0, lora_alpha=r0, target_modules=list(ranks), rank_pattern=pat, alpha_pattern=dict(pat),
                     use_dora=dora, init_lora_weights=False)
    inject_adapter_in_model(cfg, unet, adapter_name="default")
    res = set_peft_model_state_dict(unet, sd, adapter_name="default")
    unexpected = list(getattr(res, "unexpected_keys", []) or [])
    groups = group(base, OrderedDict((prefix + k, v) for k, v in sd.items()))
    worst = 0.0
    with torch.no_grad():
        for (comp, path), p in groups.items():
            lay = unet.get_submodule(path)
            lay.scaling["default"] = m * lay.lora_alpha["default"] / lay.r["default"]
            lay.merge(adapter_names=["default"])
            got = lay.get_base_layer().weight
            W = base.W(comp, path)
            mine = W + m * delta(p, W, None)[0]["weight"]
            worst = max(worst, refutil.max_abs(got, mine))
    return dict(peft=peft.__version__, strength=m, dora=dora, modules=len(groups), max_abs=worst,
                unexpected_keys=unexpected[:5])


# ------------------------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/data/lora"))
    ap.add_argument("--shared", default=os.path.join(os.environ.get("SDXL_SHARED_REFS", "/work/shared/refs"), "tiny-lora"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-lycoris", action="store_true")
    ap.add_argument("--no-peft", action="store_true")
    a = ap.parse_args()
    refutil.set_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    report = OrderedDict(versions=refutil.versions())
    failures = []

    # 1. copies + legacy pickle
    for f in COPIES:
        src, dst = os.path.join(a.shared, f), os.path.join(a.out, f)
        if not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read():
            shutil.copyfile(src, dst)
    lora_a = load_adapter(os.path.join(a.out, "lora_a_kohya.safetensors"))
    legacy = os.path.join(a.out, "lora_a_legacy.pt")
    # torch's legacy format names each storage by its memory address, so two saves of the same tensors differ in
    # bytes: keep an existing file whose content (names, dtypes, values, order) is already right
    keep = False
    if os.path.exists(legacy):
        try:
            old = torch.load(legacy, map_location="cpu")
            keep = list(old) == list(lora_a) and all(torch.equal(old[k], lora_a[k]) and old[k].dtype == lora_a[k].dtype
                                                      for k in lora_a)
        except Exception:  # noqa: BLE001
            keep = False
    if not keep:
        torch.save(OrderedDict(lora_a), legacy, _use_new_zipfile_serialization=False)
    back = torch.load(legacy, map_location="cpu")
    ok = list(back) == list(lora_a) and all(torch.equal(back[k], lora_a[k]) and back[k].dtype == lora_a[k].dtype
                                            for k in lora_a)
    with open(legacy, "rb") as f:
        zipped = f.read(2) == b"PK"
    report["lora_a_legacy"] = dict(roundtrip_equal=ok, zip_format=zipped, tensors=len(back))
    if not ok or zipped:
        failures.append("lora_a_legacy.pt round trip / format")

    # 2. adapters
    base = Base(MODEL)
    descriptions = {}
    for name, fn in MAKERS.items():
        t, meta, desc = fn(base)
        meta = dict(meta)
        meta["description"] = desc
        meta["generator"] = f"tools/refs/make_lycoris_refs.py seed {SEED[name]}"
        refutil.write_safetensors(os.path.join(a.out, f"{name}.safetensors"), t, meta)
        descriptions[name] = desc

    # 3. read everything back from disk and merge
    adapters = OrderedDict()
    for name in list(MAKERS) + ["lora_a_kohya"]:
        adapters[name] = group(base, load_adapter(os.path.join(a.out, f"{name}.safetensors")))
    deltas = {n: adapter_deltas(base, g) for n, g in adapters.items()}
    runner = Runner(base)
    base_out = runner.run(base.sd)
    refs = OrderedDict()
    module_info = OrderedDict()
    for name, m in STRENGTHS.items():
        comps = sorted({c for c, _ in adapters[name]})
        module_info[name] = OrderedDict()
        for (comp, path), p in adapters[name].items():
            _, info = delta(p, base.W(comp, path), base.sd[comp].get(f"{path}.bias"))
            module_info[name][f"{comp}.{path}"] = info
        sd = merged_sd(base, [(deltas[name], m)])
        want = ["unet"] + [c for c in ("text_encoder", "text_encoder_2") if c in comps]
        out = runner.run(sd, want)
        for k, v in out.items():
            refs[f"{name}.{k}"] = v
            d = refutil.max_abs(v, base_out[k])
            report.setdefault("change_vs_base", {})[f"{name}.{k}"] = d
            if not d > 1e-3:
                failures.append(f"{name}.{k} changes by only {d:.3g}")
        for comp, path, params in WEIGHT_KEYS[name]:
            for prm in params:
                refs[f"{name}.w.{comp}.{path}.{prm}"] = sd[comp][f"{path}.{prm}"].contiguous()
    # stack (every Delta against the base W)
    sd = merged_sd(base, [(deltas[n], m) for n, m in STACK])
    for k, v in runner.run(sd).items():
        refs[f"stack.{k}"] = v
        report.setdefault("change_vs_base", {})[f"stack.{k}"] = refutil.max_abs(v, base_out[k])
    # stack applied one after another (A1111 / ComfyUI order semantics; only DoRA sees the difference)
    cur = {c: dict(v) for c, v in base.sd.items()}
    for n, m in STACK:
        d = adapter_deltas(base, adapters[n], weights=lambda c, k: cur[c][k])
        for (comp, key), dd in d.items():
            cur[comp][key] = cur[comp][key] + m * dd
    refs["stack_seq.unet.noise_pred"] = runner.run(cur, ["unet"])["unet.noise_pred"]
    report["stack_seq_vs_stack_unet_maxdiff"] = refutil.max_abs(refs["stack_seq.unet.noise_pred"],
                                                                refs["stack.unet.noise_pred"])

    # 4. self-check: my merge of lora_a at 0.8 vs lora_refs (diffusers/PEFT, torch 1.13)
    lr, _ = refutil.load_st(os.path.join(a.out, "lora_refs.safetensors"))
    got = runner.run(merged_sd(base, [(deltas["lora_a_kohya"], 0.8)]))
    chk = {k: refutil.max_abs(got[k], lr[f"a0.8.{k}"]) for k in got}
    report["lora_a_0.8_vs_lora_refs"] = chk
    if max(chk.values()) > 1e-4:
        failures.append(f"lora_a 0.8 vs lora_refs: {chk}")

    # 5. lycoris / PEFT cross-checks
    if not a.no_lycoris:
        try:
            import lycoris  # noqa: F401
            have = True
        except ImportError:
            have = False
            report["lycoris"] = "not installed: skipped"
        if have:
            import importlib.metadata as md
            lyc = OrderedDict(version=md.version("lycoris_lora"))
            strengths = dict(STRENGTHS, lora_a_kohya=0.8)
            for name in ("loha_kohya", "lokr_sgm_fp16", "dora_kohya", "locon_mid_bf16", "full_diff", "lora_a_kohya"):
                rows, lyc["file"] = lycoris_check(base, adapters[name], strengths[name])
                lyc[name] = summarize(rows)
                for row in rows:
                    fwd = row.get("forward_path_maxdiff", row.get("functional_make_kron_maxdiff"))
                    if "dora" in row["type"]:
                        fwd = row.get("forward_path_m1_maxdiff", fwd)
                    if row["type"] in ("full", "norm"):
                        fwd = max(row.get(k, 0.0) for k in ("merge_path_maxdiff", "merge_path_bias_maxdiff",
                                                             "diff_path_maxdiff", "diff_path_bias_maxdiff"))
                    if fwd is not None and fwd > 1e-5:
                        failures.append(f"lycoris {name} {row['module']}: {fwd:.3g}")
            report["lycoris"] = lyc
    if not a.no_peft:
        try:
            import peft  # noqa: F401
            pk = OrderedDict()
            pf = load_adapter(os.path.join(a.out, "peft_prefixed.safetensors"))
            dp = load_adapter(os.path.join(a.out, "dora_peft.safetensors"))
            pk["peft_prefixed"] = peft_check(base, pf, "base_model.model.", STRENGTHS["peft_prefixed"], False)
            pk["dora_peft_m1"] = peft_check(base, dp, "unet.", 1.0, True)
            pk["dora_peft_m%.2f" % STRENGTHS["dora_peft"]] = peft_check(base, dp, "unet.", STRENGTHS["dora_peft"], True)
            for k in ("peft_prefixed", "dora_peft_m1"):
                if pk[k]["max_abs"] > 1e-5:
                    failures.append(f"peft {k}: {pk[k]['max_abs']:.3g}")
            report["peft"] = pk
        except ImportError:
            report["peft"] = "not installed: skipped"

    # 6. refs file
    meta = OrderedDict()
    meta["description"] = ("torch references for the LyCORIS/DoRA/full/PEFT test adapters of tests/data/lora: outputs of the "
                           "unmodified diffusers 0.27.2 UNet / transformers CLIP text encoders with weights merged by "
                           "W' = W + m*Delta (see tests/data/README.md); inputs tests/data/refs/tiny-sdxl-ref "
                           "unet_forward.safetensors in.* and tokens.safetensors tok1/tok2.input_ids")
    meta["strengths"] = json.dumps(STRENGTHS)
    meta["stack"] = json.dumps(STACK)
    for k, v in STRENGTHS.items():
        meta[k] = str(v)
    meta["versions"] = json.dumps(report["versions"], sort_keys=True)
    refutil.write_safetensors(os.path.join(a.out, "lycoris_refs.safetensors"), refs, meta)

    sizes = OrderedDict((f, os.path.getsize(os.path.join(a.out, f))) for f in sorted(os.listdir(a.out))
                        if f != "lycoris_report.json")
    report["sizes"] = sizes
    report["total_bytes"] = sum(sizes.values())
    report["module_info"] = module_info
    report["failures"] = failures
    with open(os.path.join(a.out, "lycoris_report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print_report(report)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("all checks passed")


def summarize(rows):
    """Per adapter type: worst max|diff| of each comparison, and the errors seen."""
    out = OrderedDict()
    for r in rows:
        key = r["type"] + (f" [{r['form']}]" if r.get("form") else "")
        s = out.setdefault(key, OrderedDict(n=0))
        s["n"] += 1
        for k, v in r.items():
            if k.endswith("maxdiff"):
                s[k] = max(s.get(k, 0.0), v)
            elif k.endswith("error"):
                s.setdefault(k, v)
    return out


def print_report(rep):
    print("== sizes")
    for f, n in rep["sizes"].items():
        print(f"  {f:40s} {n:9d}")
    print(f"  total {rep['total_bytes']} bytes")
    print("== lora_a_legacy.pt:", rep["lora_a_legacy"])
    print("== my lora_a 0.8 merge vs lora_refs a0.8 (diffusers/PEFT):",
          {k: f"{v:.3g}" for k, v in rep["lora_a_0.8_vs_lora_refs"].items()})
    print("== output change vs base (must be > 1e-3)")
    for k, v in rep["change_vs_base"].items():
        print(f"  {k:40s} {v:.4g}")
    print(f"== stack_seq vs stack (UNet): {rep['stack_seq_vs_stack_unet_maxdiff']:.3g}")
    if isinstance(rep.get("lycoris"), dict):
        print(f"== lycoris_lora {rep['lycoris']['version']} ({rep['lycoris']['file']})")
        for name, s in rep["lycoris"].items():
            if name in ("version", "file") or name.endswith(".rows"):
                continue
            print(f"  {name}")
            for typ, d in s.items():
                print(f"    {typ:34s} " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in d.items()))
    else:
        print("== lycoris:", rep.get("lycoris"))
    if isinstance(rep.get("peft"), dict):
        for k, v in rep["peft"].items():
            print(f"== peft {k}: {v}")
    else:
        print("== peft:", rep.get("peft"))


if __name__ == "__main__":
    main()
