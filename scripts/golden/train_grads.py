#!/usr/bin/python3
"""Golden forward/backward values for camelid's trainer: tiny random HF Llama models, a batch, and
PyTorch's float64 logits, loss and gradients of every parameter (or of LoRA A/B on a frozen base, as is or
with its decoder linears NF4-quantized with double quantization: QLoRA).

Written from scratch for camelid (no transformers / peft / safetensors packages): the model is plain torch
following transformers' LlamaForCausalLM math (eager attention, rotate-half RoPE, RMSNorm, SwiGLU, GQA by
repeating KV heads), the safetensors files are written by hand (FACTS 1.1).

Usage:  /usr/bin/python3 scripts/golden/train_grads.py [OUT_DIR]
        (default OUT_DIR: tests/data/train-grad at the repository root; see its README.md)

Requires Debian python3-torch (1.13 tested) and numpy. Deterministic: fixed seeds, 2 threads.

Precision: every weight is drawn, rounded to float32 (the values stored in model.safetensors), then widened
to float64; everything after that (RoPE angles and cos/sin included) is float64, so the goldens are the
exact math on exactly the inputs the C code reads, up to the final rounding of each output to float32.
Before writing, the generator proves its own numbers: autograd against central finite differences on
entries of every trainable tensor, its AdamW step against torch.optim.AdamW + clip_grad_norm_, and the
packed case against running each document alone.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nf4_golden  # noqa: E402  FACTS 4.2 (NF4 + double quantization), shared with test_nf4's goldens

torch.set_num_threads(2)
torch.set_default_dtype(torch.float64)

F64 = torch.float64
IGNORE = -100
LINEARS = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
           ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj")]

# --------------------------------------------------------------------------------------------------------
# Configs and weights


def hf_config(V, H, nh, nkv, I, L, tied):
    """config.json for LlamaForCausalLM with every field FACTS 1.2 names."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": V,
        "hidden_size": H,
        "intermediate_size": I,
        "num_hidden_layers": L,
        "num_attention_heads": nh,
        "num_key_value_heads": nkv,
        "head_dim": H // nh,
        "hidden_act": "silu",
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "initializer_range": 0.1,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def dims(cfg):
    nh = cfg["num_attention_heads"]
    return cfg["hidden_size"], nh, cfg["num_key_value_heads"], cfg["head_dim"]


def f32_round(t):
    return t.to(torch.float32).to(F64)


def make_weights(cfg, seed):
    """HF-named weights: matrices N(0, 0.1^2), norms 1 + 0.1 N(0, 1); float32-rounded, held as float64."""
    H, nh, nkv, hd = dims(cfg)
    I, V = cfg["intermediate_size"], cfg["vocab_size"]
    gen = torch.Generator().manual_seed(seed)

    def mat(rows, cols):
        return f32_round(torch.randn(rows, cols, generator=gen, dtype=torch.float32) * 0.1)

    def norm(n):
        return f32_round(1.0 + torch.randn(n, generator=gen, dtype=torch.float32) * 0.1)

    W = {"model.embed_tokens.weight": mat(V, H)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        W[p + "input_layernorm.weight"] = norm(H)
        W[p + "self_attn.q_proj.weight"] = mat(nh * hd, H)
        W[p + "self_attn.k_proj.weight"] = mat(nkv * hd, H)
        W[p + "self_attn.v_proj.weight"] = mat(nkv * hd, H)
        W[p + "self_attn.o_proj.weight"] = mat(H, nh * hd)
        W[p + "post_attention_layernorm.weight"] = norm(H)
        W[p + "mlp.gate_proj.weight"] = mat(I, H)
        W[p + "mlp.up_proj.weight"] = mat(I, H)
        W[p + "mlp.down_proj.weight"] = mat(H, I)
    W["model.norm.weight"] = norm(H)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = mat(V, H)
    return W


def linear_shape(cfg, mod):
    """(out, in) of one of the seven linears."""
    H, nh, nkv, hd = dims(cfg)
    I = cfg["intermediate_size"]
    return {"q_proj": (nh * hd, H), "k_proj": (nkv * hd, H), "v_proj": (nkv * hd, H), "o_proj": (H, nh * hd),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}[mod]


def nf4_base(cfg, W):
    """QLoRA's frozen base: every decoder linear (the seven of every layer; not the embedding, the norms or
    the head) replaced by its NF4 double-quant dequantization as bitsandbytes computes it (FACTS 4.2), by
    nf4_golden.py from the float32 weight: blocks of 64 over the flattened row-major [out, in] weight, codes
    nearest with midpoint ties to the lower code, absmax double-quantized (mean offset, blocks of 256 over the
    signed dynamic map), dequantized code * absmax in float32. Returns the new weights (float64 holding those
    float32 values) and, per linear, the packed codes and the dequantized block scales."""
    dmap = nf4_golden.dynamic_map()
    Q, parts = dict(W), {}
    for l in range(cfg["num_hidden_layers"]):
        for parent, mod in LINEARS:
            name = "model.layers.%d.%s.%s.weight" % (l, parent, mod)
            w = W[name].to(torch.float32).numpy()
            packed, absmax = nf4_golden.nf4_quant(w)
            _, _, _, absmax_dq = nf4_golden.double_quant(absmax, dmap)
            deq = nf4_golden.dequant(packed, absmax_dq, w.size).reshape(w.shape)
            Q[name] = torch.from_numpy(deq).to(F64)
            parts[name] = (torch.from_numpy(packed.copy()), torch.from_numpy(absmax_dq.copy()))
    return Q, parts


def peft_key(l, parent, mod, ab):
    return "base_model.model.model.layers.%d.%s.%s.lora_%s.weight" % (l, parent, mod, ab)


def make_lora(cfg, seed, r):
    """PEFT-named LoRA weights on all seven linears: A ~ N(0, 0.2^2), B ~ N(0, 0.05^2), both nonzero (an
    adapter mid-training, so dA and dB are both nonzero), float32-rounded."""
    gen = torch.Generator().manual_seed(seed)
    P = {}
    for l in range(cfg["num_hidden_layers"]):
        for parent, mod in LINEARS:
            out_f, in_f = linear_shape(cfg, mod)
            P[peft_key(l, parent, mod, "A")] = f32_round(torch.randn(r, in_f, generator=gen, dtype=torch.float32) * 0.2)
            P[peft_key(l, parent, mod, "B")] = f32_round(torch.randn(out_f, r, generator=gen, dtype=torch.float32) * 0.05)
    return P


# --------------------------------------------------------------------------------------------------------
# The model (transformers LlamaForCausalLM math, float64)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(cfg, positions):
    """cos/sin [B, 1, T, hd] for the rotate-half layout: inv_freq[i] = theta^(-2i/hd), emb = cat(f, f)."""
    hd = cfg["head_dim"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=F64) / hd))
    ang = positions.to(F64)[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat((ang, ang), dim=-1)[:, None]
    return emb.cos(), emb.sin()


def forward(cfg, W, tokens, positions, doc_ids=None, lora=None, lora_scale=0.0, cross_docs=False):
    """Logits [B, T, V]. A query attends to keys at or before it in its row and, when doc_ids is given,
    in its own document only (unless cross_docs, used only to show the golden is sensitive to it)."""
    H, nh, nkv, hd = dims(cfg)
    eps = cfg["rms_norm_eps"]
    B, T = tokens.shape
    g = nh // nkv
    cos, sin = rope_cos_sin(cfg, positions)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None].expand(B, T, T)
    if doc_ids is not None and not cross_docs:
        allowed = allowed & (doc_ids[:, :, None] == doc_ids[:, None, :])
    allowed = allowed[:, None]  # [B, 1, T, T]

    def lin(h, l, parent, mod):
        y = h @ W["model.layers.%d.%s.%s.weight" % (l, parent, mod)].T
        if lora is not None:
            A, Bm = lora[peft_key(l, parent, mod, "A")], lora[peft_key(l, parent, mod, "B")]
            y = y + ((h @ A.T) @ Bm.T) * lora_scale
        return y

    x = W["model.embed_tokens.weight"][tokens]  # [B, T, H]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # float32 only for the precision estimate
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = lin(h, l, "self_attn", "q_proj").view(B, T, nh, hd).transpose(1, 2)
        k = lin(h, l, "self_attn", "k_proj").view(B, T, nkv, hd).transpose(1, 2)
        v = lin(h, l, "self_attn", "v_proj").view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(g, dim=1)  # KV head j serves query heads j*g .. j*g+g-1
        v = v.repeat_interleave(g, dim=1)
        att = (q @ k.transpose(2, 3)) / math.sqrt(hd)
        att = torch.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + lin(o, l, "self_attn", "o_proj")
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(torch.nn.functional.silu(lin(h, l, "mlp", "gate_proj")) * lin(h, l, "mlp", "up_proj"),
                    l, "mlp", "down_proj")
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T


def ce_loss(logits, targets):
    """Mean cross-entropy over the targets that are not -100 (transformers' loss, already shifted)."""
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(),
                                             ignore_index=IGNORE, reduction="mean")


# --------------------------------------------------------------------------------------------------------
# Batches


def stream(gen, B, T, V):
    """B rows of T+1 random tokens: inputs are [:, :T], next-token targets [:, 1:] (llm.c's B*T+1)."""
    return torch.randint(0, V, (B, T + 1), generator=gen)


def plain_batch(V, B, T, seed):
    s = stream(torch.Generator().manual_seed(seed), B, T, V)
    pos = torch.arange(T).expand(B, T).clone()
    return {"tokens": s[:, :T].clone(), "targets": s[:, 1:].clone(), "positions": pos}


def masked_batch(V, B, T, seed):
    """A third of the targets ignored (-100), spread over both rows."""
    gen = torch.Generator().manual_seed(seed)
    b = plain_batch(V, B, T, seed)
    n = B * T
    drop = torch.randperm(n, generator=gen)[: n // 3]
    t = b["targets"].reshape(-1).clone()
    t[drop] = IGNORE
    b["targets"] = t.view(B, T)
    return b


# Per row, the document lengths over the T+1 stream. Row 0: two documents, the last target stays inside
# the second. Row 1: three documents inside the T inputs, and the (T+1)-th token starts a fourth, so the
# last target is ignored too.
PACKED_DOCS = [[4, 6], [3, 2, 4, 1]]


def packed_batch(V, B, T, seed):
    """SFT-style packing: several documents per row, positions restart at 0 in each, attention stays inside
    a document, and a target that is the first token of the next document is ignored (-100)."""
    assert len(PACKED_DOCS) == B and all(sum(d) == T + 1 for d in PACKED_DOCS)
    s = stream(torch.Generator().manual_seed(seed), B, T, V)
    doc = torch.tensor([[i for i, n in enumerate(row) for _ in range(n)] for row in PACKED_DOCS])  # [B, T+1]
    pos = torch.tensor([[j for n in row for j in range(n)] for row in PACKED_DOCS])
    targets = s[:, 1:].clone()
    targets[doc[:, 1:] != doc[:, :T]] = IGNORE
    return {"tokens": s[:, :T].clone(), "targets": targets, "positions": pos[:, :T].clone(),
            "doc_ids": doc[:, :T].clone()}


# --------------------------------------------------------------------------------------------------------
# safetensors, written by hand (FACTS 1.1)

ST_DTYPE = {torch.float32: ("F32", "<f4"), torch.int32: ("I32", "<i4"), torch.uint8: ("U8", "<u1")}


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor) in file order; F32, I32 or U8. Header padded to 8 with spaces, tensors
    contiguous from offset 0 in header order."""
    header = {"__metadata__": dict({"format": "pt"}, **(metadata or {}))}
    blobs, off = [], 0
    for name, t in tensors:
        st, np_dt = ST_DTYPE[t.dtype]
        b = t.contiguous().numpy().astype(np_dt).tobytes()
        header[name] = {"dtype": st, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def f32(t):
    return t.detach().to(torch.float32)


def i32(t):
    return t.to(torch.int32)


# --------------------------------------------------------------------------------------------------------
# Self-checks


def check_finite_differences(name, loss_of, params, grads, seed, per_tensor=2, h=1e-5):
    """Central differences on the entry with the largest |grad| and on random entries of every trainable
    tensor must match autograd. Returns the worst relative error (against max(|g|, 1e-3))."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for pname, p in params.items():
            g = grads[pname].reshape(-1)
            flat = p.view(-1)
            picks = [int(g.abs().argmax())] + torch.randint(0, flat.numel(), (per_tensor,), generator=gen).tolist()
            for i in picks:
                old = flat[i].item()
                flat[i] = old + h
                up = loss_of().item()
                flat[i] = old - h
                down = loss_of().item()
                flat[i] = old
                fd = (up - down) / (2 * h)
                err = abs(fd - g[i].item()) / max(abs(g[i].item()), 1e-3)
                worst = max(worst, err)
                assert err < 1e-5, "%s: %s[%d] autograd %.12g vs finite difference %.12g" % (
                    name, pname, i, g[i].item(), fd)
    return worst


# --------------------------------------------------------------------------------------------------------
# AdamW (torch.optim.AdamW semantics) with global-norm clipping, written out so the convention is explicit

ADAMW = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1, "max_norm": 1.0,
         "clip_eps": 1e-6, "steps": 10}


def decays(name, t):
    return t.dim() == 2


def adamw_run(cfg, W0, batch):
    """10 steps on the same batch. Step k (1-based): loss and grads at the current parameters (that loss is
    recorded), clip, then update. Returns (losses, grad norms before clipping, clip factors, final loss)."""
    W = {k: v.clone() for k, v in W0.items()}
    m = {k: torch.zeros_like(v) for k, v in W.items()}
    v2 = {k: torch.zeros_like(v) for k, v in W.items()}
    a = ADAMW
    losses, norms, coefs = [], [], []
    for step in range(1, a["steps"] + 1):
        P = {k: t.clone().requires_grad_(True) for k, t in W.items()}
        loss = ce_loss(forward(cfg, P, batch["tokens"], batch["positions"]), batch["targets"])
        loss.backward()
        G = {k: P[k].grad for k in W}
        total = math.sqrt(sum(float((g * g).sum()) for g in G.values()))
        coef = min(1.0, a["max_norm"] / (total + a["clip_eps"]))
        losses.append(loss.item())
        norms.append(total)
        coefs.append(coef)
        bc1 = 1.0 - a["beta1"] ** step
        bc2 = 1.0 - a["beta2"] ** step
        for k in W:
            g = G[k] * coef
            m[k] = a["beta1"] * m[k] + (1 - a["beta1"]) * g
            v2[k] = a["beta2"] * v2[k] + (1 - a["beta2"]) * g * g
            upd = (m[k] / bc1) / ((v2[k] / bc2).sqrt() + a["eps"])
            wd = a["weight_decay"] if decays(k, W[k]) else 0.0
            W[k] = W[k] - a["lr"] * (upd + wd * W[k])
    with torch.no_grad():
        final = ce_loss(forward(cfg, W, batch["tokens"], batch["positions"]), batch["targets"]).item()
    return losses, norms, coefs, final, W


def adamw_torch(cfg, W0, batch):
    """The same run with torch.optim.AdamW and torch.nn.utils.clip_grad_norm_, to prove adamw_run."""
    P = {k: v.clone().requires_grad_(True) for k, v in W0.items()}
    a = ADAMW
    opt = torch.optim.AdamW(
        [{"params": [p for k, p in P.items() if decays(k, p)], "weight_decay": a["weight_decay"]},
         {"params": [p for k, p in P.items() if not decays(k, p)], "weight_decay": 0.0}],
        lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"])
    losses = []
    for _ in range(a["steps"]):
        opt.zero_grad()
        loss = ce_loss(forward(cfg, P, batch["tokens"], batch["positions"]), batch["targets"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), a["max_norm"])
        opt.step()
        losses.append(loss.item())
    return losses, {k: p.detach() for k, p in P.items()}


# --------------------------------------------------------------------------------------------------------
# Cases

V, H, NH, HD, I, B, T = 67, 32, 4, 8, 48, 2, 9
GQA = hf_config(V, H, NH, 2, I, 2, tied=False)
LORA_R, LORA_ALPHA = 4, 8

CASES = [
    # name, config, weight seed, batch maker, batch seed, model shared with (symlink), lora
    {"name": "gqa_untied", "cfg": GQA, "seed": 11, "batch": plain_batch, "bseed": 21},
    {"name": "gqa_tied", "cfg": hf_config(V, H, NH, 1, I, 3, tied=True), "seed": 12, "batch": plain_batch,
     "bseed": 22},
    {"name": "mha_untied", "cfg": hf_config(V, H, NH, NH, I, 2, tied=False), "seed": 13, "batch": plain_batch,
     "bseed": 23},
    {"name": "masked", "cfg": GQA, "seed": 11, "batch": masked_batch, "bseed": 24, "model_of": "gqa_untied"},
    {"name": "packed", "cfg": GQA, "seed": 11, "batch": packed_batch, "bseed": 25, "model_of": "gqa_untied"},
    {"name": "lora", "cfg": GQA, "seed": 11, "batch": plain_batch, "bseed": 26, "model_of": "gqa_untied",
     "lora_seed": 31},
    # lora's base, batch and adapter, the base's decoder linears through NF4 + double quantization
    {"name": "qlora", "cfg": GQA, "seed": 11, "batch": plain_batch, "bseed": 26, "model_of": "gqa_untied",
     "lora_seed": 31, "nf4": True, "adapter_of": "lora"},
]

# The one linear whose dequantized weight the qlora golden stores as F32 (every linear's codes and scales are
# stored too).
NF4_DEQUANT_SHOWN = "model.layers.0.self_attn.q_proj.weight"


def adapter_config():
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": "../model",
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": LORA_R,
        "rank_pattern": {},
        "revision": None,
        "target_modules": [mod for _, mod in LINEARS],
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def write_model(d, cfg, W):
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "config.json"), cfg)
    write_safetensors(os.path.join(d, "model.safetensors"), [(k, f32(W[k])) for k in sorted(W)])


def link_model(d, other, what="model"):
    """The case uses the same base (or adapter) as `other`: model/ is a relative symlink to it (saves ~80 KB
    each)."""
    link = os.path.join(d, what)
    target = os.path.join("..", other, what)
    if os.path.islink(link) and os.readlink(link) == target:
        return
    if os.path.islink(link):
        os.remove(link)
    assert not os.path.exists(link), "%s exists and is not a symlink" % link
    os.symlink(target, link)


def build(case, out_root):
    name, cfg = case["name"], case["cfg"]
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    W = make_weights(cfg, case["seed"])
    if "model_of" in case:
        other = next(c for c in CASES if c["name"] == case["model_of"])
        assert other["cfg"] == cfg and other["seed"] == case["seed"], "%s: not the weights of %s" % (name, other)
        link_model(d, case["model_of"])
    else:
        write_model(os.path.join(d, "model"), cfg, W)
    b = case["batch"](cfg["vocab_size"], B, T, case["bseed"])
    doc = b.get("doc_ids")

    lora, scale, nf4_parts = None, 0.0, None
    if "lora_seed" in case:
        lora = make_lora(cfg, case["lora_seed"], LORA_R)
        scale = LORA_ALPHA / LORA_R
        train = {k: v.clone().requires_grad_(True) for k, v in lora.items()}
        frozen = W
        if case.get("nf4"):
            frozen, nf4_parts = nf4_base(cfg, W)
    else:
        train = {k: v.clone().requires_grad_(True) for k, v in W.items()}
        frozen = None

    def run(cross_docs=False):
        weights = frozen if lora is not None else train
        return forward(cfg, weights, b["tokens"], b["positions"], doc, lora=train if lora is not None else None,
                       lora_scale=scale, cross_docs=cross_docs)

    logits = run()
    loss = ce_loss(logits, b["targets"])
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in train.items()}
    for k, g in grads.items():
        assert torch.isfinite(g).all() and g.abs().max() > 0, "%s: gradient of %s is zero" % (name, k)

    fd = check_finite_differences(name, lambda: ce_loss(run(), b["targets"]), train, grads, case["bseed"])

    notes = {}
    # what float32 arithmetic costs: gradients of the same model computed in float32 (worst tensor, relative
    # to that tensor's largest |grad|), a scale for a float32 trainer's tolerance
    t32 = {k: f32(v).requires_grad_(True) for k, v in train.items()}
    w32 = {k: f32(v) for k, v in (frozen if lora is not None else W).items()}
    logits32 = forward(cfg, w32 if lora is not None else t32, b["tokens"], b["positions"], doc,
                       lora=t32 if lora is not None else None, lora_scale=scale)
    ce_loss(logits32, b["targets"]).backward()
    notes["float32 grads rel dev"] = max(float((t32[k].grad - grads[k]).abs().max() / grads[k].abs().max())
                                         for k in grads)
    notes["float32 logits dev"] = float((logits32.detach() - logits).abs().max())
    with torch.no_grad():
        if doc is not None:
            # each document alone, at positions 0.., gives the same logits: the packing is exact
            for row in range(B):
                for di in doc[row].unique().tolist():
                    sel = (doc[row] == di).nonzero().view(-1)
                    alone = forward(cfg, W, b["tokens"][row:row + 1, sel],
                                    torch.arange(len(sel)).view(1, -1))
                    assert (alone[0] - logits[row, sel]).abs().max() < 1e-12
            notes["max|dlogit| if attention crosses documents"] = float((run(cross_docs=True) - logits).abs().max())
        if lora is not None:
            base = forward(cfg, frozen, b["tokens"], b["positions"])
            notes["max|dlogit| of the adapter"] = float((base - logits).abs().max())
        if nf4_parts is not None:
            # how far NF4 moves things from the float32 base (the golden is not passed by ignoring the
            # quantization): logits, and each LoRA gradient relative to its largest |grad|
            names = [n for n in W if n in nf4_parts]
            rms = math.sqrt(sum(float(((frozen[n] - W[n]) ** 2).sum()) for n in names) /
                            sum(float((W[n] ** 2).sum()) for n in names))
            notes["NF4 weight rel RMS error"] = rms
            notes["max|dlogit| vs the float32 base"] = float((forward(cfg, W, b["tokens"], b["positions"], lora=lora,
                                                                      lora_scale=scale) - logits).abs().max())
    if nf4_parts is not None:
        t64 = {k: v.clone().requires_grad_(True) for k, v in lora.items()}
        ce_loss(forward(cfg, W, b["tokens"], b["positions"], lora=t64, lora_scale=scale), b["targets"]).backward()
        notes["min over tensors of grad rel dev vs the float32 base"] = min(
            float((t64[k].grad - grads[k]).abs().max() / grads[k].abs().max()) for k in grads)

    kept = int((b["targets"] != IGNORE).sum())
    meta = {"case": name, "loss_f64": repr(loss.item()), "n_targets": str(kept),
            "torch": torch.__version__, "generator": "scripts/golden/train_grads.py"}
    tensors = [("tokens", i32(b["tokens"])), ("targets", i32(b["targets"])), ("positions", i32(b["positions"]))]
    if doc is not None:
        tensors.append(("doc_ids", i32(doc)))
    tensors += [("logits", f32(logits)), ("loss", f32(loss).view(1))]
    tensors += [("grad." + k, f32(grads[k])) for k in sorted(grads)]
    if nf4_parts is not None:
        tensors.append(("dequant." + NF4_DEQUANT_SHOWN, f32(frozen[NF4_DEQUANT_SHOWN])))
        for k in sorted(nf4_parts):
            tensors += [("nf4.%s.packed" % k, nf4_parts[k][0]), ("nf4.%s.absmax" % k, nf4_parts[k][1])]
    write_safetensors(os.path.join(d, "golden.safetensors"), tensors, meta)

    if "adapter_of" in case:
        other = next(c for c in CASES if c["name"] == case["adapter_of"])
        assert other.get("lora_seed") == case["lora_seed"], "%s: not the adapter of %s" % (name, other["name"])
        link_model(d, case["adapter_of"], "adapter")
    elif lora is not None:
        ad = os.path.join(d, "adapter")
        os.makedirs(ad, exist_ok=True)
        write_json(os.path.join(ad, "adapter_config.json"), adapter_config())
        write_safetensors(os.path.join(ad, "adapter_model.safetensors"), [(k, f32(lora[k])) for k in sorted(lora)])

    gn = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    print("%-10s loss %.6f (%d targets), |logits| max %.3f, grad norm %.4f, worst FD rel err %.1e%s" % (
        name, loss.item(), kept, float(logits.abs().max()), gn, fd,
        "".join(", %s %.3g" % kv for kv in notes.items())))

    if name == "gqa_untied":
        losses, norms, coefs, final, Wmine = adamw_run(cfg, W, b)
        tlosses, Wtorch = adamw_torch(cfg, W, b)
        # what float32 arithmetic costs: the same 10 steps with float32 parameters, states and math
        f32losses, _, _, f32final, _ = adamw_run(cfg, {k: f32(v) for k, v in W.items()}, b)
        f32dev = max(abs(x - y) for x, y in zip(losses + [final], f32losses + [f32final]))
        assert max(abs(x - y) for x, y in zip(losses, tlosses)) < 1e-12, (losses, tlosses)
        assert max(float((Wmine[k] - Wtorch[k]).abs().max()) for k in W) < 1e-12
        assert abs(losses[0] - loss.item()) < 1e-12
        write_json(os.path.join(d, "adamw.json"), adamw_doc(W, losses, norms, coefs, final, f32dev))
        print("           AdamW losses %s -> %.6f; grad norms %.3f..%.3f, clipped in %d of %d steps; "
              "an all-float32 run's losses differ by %.1e" % (
                  " ".join("%.4f" % x for x in losses), final, min(norms), max(norms),
                  sum(c < 1.0 for c in coefs), len(coefs), f32dev))


def adamw_doc(W, losses, norms, coefs, final, f32dev):
    a = ADAMW
    return {
        "case": "gqa_untied",
        "what": "10 AdamW steps on golden.safetensors' batch (the same batch every step), from model/'s weights",
        "semantics": "torch.optim.AdamW (decoupled weight decay, bias-corrected) after "
                     "torch.nn.utils.clip_grad_norm_; checked against both inside the generator",
        "lr": a["lr"],
        "beta1": a["beta1"],
        "beta2": a["beta2"],
        "eps": a["eps"],
        "weight_decay": a["weight_decay"],
        "weight_decay_applies_to": "2-D tensors only: every *_proj.weight, model.embed_tokens.weight, "
                                   "lm_head.weight; never the 1-D RMSNorm weights",
        "decay_tensors": sorted(k for k in W if decays(k, W[k])),
        "no_decay_tensors": sorted(k for k in W if not decays(k, W[k])),
        "max_grad_norm": a["max_norm"],
        "clip": "total = sqrt(sum of g^2 over every gradient entry of every parameter); "
                "c = min(1, max_grad_norm / (total + 1e-6)); every g *= c",
        "update": "t = step (1-based); m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g^2; "
                  "m_hat = m/(1-beta1^t); v_hat = v/(1-beta2^t); "
                  "p -= lr * (m_hat/(sqrt(v_hat)+eps) + wd*p), wd = weight_decay for decay tensors else 0 "
                  "(the p in wd*p is the value before this step); m, v start at 0",
        "lr_schedule": "constant",
        "precision": "float64 throughout; parameters start at model/'s float32 values and are not rounded "
                     "between steps",
        "losses": [float(repr_round(x)) for x in losses],
        "losses_note": "losses[k] = loss at the start of step k+1, before its update (losses[0] = golden loss)",
        "grad_norms": [float(repr_round(x)) for x in norms],
        "grad_norms_note": "global L2 norm of the gradients before clipping, per step",
        "clip_factors": [float(repr_round(x)) for x in coefs],
        "loss_after": float(repr_round(final)),
        "loss_after_note": "loss after the 10th update",
        "float32_run_max_loss_diff": float("%.3g" % f32dev),
        "float32_run_note": "max |loss difference| (over losses and loss_after) of the same run done in float32 "
                            "with torch: a scale for the tolerance a float32 trainer needs",
    }


def repr_round(x):
    return "%.12g" % x


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests", "data", "train-grad")
    out_root = os.path.abspath(out_root)
    os.makedirs(out_root, exist_ok=True)
    for case in CASES:  # gqa_untied first: the others link to its model
        build(case, out_root)


if __name__ == "__main__":
    main()
