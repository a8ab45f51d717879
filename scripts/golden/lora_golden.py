#!/usr/bin/python3
"""Random PEFT LoRA adapters for camelid's tests, plus torch reference logits.

Written from scratch for camelid (no peft / transformers / safetensors packages): the adapters are
written in PEFT's file layout by hand, and the reference forward adds the LoRA branch the way PEFT's
lora.Linear does at inference, y = x W^T + s * (x A^T) B^T with s = lora_alpha / r (lora_alpha / sqrt(r)
with use_rslora) -- unmerged, so the reference checks camelid's merge instead of repeating it.

Usage:  /usr/bin/python3 scripts/golden/lora_golden.py   (see tests/data/lora-tiny/README.md)
        (reads tests/data/hf-tiny/gqa-f32, writes tests/data/lora-tiny and tests/data/lora-stories260K;
         the stories260K adapter needs only the model's shapes, which are fixed below)

Requires Debian python3-torch (1.13 tested) and numpy. Deterministic (fixed seeds, 2 threads).
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hf_tiny_golden as hf  # noqa: E402  (rmsnorm, RoPE, dims, write_safetensors)

torch.set_num_threads(2)

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
ST_DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    """{name: fp32 tensor} from a safetensors file (F32/F16/BF16), parsed by hand."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[base + b:base + e]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(ST_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(info["shape"]).copy())
    return out


def module_shapes(cfg):
    H, nh, nkv, hd = hf.dims(cfg)
    I = cfg["intermediate_size"]
    return {"q_proj": (nh * hd, H), "k_proj": (nkv * hd, H), "v_proj": (nkv * hd, H), "o_proj": (H, nh * hd),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}


def make_adapter(cfg, spec):
    """{(layer, module): (A [r,in], B [out,r], scale)} and the PEFT state dict."""
    gen = torch.Generator().manual_seed(spec["seed"])
    shapes = module_shapes(cfg)
    lora, state = {}, []
    for l in range(cfg["num_hidden_layers"]):
        for mod in spec["modules"]:
            out_f, in_f = shapes[mod]
            r = spec.get("rank_pattern", {}).get(mod, spec["r"])
            alpha = spec.get("alpha_pattern", {}).get(mod, spec["alpha"])
            A = torch.randn(r, in_f, generator=gen) * spec["a_std"]
            B = torch.randn(out_f, r, generator=gen) * spec["b_std"]  # nonzero: a trained adapter
            A = A.to(torch.float16).to(torch.float32) if spec["dtype"] == "F16" else A
            B = B.to(torch.float16).to(torch.float32) if spec["dtype"] == "F16" else B
            s = alpha / math.sqrt(r) if spec["rslora"] else alpha / r
            lora[(l, mod)] = (A, B, s)
            p = "base_model.model.model.layers.%d.%s.%s." % (l, PARENT[mod], mod)
            name = spec.get("adapter_name", "")
            state.append((p + "lora_A." + name + "weight", A))
            state.append((p + "lora_B." + name + "weight", B))
    state.sort(key=lambda kv: kv[0])
    return lora, state


def peft_config(spec):
    return {
        "alpha_pattern": spec.get("alpha_pattern", {}),
        "auto_mapping": None,
        "base_model_name_or_path": spec["base"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": spec["alpha"],
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": spec["r"],
        "rank_pattern": spec.get("rank_pattern", {}),
        "revision": None,
        "target_modules": spec.get("target_modules", spec["modules"]),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": spec["rslora"],
    }


def forward_lora(cfg, W, lora, tokens):
    """hf_tiny_golden.forward with PEFT's unmerged LoRA branch on every adapted linear."""
    H, nh, nkv, hd = hf.dims(cfg)
    eps = cfg.get("rms_norm_eps", 1e-6)
    T = len(tokens)
    g = nh // nkv
    cos, sin = hf.rope_cos_sin(hf.compute_inv_freq(cfg, hd), T)

    def lin(x, l, mod):
        y = x @ W["model.layers.%d.%s.%s.weight" % (l, PARENT[mod], mod)].T
        if (l, mod) in lora:
            A, B, s = lora[(l, mod)]
            y = y + ((x @ A.T) @ B.T) * s
        return y

    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = hf.rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = lin(h, l, "q_proj").view(T, nh, hd).transpose(0, 1)
        k = lin(h, l, "k_proj").view(T, nkv, hd).transpose(0, 1)
        v = lin(h, l, "v_proj").view(T, nkv, hd).transpose(0, 1)
        q = q * cos + hf.rotate_half(q) * sin
        k = k * cos + hf.rotate_half(k) * sin
        k = k.repeat_interleave(g, dim=0)
        v = v.repeat_interleave(g, dim=0)
        att = torch.softmax((q @ k.transpose(1, 2)) * (1.0 / math.sqrt(hd)) + mask, dim=-1, dtype=torch.float32)
        o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
        x = x + lin(o, l, "o_proj")
        h = hf.rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(torch.nn.functional.silu(lin(h, l, "gate_proj")) * lin(h, l, "up_proj"), l, "down_proj")
    x = hf.rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else W["lm_head.weight"]
    return (x @ head.T).to(torch.float32)


def write_adapter(d, spec, state):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(peft_config(spec), f, indent=2, sort_keys=True)
        f.write("\n")
    hf.write_safetensors(os.path.join(d, "adapter_model.safetensors"), state, spec["dtype"])


TINY_ADAPTERS = [
    # all seven linears, r 4, alpha 8 (s 2), F32
    {"name": "all-linear", "seed": 2001, "r": 4, "alpha": 8, "rslora": False, "modules": ALL7,
     "a_std": 0.3, "b_std": 0.05, "dtype": "F32"},
    # rsLoRA (s = 8 / sqrt(4) = 4) on q_proj and v_proj only
    {"name": "rslora-qv", "seed": 2002, "r": 4, "alpha": 8, "rslora": True, "modules": ["q_proj", "v_proj"],
     "a_std": 0.3, "b_std": 0.05, "dtype": "F32"},
    # a regex target, per-module rank and alpha, the adapter name in the keys, F16 tensors
    {"name": "patterns-f16", "seed": 2003, "r": 4, "alpha": 8, "rslora": False,
     "modules": ["k_proj", "o_proj", "down_proj"],
     "target_modules": r"model\.layers\.\d+\.(self_attn\.(k|o)_proj|mlp\.down_proj)",
     "rank_pattern": {"down_proj": 2}, "alpha_pattern": {"o_proj": 2},
     "adapter_name": "default.", "a_std": 0.3, "b_std": 0.05, "dtype": "F16"},
]

STORIES_CFG = {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8,
               "num_key_value_heads": 4, "vocab_size": 512}
STORIES_ADAPTER = {"name": "lora-stories260K", "seed": 2101, "r": 2, "alpha": 4, "rslora": False,
                   "modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "a_std": 0.3, "b_std": 0.02,
                   "dtype": "F32", "base": "stories260K (llama2.c)"}


def main():
    base_dir = os.path.join(ROOT, "tests", "data", "hf-tiny", "gqa-f32")
    out_root = os.path.join(ROOT, "tests", "data", "lora-tiny")
    with open(os.path.join(base_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(base_dir, "tokens.json")) as f:
        tokens = json.load(f)["tokens"]
    W = read_safetensors(os.path.join(base_dir, "model.safetensors"))
    with torch.no_grad():
        base_logits = hf.forward(cfg, W, tokens)
        stored = np.fromfile(os.path.join(base_dir, "logits.f32"), dtype="<f4").reshape(base_logits.shape)
        assert (base_logits - torch.from_numpy(stored)).abs().max().item() < 1e-6
        assert (forward_lora(cfg, W, {}, tokens) - base_logits).abs().max().item() < 1e-6
        for spec in TINY_ADAPTERS:
            spec = dict(spec, base="hf-tiny/gqa-f32")
            lora, state = make_adapter(cfg, spec)
            d = os.path.join(out_root, spec["name"])
            write_adapter(d, spec, state)
            logits = forward_lora(cfg, W, lora, tokens)
            with open(os.path.join(d, "logits.f32"), "wb") as f:
                f.write(logits.contiguous().numpy().astype("<f4").tobytes())
            print("%-14s logits %s, max |logit - base| %.3g, argmax %s" % (
                spec["name"], tuple(logits.shape), (logits - base_logits).abs().max().item(),
                logits.argmax(-1).tolist()))
        lora, state = make_adapter(STORIES_CFG, STORIES_ADAPTER)
        write_adapter(os.path.join(ROOT, "tests", "data", "lora-stories260K"), STORIES_ADAPTER, state)


if __name__ == "__main__":
    main()
