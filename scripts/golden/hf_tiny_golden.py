#!/usr/bin/python3
"""Generate tiny random Hugging Face Llama checkpoints plus fp32 reference logits.

Written from scratch for camelid (no transformers / safetensors packages needed):
the forward pass below follows the math of transformers' LlamaForCausalLM
(eager attention), and safetensors files are written by hand.

Usage:  /usr/bin/python3 scripts/golden/hf_tiny_golden.py [OUT_DIR]
        (default OUT_DIR: tests/data/hf-tiny next to this script's repo root)

Requires: Debian python3-torch (1.13 tested) and numpy. Deterministic: fixed
seeds, fp32 math, 2 threads.

Per variant folder <OUT_DIR>/<name>/:
  config.json                      HF config
  model.safetensors                (or model-0000K-of-0000N.safetensors shards
                                    + model.safetensors.index.json)
  tokens.json                      {"tokens": [...]} input token ids (BOS first)
  logits.f32                       raw little-endian float32 [T, V]; row t = logits
                                   after reading tokens[0..t]
  expected.json                    shape, argmax of every row, last-row argmax

The reference forward uses the weights exactly as stored (bf16/f16 rounded values
are widened to fp32) and runs every operation in fp32.
"""
import json
import math
import os
import struct
import sys

import torch

torch.set_num_threads(2)

TOKENS = [1, 17, 42, 5, 88, 23, 64, 9, 71, 30, 55]

# --------------------------------------------------------------------------
# RoPE inverse frequencies (transformers modeling_rope_utils semantics)


def rope_params_of(cfg):
    """Return (theta, rope_type, scaling_dict) from a v4 or v5 style config."""
    if "rope_parameters" in cfg and cfg["rope_parameters"] is not None:
        rp = dict(cfg["rope_parameters"])
        theta = float(rp.get("rope_theta", 10000.0))
        rtype = rp.get("rope_type", rp.get("type", "default"))
        return theta, rtype, rp
    theta = float(cfg.get("rope_theta", 10000.0))
    rs = cfg.get("rope_scaling")
    if rs is None:
        return theta, "default", {}
    rtype = rs.get("rope_type", rs.get("type", "default"))
    return theta, rtype, rs


def default_inv_freq(theta, dim):
    # 1 / base ** (arange(0, dim, 2, int64).float() / dim), all in float32
    exps = torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim
    return 1.0 / (theta ** exps)


def compute_inv_freq(cfg, head_dim):
    theta, rtype, sc = rope_params_of(cfg)
    inv_freq = default_inv_freq(theta, head_dim)
    if rtype == "default":
        return inv_freq
    if rtype == "linear":
        return inv_freq / float(sc["factor"])
    if rtype == "llama3":
        factor = sc["factor"]
        low_freq_factor = sc["low_freq_factor"]
        high_freq_factor = sc["high_freq_factor"]
        old_context_len = sc["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, inv_freq_llama)
    raise ValueError("unsupported rope_type %r" % rtype)


def rope_cos_sin(inv_freq, T):
    pos = torch.arange(T, dtype=torch.float32)
    freqs = (inv_freq[:, None].float() @ pos[None, :]).transpose(0, 1)  # [T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, hd]
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


# --------------------------------------------------------------------------
# Reference forward (LlamaForCausalLM math, fp32)


def rmsnorm(x, w, eps):
    xf = x.to(torch.float32)
    var = xf.pow(2).mean(-1, keepdim=True)
    xf = xf * torch.rsqrt(var + eps)
    return w * xf.to(x.dtype)


def dims(cfg):
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    return H, nh, nkv, hd


def rope_interleaved(x, inv_freq, T):
    """Meta/GGUF pairing (2i, 2i+1) -- WRONG for HF layout; only for the sensitivity check."""
    pos = torch.arange(T, dtype=torch.float32)
    f = pos[:, None] * inv_freq[None, :]  # [T, hd/2]
    c, s = f.cos(), f.sin()
    x2 = x.reshape(*x.shape[:-1], -1, 2)
    a, b = x2[..., 0], x2[..., 1]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).reshape(x.shape)


def forward(cfg, W, tokens, wrong_interleaved_rope=False):
    H, nh, nkv, hd = dims(cfg)
    eps = cfg.get("rms_norm_eps", 1e-6)
    L = cfg["num_hidden_layers"]
    T = len(tokens)
    g = nh // nkv
    inv_freq = compute_inv_freq(cfg, hd)
    cos, sin = rope_cos_sin(inv_freq, T)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]  # [T, H]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(L):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        if wrong_interleaved_rope:
            q, k = rope_interleaved(q, inv_freq, T), rope_interleaved(k, inv_freq, T)
        else:
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        # repeat_kv: kv head j serves query heads j*g .. j*g+g-1
        k = k.repeat_interleave(g, dim=0)
        v = v.repeat_interleave(g, dim=0)
        att = (q @ k.transpose(1, 2)) * (1.0 / math.sqrt(hd)) + mask
        att = torch.softmax(att, dim=-1, dtype=torch.float32)
        o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        gate = h @ W[p + "mlp.gate_proj.weight"].T
        up = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else W["lm_head.weight"]
    return (x @ head.T).to(torch.float32)


# --------------------------------------------------------------------------
# Weights


def make_weights(cfg, seed):
    H, nh, nkv, hd = dims(cfg)
    I = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    gen = torch.Generator().manual_seed(seed)

    def lin(*shape):
        return torch.randn(*shape, generator=gen) * 0.02

    def norm(n):
        return 1.0 + torch.randn(n, generator=gen) * 0.1

    W = {"model.embed_tokens.weight": lin(V, H)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        W[p + "input_layernorm.weight"] = norm(H)
        W[p + "self_attn.q_proj.weight"] = lin(nh * hd, H)
        W[p + "self_attn.k_proj.weight"] = lin(nkv * hd, H)
        W[p + "self_attn.v_proj.weight"] = lin(nkv * hd, H)
        W[p + "self_attn.o_proj.weight"] = lin(H, nh * hd)
        W[p + "post_attention_layernorm.weight"] = norm(H)
        W[p + "mlp.gate_proj.weight"] = lin(I, H)
        W[p + "mlp.up_proj.weight"] = lin(I, H)
        W[p + "mlp.down_proj.weight"] = lin(H, I)
    W["model.norm.weight"] = norm(H)
    if not cfg.get("tie_word_embeddings", False):
        W["lm_head.weight"] = lin(V, H)
    return W


DTYPES = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
}


def tensor_bytes(t, st_dtype):
    tdt, _ = DTYPES[st_dtype]
    t = t.to(tdt).contiguous()
    if tdt == torch.bfloat16:
        arr = t.view(torch.int16).numpy()
    else:
        arr = t.numpy()
    b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    assert len(b) == t.numel() * DTYPES[st_dtype][1]
    return b


def write_safetensors(path, tensors, st_dtype):
    """tensors: list of (name, fp32 tensor). Header order == data order, no gaps."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name, t in tensors:
        b = tensor_bytes(t, st_dtype)
        header[name] = {"dtype": st_dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    return off


def rounded(W, st_dtype):
    tdt, _ = DTYPES[st_dtype]
    return {k: v.to(tdt).to(torch.float32) for k, v in W.items()}


# --------------------------------------------------------------------------
# Variants


def base_config(**kw):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "max_position_embeddings": 128,
        "pretraining_tp": 1,
        "use_cache": True,
    }
    cfg.update(kw)
    return cfg


VARIANTS = [
    {
        "name": "gqa-f32",
        "seed": 1001,
        "dtype": "F32",
        "shards": 1,
        "config": base_config(
            hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=8, num_key_value_heads=2, vocab_size=96,
            rope_theta=10000.0, rope_scaling=None, rms_norm_eps=1e-5,
            tie_word_embeddings=False, torch_dtype="float32"),
    },
    {
        "name": "llama3-bf16",
        "seed": 1002,
        "dtype": "BF16",
        "shards": 1,
        "config": base_config(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96,
            rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
            max_position_embeddings=256, rms_norm_eps=1e-5,
            tie_word_embeddings=True, eos_token_id=[2, 3], torch_dtype="bfloat16"),
    },
    {
        "name": "linear-f16",
        "seed": 1003,
        "dtype": "F16",
        "shards": 2,
        # no rope_theta (default 10000), no num_key_value_heads (= heads)
        "config": base_config(
            hidden_size=64, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, vocab_size=96,
            rope_scaling={"type": "linear", "factor": 2.0},
            rms_norm_eps=1e-6, tie_word_embeddings=False, torch_dtype="float16"),
    },
    {
        "name": "v5-rope-params",
        "seed": 1004,
        "dtype": "F32",
        "shards": 1,
        # transformers v5 style: rope_parameters, explicit head_dim (!= hidden/heads), "dtype"
        "config": base_config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96,
            rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
            rms_norm_eps=1e-5, tie_word_embeddings=True, dtype="float32"),
    },
]


def build(variant, out_root):
    name = variant["name"]
    cfg = variant["config"]
    st = variant["dtype"]
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        if fn.endswith(".safetensors") or fn.endswith(".safetensors.index.json"):
            os.remove(os.path.join(d, fn))

    W = make_weights(cfg, variant["seed"])
    Wr = rounded(W, st)  # exactly the stored values, as fp32
    items = list(Wr.items())

    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    n = variant["shards"]
    if n == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), items, st)
    else:
        per = (len(items) + n - 1) // n
        weight_map = {}
        total = 0
        for s in range(n):
            part = items[s * per:(s + 1) * per]
            fn = "model-%05d-of-%05d.safetensors" % (s + 1, n)
            total += write_safetensors(os.path.join(d, fn), part, st)
            for k, _ in part:
                weight_map[k] = fn
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")

    with torch.no_grad():
        logits = forward(cfg, Wr, TOKENS)
    T, V = logits.shape
    with open(os.path.join(d, "logits.f32"), "wb") as f:
        f.write(logits.contiguous().numpy().astype("<f4").tobytes())
    with open(os.path.join(d, "tokens.json"), "w") as f:
        json.dump({"tokens": TOKENS}, f)
        f.write("\n")
    am = logits.argmax(dim=-1).tolist()
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"n_tokens": T, "n_vocab": V, "logits_file": "logits.f32",
                   "logits_dtype": "float32 little-endian, row-major [n_tokens, n_vocab]",
                   "argmax_per_row": am, "last_argmax": am[-1],
                   "head_dim": dims(cfg)[3],
                   "rope_inv_freq": [float("%.9g" % x) for x in compute_inv_freq(cfg, dims(cfg)[3]).tolist()],
                   "safetensors_dtype": st}, f, indent=2)
        f.write("\n")
    return cfg, Wr, logits


def sensitivity(cfg, Wr, logits):
    """How far off plausible mistakes land (so a 1e-4 tolerance is meaningful)."""
    import copy
    out = {}
    # wrong pairing: interleaved RoPE applied to the HF (rotate-half) layout
    out["interleaved_rope"] = (forward(cfg, Wr, TOKENS, wrong_interleaved_rope=True) - logits).abs().max().item()
    c2 = copy.deepcopy(cfg)
    c2.pop("rope_scaling", None)
    c2.pop("rope_parameters", None)
    c2["rope_theta"] = rope_params_of(cfg)[0]
    out["no_rope_scaling"] = (forward(c2, Wr, TOKENS) - logits).abs().max().item()
    c3 = copy.deepcopy(cfg)
    c3["rms_norm_eps"] = 1e-5 if cfg.get("rms_norm_eps", 1e-6) != 1e-5 else 1e-6
    out["other_eps"] = (forward(c3, Wr, TOKENS) - logits).abs().max().item()
    W2 = dict(Wr)
    for k in W2:
        if "norm" in k:
            W2[k] = torch.ones_like(W2[k])
    out["unit_norms"] = (forward(cfg, W2, TOKENS) - logits).abs().max().item()
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests", "data", "hf-tiny")
    out_root = os.path.abspath(out_root)
    for v in VARIANTS:
        cfg, Wr, logits = build(v, out_root)
        with torch.no_grad():
            sens = sensitivity(cfg, Wr, logits)
        print("%-16s logits %s absmax %.4f last_argmax %d | max|dlogit| if wrong: %s" % (
            v["name"], tuple(logits.shape), logits.abs().max().item(), int(logits[-1].argmax()),
            ", ".join("%s %.2e" % kv for kv in sens.items())))


if __name__ == "__main__":
    main()
