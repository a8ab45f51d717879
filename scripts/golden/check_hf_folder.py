#!/usr/bin/python3
"""Independent checker for Hugging Face Llama folders (as written by `camelid convert --to hf`).

Written from scratch in plain Python + torch (+ sentencepiece for the tokenizer); no code from
transformers/safetensors. It checks that a folder is what transformers' LlamaForCausalLM +
LlamaTokenizer expect:

 1. model.safetensors (or shards + model.safetensors.index.json) parsed strictly like the reference
    safetensors loader: u64 LE header length, UTF-8 JSON object starting with '{', no duplicate keys,
    `__metadata__` str->str with "format": "pt", header length a multiple of 8 (writer convention),
    known dtypes, shape x dtype size == byte range, tensors tiling the data section contiguously in
    header order with no gap / overlap / trailing byte.
 2. config.json: every field LlamaConfig needs with the right JSON type, and the tensor-name set is
    exactly LlamaForCausalLM's state dict for that config, with the right shapes.
 3. A plain-torch HF Llama forward (rotate-half RoPE, GQA, fp32 RMSNorm then weight, SwiGLU), all in
    fp32 from the stored weights, compared against reference logits.
 4. If tokenizer.model is present: a from-scratch protobuf decode of the SentencePiece ModelProto
    (trainer/normalizer spec and piece types), sentencepiece encode of the prompt, special ids, and
    tokenizer_config.json / special_tokens_map.json.

Usage:
  /usr/bin/python3 scripts/golden/check_hf_folder.py FOLDER [--tokens tokens.json] [--logits logits.f32]
        [--tol 1e-4] [--prompt TEXT] [--require-tokenizer] [--ref-tokenizer tok512.bin]

Defaults compare against stories260K (tokens [1, 403, ...], reference/logits_prompt.f32, 13 x 512).
Exit status 0 = no ERROR, 1 = at least one ERROR.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

torch.set_num_threads(2)

DEFAULT_TOKENS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421]
DEFAULT_PROMPT = "Once upon a time, there was a little girl"
DEFAULT_LOGITS = "/work/shared/data/models/stories260K/reference/logits_prompt.f32"

# safetensors dtypes and their sizes in bytes (reference list)
DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
              "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
TORCH_DTYPE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CONFIG_DTYPE_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

errors = []
warnings = []


def err(msg):
    errors.append(msg)
    print("ERROR: " + msg)


def warn(msg):
    warnings.append(msg)
    print("WARN:  " + msg)


def info(msg):
    print("       " + msg)


def _no_dupes(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def _bad_const(name):
    raise ValueError("non-JSON constant %s" % name)


def strict_json(text):
    return json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_bad_const)


def load_json_file(path, what):
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return strict_json(raw.decode("utf-8"))
    except Exception as e:  # noqa: BLE001
        err("%s: cannot parse %s: %s" % (what, path, e))
        return None


# ---------------------------------------------------------------------------------------------
# 1. safetensors
# ---------------------------------------------------------------------------------------------

def parse_safetensors(path):
    """Returns (ordered list of (name, info)), data bytes) or None. Records errors."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        err("%s: file shorter than 8 bytes" % name)
        return None
    (n,) = struct.unpack("<Q", buf[:8])
    info("%s: %d bytes, header length %d" % (name, len(buf), n))
    if n > 100_000_000:
        err("%s: header length %d > 100 MB (reference HeaderTooLarge)" % (name, n))
        return None
    if 8 + n > len(buf):
        err("%s: 8 + header length %d > file size %d" % (name, n, len(buf)))
        return None
    if n % 8 != 0:
        err("%s: header length %d is not a multiple of 8" % (name, n))
    hbytes = buf[8:8 + n]
    try:
        htext = hbytes.decode("utf-8")
    except UnicodeDecodeError as e:
        err("%s: header is not UTF-8: %s" % (name, e))
        return None
    if not htext.startswith("{"):
        err("%s: header does not start with '{' (reference InvalidHeaderStart)" % name)
    stripped = htext.rstrip(" ")
    if stripped != htext.rstrip():
        err("%s: header has trailing non-space whitespace/padding" % name)
    if "\x00" in htext:
        err("%s: header contains NUL bytes (pad with spaces, not NULs)" % name)
    try:
        header = json.loads(htext, object_pairs_hook=lambda p: p, parse_constant=_bad_const)
    except Exception as e:  # noqa: BLE001
        err("%s: header JSON invalid: %s" % (name, e))
        return None
    if not isinstance(header, list):
        err("%s: header is not a JSON object" % name)
        return None
    seen = set()
    meta = None
    tensors = []
    for key, val in header:
        if key in seen:
            err("%s: duplicate header key %r" % (name, key))
        seen.add(key)
        if key == "__metadata__":
            meta = val
            continue
        tensors.append((key, val))
    # metadata
    if meta is None:
        err("%s: no __metadata__ (transformers wants {\"format\": \"pt\"})" % name)
    else:
        if not isinstance(meta, list):
            err("%s: __metadata__ is not an object" % name)
        else:
            md = {}
            for k, v in meta:
                if not isinstance(v, str):
                    err("%s: __metadata__[%r] is %s, must be a string" % (name, k, type(v).__name__))
                md[k] = v
            if md.get("format") != "pt":
                err("%s: __metadata__ format is %r, expected 'pt'" % (name, md.get("format")))
            info("%s: __metadata__ = %s" % (name, json.dumps(md)))
    data_start = 8 + n
    data_len = len(buf) - data_start
    out = []
    pos = 0
    for tname, tinfo in tensors:
        if not isinstance(tinfo, list):
            err("%s: tensor %s entry is not an object" % (name, tname))
            continue
        d = dict(tinfo)
        extra = set(d) - {"dtype", "shape", "data_offsets"}
        if extra:
            warn("%s: tensor %s has extra keys %s" % (name, tname, sorted(extra)))
        dt, shape, offs = d.get("dtype"), d.get("shape"), d.get("data_offsets")
        if dt not in DTYPE_SIZE:
            err("%s: tensor %s has unknown dtype %r" % (name, tname, dt))
            continue
        if (not isinstance(shape, list) or
                not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            err("%s: tensor %s shape %r is not a list of non-negative ints" % (name, tname, shape))
            continue
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)):
            err("%s: tensor %s data_offsets %r invalid" % (name, tname, offs))
            continue
        b, e = offs
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * DTYPE_SIZE[dt]
        if b != pos:
            err("%s: tensor %s begins at %d, expected %d (gap/overlap or not in header order)" %
                (name, tname, b, pos))
        if e < b:
            err("%s: tensor %s end %d < begin %d" % (name, tname, e, b))
            continue
        if e - b != nbytes:
            err("%s: tensor %s byte range %d != %s x %s = %d bytes" % (name, tname, e - b, shape, dt, nbytes))
        if e > data_len:
            err("%s: tensor %s end %d beyond data section %d" % (name, tname, e, data_len))
            continue
        pos = e
        out.append((tname, {"dtype": dt, "shape": shape, "begin": b, "end": e}))
    if pos != data_len:
        err("%s: tensors end at %d but data section has %d bytes (trailing bytes / incomplete)" %
            (name, pos, data_len))
    # Also the reference's own order-independent check (sort by begin): no overlap
    srt = sorted(out, key=lambda t: t[1]["begin"])
    for (a, ia), (b_, ib) in zip(srt, srt[1:]):
        if ib["begin"] < ia["end"]:
            err("%s: tensors %s and %s overlap" % (name, a, b_))
    return out, buf[data_start:]


def tensor_from(tinfo, data):
    dt = tinfo["dtype"]
    if dt not in TORCH_DTYPE:
        raise ValueError("unsupported dtype for forward: %s" % dt)
    raw = bytearray(data[tinfo["begin"]:tinfo["end"]])
    if len(raw) == 0:
        return torch.zeros(tinfo["shape"], dtype=TORCH_DTYPE[dt])
    t = torch.frombuffer(raw, dtype=TORCH_DTYPE[dt]).reshape(tinfo["shape"])
    return t


def load_weights(folder):
    """Returns dict name -> (info, tensor) and the set of dtypes."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    files = []
    if os.path.exists(index):
        idx = load_json_file(index, "index")
        if idx is None:
            return None
        wm = idx.get("weight_map")
        if not isinstance(wm, dict):
            err("index: no weight_map object")
            return None
        files = sorted(set(wm.values()))
        if os.path.exists(single):
            warn("both model.safetensors and an index exist")
    elif os.path.exists(single):
        files = ["model.safetensors"]
        wm = None
    else:
        err("no model.safetensors / model.safetensors.index.json in folder")
        return None
    weights = {}
    for fn in files:
        r = parse_safetensors(os.path.join(folder, fn))
        if r is None:
            continue
        lst, data = r
        for tname, tinfo in lst:
            if tname in weights:
                err("tensor %s present in more than one shard" % tname)
            if wm is not None and wm.get(tname) != fn:
                err("index weight_map[%s] = %r but tensor is in %s" % (tname, wm.get(tname), fn))
            try:
                weights[tname] = (tinfo, tensor_from(tinfo, data))
            except Exception as e:  # noqa: BLE001
                err("tensor %s: %s" % (tname, e))
    if wm is not None:
        for k in wm:
            if k not in weights:
                err("index names %s but no shard has it" % k)
    return weights


# ---------------------------------------------------------------------------------------------
# 2. config.json + state-dict names/shapes
# ---------------------------------------------------------------------------------------------

def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and
            (not isinstance(v, float) or math.isfinite(v)))


def check_config(cfg):
    def need(key, pred, desc, required=True):
        if key not in cfg:
            if required:
                err("config.json: missing %s (%s)" % (key, desc))
            return False
        if not pred(cfg[key]):
            err("config.json: %s = %r has wrong type/value (want %s)" % (key, cfg[key], desc))
            return False
        return True

    need("architectures", lambda v: v == ["LlamaForCausalLM"], '["LlamaForCausalLM"]')
    need("model_type", lambda v: v == "llama", '"llama"')
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "max_position_embeddings"):
        need(k, lambda v: is_int(v) and v > 0, "positive integer")
    need("rms_norm_eps", lambda v: is_num(v) and v > 0, "positive number")
    has_v5 = "rope_parameters" in cfg
    if has_v5:
        need("rope_parameters", lambda v: isinstance(v, dict), "object")
    else:
        need("rope_theta", lambda v: is_num(v) and v > 0, "positive number")
        need("rope_scaling", lambda v: v is None or isinstance(v, dict), "null or object")
        rs = cfg.get("rope_scaling")
        if isinstance(rs, dict):
            rt = rs.get("rope_type", rs.get("type"))
            if rt not in ("default", "linear", "dynamic", "yarn", "longrope", "llama3"):
                err("config.json: rope_scaling type %r unknown" % rt)
    need("tie_word_embeddings", lambda v: isinstance(v, bool), "boolean")
    need("bos_token_id", lambda v: v is None or is_int(v), "integer")
    need("eos_token_id", lambda v: is_int(v) or (isinstance(v, list) and all(is_int(x) for x in v)),
         "integer or list of integers")
    need("pad_token_id", lambda v: v is None or is_int(v), "null or integer", required=False)
    need("hidden_act", lambda v: v == "silu", '"silu"')
    dt_key = "torch_dtype" if "torch_dtype" in cfg else ("dtype" if "dtype" in cfg else "torch_dtype")
    need(dt_key, lambda v: v in ("float32", "float16", "bfloat16"), '"float32"|"float16"|"bfloat16"')
    need("head_dim", lambda v: v is None or (is_int(v) and v > 0), "null or positive int", required=False)
    for k in ("attention_bias", "mlp_bias"):
        need(k, lambda v: v is False, "false (no biases written)", required=False)
    need("attention_dropout", lambda v: is_num(v), "number", required=False)
    need("pretraining_tp", lambda v: v == 1, "1", required=False)
    nh, nkv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if is_int(nh) and is_int(nkv) and nh % nkv != 0:
        err("config.json: num_attention_heads %d not a multiple of num_key_value_heads %d" % (nh, nkv))
    hs = cfg.get("hidden_size")
    if cfg.get("head_dim") is None and is_int(hs) and is_int(nh) and hs % nh != 0:
        err("config.json: hidden_size %d not divisible by heads %d and no head_dim" % (hs, nh))
    known = {"architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
             "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings",
             "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act", "torch_dtype", "dtype",
             "head_dim", "attention_bias", "mlp_bias", "attention_dropout", "pretraining_tp",
             "initializer_range", "use_cache", "transformers_version"}
    for k in cfg:
        if k not in known:
            info("config.json: extra key %s = %r (ignored by LlamaConfig, kept as attribute)" % (k, cfg[k]))


def expected_state_dict(cfg):
    H, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    V = cfg["vocab_size"]
    exp = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
    for i in range(L):
        p = "model.layers.%d." % i
        exp[p + "input_layernorm.weight"] = [H]
        exp[p + "post_attention_layernorm.weight"] = [H]
        exp[p + "self_attn.q_proj.weight"] = [nh * hd, H]
        exp[p + "self_attn.k_proj.weight"] = [nkv * hd, H]
        exp[p + "self_attn.v_proj.weight"] = [nkv * hd, H]
        exp[p + "self_attn.o_proj.weight"] = [H, nh * hd]
        exp[p + "mlp.gate_proj.weight"] = [I, H]
        exp[p + "mlp.up_proj.weight"] = [I, H]
        exp[p + "mlp.down_proj.weight"] = [H, I]
    if not cfg.get("tie_word_embeddings", False):
        exp["lm_head.weight"] = [V, H]
    return exp


def check_state_dict(cfg, weights):
    exp = expected_state_dict(cfg)
    got = set(weights)
    for k in sorted(set(exp) - got):
        err("tensor missing: %s %s" % (k, exp[k]))
    for k in sorted(got - set(exp)):
        if k == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            err("lm_head.weight present although tie_word_embeddings is true (unexpected key)")
        else:
            err("unexpected tensor: %s" % k)
    for k in sorted(got & set(exp)):
        if weights[k][0]["shape"] != exp[k]:
            err("tensor %s shape %s, expected %s" % (k, weights[k][0]["shape"], exp[k]))
    dtypes = sorted({w[0]["dtype"] for w in weights.values()})
    info("tensors: %d, dtypes %s" % (len(weights), dtypes))
    cdt = cfg.get("torch_dtype", cfg.get("dtype"))
    for d in dtypes:
        if CONFIG_DTYPE_NAME.get(d) != cdt:
            err("config torch_dtype %r but tensors stored as %s" % (cdt, d))
    if not cfg.get("tie_word_embeddings") and "lm_head.weight" in weights:
        if torch.equal(weights["lm_head.weight"][1], weights["model.embed_tokens.weight"][1]):
            info("note: untied lm_head.weight is identical to embed_tokens (a copy; fine for transformers)")


# ---------------------------------------------------------------------------------------------
# 3. forward
# ---------------------------------------------------------------------------------------------

def rope_inv_freq(cfg, hd):
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict):
        theta = rp.get("rope_theta", 10000.0)
        rs = rp
    else:
        theta = cfg.get("rope_theta", 10000.0)
        rs = cfg.get("rope_scaling") or {}
    inv = 1.0 / (float(theta) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rt = rs.get("rope_type", rs.get("type", "default"))
    if rt == "linear":
        inv = inv / rs["factor"]
    elif rt == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = torch.where(wl > lo_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        mid = ~(wl < hi_wl) & ~(wl > lo_wl)
        inv = torch.where(mid, smoothed, out)
    elif rt in ("default", "dynamic"):
        pass  # dynamic == default while seq_len <= max_position_embeddings
    else:
        raise ValueError("rope type %s not implemented in checker" % rt)
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rmsnorm(x, w, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)) * w


def forward(cfg, W, tokens):
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    eps = float(cfg["rms_norm_eps"])
    g = nh // nkv
    T = len(tokens)
    w = {k: v[1].float() for k, v in W.items()}
    x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
    inv = rope_inv_freq(cfg, hd)
    freqs = torch.outer(torch.arange(T, dtype=torch.int64).float(), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(L):
        p = "model.layers.%d." % i
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(g, dim=0)  # KV head j -> query heads j*g .. j*g+g-1
        v = v.repeat_interleave(g, dim=0)
        att = (q @ k.transpose(1, 2)) / math.sqrt(hd) + mask
        att = torch.softmax(att.float(), dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        m = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
        x = x + m @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


# ---------------------------------------------------------------------------------------------
# 4. tokenizer
# ---------------------------------------------------------------------------------------------

def pb_fields(buf):
    """Minimal protobuf wire-format decoder: yields (field_number, wire_type, value)."""
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        r, s = 0, 0
        while True:
            if i >= n:
                raise ValueError("truncated varint")
            b = buf[i]
            i += 1
            r |= (b & 0x7F) << s
            s += 7
            if not b & 0x80:
                return r
    while i < n:
        key = varint()
        fn, wt = key >> 3, key & 7
        if wt == 0:
            yield fn, wt, varint()
        elif wt == 1:
            yield fn, wt, buf[i:i + 8]
            i += 8
        elif wt == 2:
            ln = varint()
            if i + ln > n:
                raise ValueError("truncated length-delimited field")
            yield fn, wt, buf[i:i + ln]
            i += ln
        elif wt == 5:
            yield fn, wt, buf[i:i + 4]
            i += 4
        else:
            raise ValueError("unsupported wire type %d" % wt)


TRAINER_FIELDS = {3: "model_type", 4: "vocab_size", 35: "byte_fallback", 40: "unk_id", 41: "bos_id",
                  42: "eos_id", 43: "pad_id", 45: "unk_piece", 46: "bos_piece", 47: "eos_piece",
                  48: "pad_piece", 44: "unk_surface", 16: "num_threads", 22: "split_by_whitespace",
                  25: "split_digits", 24: "treat_whitespace_as_suffix", 26: "allow_whitespace_only_pieces",
                  20: "max_sentencepiece_length", 21: "split_by_unicode_script", 23: "split_by_number",
                  33: "hard_vocab_limit", 34: "use_all_vocab", 32: "vocabulary_output_piece_score"}
NORM_FIELDS = {1: "name", 2: "precompiled_charsmap", 3: "add_dummy_prefix", 4: "remove_extra_whitespaces",
               5: "escape_whitespaces", 6: "normalization_rule_tsv"}
STRING_FIELDS = {"unk_piece", "bos_piece", "eos_piece", "pad_piece", "unk_surface", "name",
                 "normalization_rule_tsv"}


def decode_sub(buf, names):
    out = {}
    for fn, wt, v in pb_fields(buf):
        nm = names.get(fn, "field%d" % fn)
        if wt == 0:
            if nm in ("unk_id", "bos_id", "eos_id", "pad_id") and v >= 1 << 63:
                v -= 1 << 64
            out[nm] = v
        elif wt == 2 and nm in STRING_FIELDS:
            out[nm] = v.decode("utf-8")
        else:
            out[nm] = v
    return out


def decode_model_proto(raw):
    pieces, trainer, norm, other = [], None, None, []
    for fn, wt, v in pb_fields(raw):
        if fn == 1 and wt == 2:
            p = {"piece": None, "score": 0.0, "type": 1}
            for f2, w2, v2 in pb_fields(v):
                if f2 == 1:
                    p["piece"] = v2.decode("utf-8")
                elif f2 == 2:
                    p["score"] = struct.unpack("<f", v2)[0]
                elif f2 == 3:
                    p["type"] = v2
            pieces.append(p)
        elif fn == 2 and wt == 2:
            trainer = decode_sub(v, TRAINER_FIELDS)
        elif fn == 3 and wt == 2:
            norm = decode_sub(v, NORM_FIELDS)
        else:
            other.append(fn)
    return pieces, trainer, norm, other


def read_llama2c_tokenizer(path, n):
    with open(path, "rb") as f:
        buf = f.read()
    pos = 4
    out = []
    for _ in range(n):
        score, ln = struct.unpack("<fI", buf[pos:pos + 8])
        pos += 8
        out.append((buf[pos:pos + ln], score))
        pos += ln
    return out


def llama2c_encode(pieces, text, bos=True):
    """Reference SentencePiece-BPE-with-byte-fallback encode (FACTS 2.2), over the proto's pieces."""
    vocab = {}
    for i, p in enumerate(pieces):
        if p["type"] in (1, 4):  # NORMAL / USER_DEFINED pieces are mergeable / matchable
            vocab.setdefault(p["piece"], i)
    scores = [p["score"] for p in pieces]
    byte_id = {}
    for i, p in enumerate(pieces):
        if p["type"] == 6:
            byte_id[int(p["piece"][3:5], 16)] = i
    ids = [1] if bos else []
    if not text:
        return ids
    s = "\u2581" + text.replace(" ", "\u2581")
    toks = []
    for ch in s:
        if ch in vocab:
            toks.append(vocab[ch])
        else:
            toks.extend(byte_id[b] for b in ch.encode("utf-8"))
    strs = [pieces[t]["piece"] if pieces[t]["type"] != 6 else None for t in toks]
    while True:
        best, bi, bid = -1e30, -1, -1
        for j in range(len(toks) - 1):
            if strs[j] is None or strs[j + 1] is None:
                continue
            m = strs[j] + strs[j + 1]
            if m in vocab and scores[vocab[m]] > best:
                best, bi, bid = scores[vocab[m]], j, vocab[m]
        if bi < 0:
            break
        toks[bi:bi + 2] = [bid]
        strs[bi:bi + 2] = [pieces[bid]["piece"]]
    return ids + toks


def token_content(v):
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


def check_tokenizer(folder, cfg, expect_tokens, prompt, ref_tok):
    path = os.path.join(folder, "tokenizer.model")
    import sentencepiece as spm
    raw = open(path, "rb").read()
    try:
        pieces, trainer, norm, other = decode_model_proto(raw)
    except Exception as e:  # noqa: BLE001
        err("tokenizer.model: protobuf decode failed: %s" % e)
        return
    info("tokenizer.model: %d bytes, %d pieces, trainer_spec %s" %
         (len(raw), len(pieces), {k: v for k, v in (trainer or {}).items() if not isinstance(v, bytes)}))
    info("tokenizer.model: normalizer_spec %s" %
         {k: (v if not isinstance(v, bytes) else "<%d bytes>" % len(v)) for k, v in (norm or {}).items()})
    if other:
        info("tokenizer.model: other top-level fields %s" % sorted(set(other)))
    if trainer is None:
        err("tokenizer.model: no trainer_spec (model_type defaults to UNIGRAM)")
        trainer = {}
    if norm is None:
        err("tokenizer.model: no normalizer_spec")
        norm = {}
    # proto2 defaults: model_type UNIGRAM(1), byte_fallback false, unk 0, bos 1, eos 2, pad -1,
    # add_dummy_prefix true, remove_extra_whitespaces true, escape_whitespaces true
    if trainer.get("model_type", 1) != 2:
        err("tokenizer.model: trainer_spec.model_type = %s, Llama needs BPE (2); transformers' "
            "LlamaConverter/SpmConverter would build the wrong fast model" % trainer.get("model_type", "unset(1)"))
    if not trainer.get("byte_fallback", 0):
        err("tokenizer.model: trainer_spec.byte_fallback not true (Llama SPM uses byte fallback)")
    for k, want in (("unk_id", 0), ("bos_id", 1), ("eos_id", 2), ("pad_id", -1)):
        defaults = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
        got = trainer.get(k, defaults[k])
        if got != want:
            err("tokenizer.model: trainer_spec.%s = %s, expected %s" % (k, got, want))
    for k, want in (("unk_piece", "<unk>"), ("bos_piece", "<s>"), ("eos_piece", "</s>")):
        got = trainer.get(k, want)  # proto defaults equal these
        if got != want:
            err("tokenizer.model: trainer_spec.%s = %r, expected %r" % (k, got, want))
    if trainer.get("vocab_size") is not None and trainer["vocab_size"] != len(pieces):
        warn("tokenizer.model: trainer_spec.vocab_size %d != %d pieces" % (trainer["vocab_size"], len(pieces)))
    if norm.get("add_dummy_prefix", 1) != 1:
        err("tokenizer.model: normalizer_spec.add_dummy_prefix false (Llama: true)")
    if norm.get("remove_extra_whitespaces", 1) != 0:
        err("tokenizer.model: normalizer_spec.remove_extra_whitespaces true/unset (Llama: false); "
            "runs of spaces would be collapsed")
    if norm.get("escape_whitespaces", 1) != 1:
        err("tokenizer.model: normalizer_spec.escape_whitespaces false")
    if norm.get("name") not in (None, "identity"):
        warn("tokenizer.model: normalizer name %r (Llama: identity)" % norm.get("name"))
    if norm.get("precompiled_charsmap"):
        warn("tokenizer.model: precompiled_charsmap present (Llama has none)")
    # piece types
    tcount = {}
    for i, p in enumerate(pieces):
        tcount[p["type"]] = tcount.get(p["type"], 0) + 1
    info("tokenizer.model: piece types %s (1 NORMAL, 2 UNKNOWN, 3 CONTROL, 6 BYTE)" % tcount)
    want_types = {0: (2, "<unk>"), 1: (3, "<s>"), 2: (3, "</s>")}
    for i, (t, s) in want_types.items():
        if i >= len(pieces) or pieces[i]["piece"] != s or pieces[i]["type"] != t:
            err("tokenizer.model: piece %d = %r, expected %r type %d" %
                (i, pieces[i] if i < len(pieces) else None, s, t))
    for b in range(256):
        i = 3 + b
        s = "<0x%02X>" % b
        if i >= len(pieces) or pieces[i]["piece"] != s or pieces[i]["type"] != 6:
            err("tokenizer.model: piece %d = %r, expected byte piece %s type BYTE(6)" %
                (i, pieces[i] if i < len(pieces) else None, s))
            break
    for i, p in enumerate(pieces[259:], 259):
        if p["type"] != 1:
            err("tokenizer.model: piece %d %r has type %d, expected NORMAL" % (i, p["piece"], p["type"]))
            break
    seen = {}
    for i, p in enumerate(pieces):
        if p["piece"] in seen:
            err("tokenizer.model: duplicate piece %r at %d and %d" % (p["piece"], seen[p["piece"]], i))
        seen[p["piece"]] = i
    if len(pieces) != cfg.get("vocab_size"):
        err("tokenizer.model has %d pieces, config vocab_size %s" % (len(pieces), cfg.get("vocab_size")))
    if ref_tok:
        ref = read_llama2c_tokenizer(ref_tok, len(pieces))
        nd = 0
        for i, ((rb, rs), p) in enumerate(zip(ref, pieces)):
            rstr = rb.decode("utf-8", "replace")
            if rstr.strip("\n") in ("<s>", "</s>"):
                rstr = rstr.strip("\n")
            rstr = rstr.replace(" ", "\u2581")
            if rstr != p["piece"] or struct.pack("<f", rs) != struct.pack("<f", p["score"]):
                if nd < 5:
                    err("tokenizer.model piece %d %r score %r != reference %r score %r" %
                        (i, p["piece"], p["score"], rstr, rs))
                nd += 1
        if nd == 0:
            info("tokenizer.model: all %d pieces + scores equal %s" % (len(pieces), os.path.basename(ref_tok)))
        else:
            err("tokenizer.model: %d pieces differ from %s" % (nd, ref_tok))
    # sentencepiece itself
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(raw)
    except Exception as e:  # noqa: BLE001
        err("sentencepiece cannot load tokenizer.model: %s" % e)
        return
    if sp.GetPieceSize() != cfg.get("vocab_size"):
        err("sentencepiece piece size %d != vocab_size %s" % (sp.GetPieceSize(), cfg.get("vocab_size")))
    for piece, want in (("<unk>", 0), ("<s>", 1), ("</s>", 2)):
        if sp.piece_to_id(piece) != want:
            err("sp.piece_to_id(%r) = %d, expected %d" % (piece, sp.piece_to_id(piece), want))
    if (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) != (0, 1, 2, -1):
        err("sp unk/bos/eos/pad ids = %s" % ((sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()),))
    if sp.bos_id() != cfg.get("bos_token_id"):
        err("sp bos_id %d != config bos_token_id %r" % (sp.bos_id(), cfg.get("bos_token_id")))
    ceos = cfg.get("eos_token_id")
    if sp.eos_id() != ceos and not (isinstance(ceos, list) and sp.eos_id() in ceos):
        err("sp eos_id %d != config eos_token_id %r" % (sp.eos_id(), ceos))
    if expect_tokens is not None and prompt is not None:
        ids = [sp.bos_id()] + sp.encode(prompt)
        if ids != expect_tokens:
            err("sp.encode(%r) with BOS = %s, expected %s" % (prompt, ids, expect_tokens))
        else:
            info("sp.encode(prompt) with BOS == expected tokens %s" % ids)
        dec = sp.decode(ids[1:])
        if dec != prompt:
            err("sp.decode round trip %r != %r" % (dec, prompt))
    # extra encode cases vs. a from-scratch llama2.c-style BPE over the same pieces
    cases = [prompt or "", "Hello world", "  two  spaces ", "line\nbreak", "caf\u00e9 \u65e5\u672c \U0001F600",
             "The cat sat on the mat.", " leading", "123 4567", "Lily and Tom were best friends."]
    bad = 0
    for c in cases:
        a = sp.encode(c)
        b = llama2c_encode(pieces, c, bos=False)
        if a != b:
            bad += 1
            err("encode %r: sentencepiece %s != reference BPE %s" % (c, a, b))
        if sp.decode(a) != c:
            warn("sp.decode(sp.encode(%r)) = %r" % (c, sp.decode(a)))
    if not bad:
        info("sentencepiece encode == reference SPM-BPE encode on %d extra strings" % len(cases))

    # tokenizer_config.json / special_tokens_map.json
    tc_path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.exists(tc_path):
        err("tokenizer.model present but no tokenizer_config.json")
    else:
        tc = load_json_file(tc_path, "tokenizer_config.json")
        if tc is not None:
            info("tokenizer_config.json: %s" % json.dumps(tc, ensure_ascii=False)[:600])
            if tc.get("tokenizer_class") != "LlamaTokenizer":
                err("tokenizer_config.json tokenizer_class = %r, expected 'LlamaTokenizer'" % tc.get("tokenizer_class"))
            for k, want in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>")):
                if token_content(tc.get(k)) != want:
                    err("tokenizer_config.json %s = %r, expected %r" % (k, tc.get(k), want))
            if "pad_token" in tc and tc["pad_token"] is not None and token_content(tc["pad_token"]) is None:
                err("tokenizer_config.json pad_token %r invalid" % tc["pad_token"])
            for k, want in (("add_bos_token", True), ("add_eos_token", False)):
                if k in tc and tc[k] is not want:
                    err("tokenizer_config.json %s = %r, expected %r" % (k, tc[k], want))
                if k not in tc:
                    info("tokenizer_config.json: %s absent (LlamaTokenizer default %r)" % (k, want))
            if "model_max_length" in tc and not is_num(tc["model_max_length"]):
                err("tokenizer_config.json model_max_length %r not a number" % tc["model_max_length"])
            atd = tc.get("added_tokens_decoder")
            if atd is not None:
                if not isinstance(atd, dict):
                    err("tokenizer_config.json added_tokens_decoder not an object")
                else:
                    for sid, tok in atd.items():
                        try:
                            iid = int(sid)
                        except ValueError:
                            err("added_tokens_decoder key %r not an integer string" % sid)
                            continue
                        c = token_content(tok)
                        if not isinstance(tok, dict) or c is None:
                            err("added_tokens_decoder[%s] = %r not an AddedToken object" % (sid, tok))
                        elif iid >= sp.GetPieceSize() or sp.id_to_piece(iid) != c:
                            err("added_tokens_decoder[%s] content %r != sp piece %r" %
                                (sid, c, sp.id_to_piece(iid) if iid < sp.GetPieceSize() else None))
            if tc.get("legacy") is None:
                info("tokenizer_config.json: legacy not set -> LlamaTokenizer warns and uses legacy=True "
                     "(plain sp.encode; that is what this check reproduces)")
            elif tc.get("legacy") is False:
                info("tokenizer_config.json: legacy=false -> LlamaTokenizer needs protobuf and strips the "
                     "dummy prefix itself; encode of the prompt is unchanged for text not starting with a special token")
    stm_path = os.path.join(folder, "special_tokens_map.json")
    if not os.path.exists(stm_path):
        warn("no special_tokens_map.json (optional for transformers when tokenizer_config.json has the tokens)")
    else:
        stm = load_json_file(stm_path, "special_tokens_map.json")
        if stm is not None:
            info("special_tokens_map.json: %s" % json.dumps(stm))
            for k, want in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>")):
                if token_content(stm.get(k)) != want:
                    err("special_tokens_map.json %s = %r, expected %r" % (k, stm.get(k), want))


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--tokens", help="tokens.json ({\"tokens\": [...]} or a list); default: stories260K prompt")
    ap.add_argument("--logits", help="raw f32 logits [T, V]; default: stories260K reference")
    ap.add_argument("--tol", type=float, default=None,
                    help="max abs diff allowed (default 1e-4 for an all-F32 folder; else reported only)")
    ap.add_argument("--prompt", default=None, help="text whose BOS+encode must equal the tokens")
    ap.add_argument("--require-tokenizer", action="store_true")
    ap.add_argument("--ref-tokenizer", help="llama2.c tokenizer.bin whose pieces/scores tokenizer.model must equal")
    a = ap.parse_args()
    folder = a.folder
    print("== %s" % folder)
    print("   files: %s" % sorted(os.listdir(folder)))

    if a.tokens:
        tj = load_json_file(a.tokens, "tokens")
        tokens = tj["tokens"] if isinstance(tj, dict) else tj
        prompt = a.prompt
    else:
        tokens = DEFAULT_TOKENS
        prompt = a.prompt if a.prompt is not None else DEFAULT_PROMPT
    logits_path = a.logits or (None if a.tokens else DEFAULT_LOGITS)

    print("-- config.json")
    cfg = load_json_file(os.path.join(folder, "config.json"), "config.json")
    if cfg is None:
        return finish()
    info(json.dumps(cfg))
    check_config(cfg)
    gc_path = os.path.join(folder, "generation_config.json")
    if os.path.exists(gc_path):
        gc = load_json_file(gc_path, "generation_config.json")
        if gc is not None:
            info("generation_config.json: %s" % json.dumps(gc))
            for k in ("bos_token_id", "eos_token_id"):
                if k in gc and gc[k] != cfg.get(k):
                    err("generation_config.json %s %r != config %r" % (k, gc[k], cfg.get(k)))

    print("-- safetensors")
    W = load_weights(folder)
    if W is None:
        return finish()
    print("-- state dict")
    try:
        check_state_dict(cfg, W)
    except Exception as e:  # noqa: BLE001
        err("state dict check failed: %s" % e)
        return finish()

    print("-- forward")
    if errors:
        info("(forward still attempted despite earlier errors)")
    try:
        with torch.no_grad():
            logits = forward(cfg, W, tokens)
    except Exception as e:  # noqa: BLE001
        err("forward failed: %s" % e)
        logits = None
    if logits is not None and logits_path:
        V = cfg["vocab_size"]
        ref_raw = open(logits_path, "rb").read()
        if len(ref_raw) != 4 * len(tokens) * V:
            err("reference logits %s has %d bytes, expected %d x %d x 4" % (logits_path, len(ref_raw), len(tokens), V))
        else:
            ref = torch.frombuffer(bytearray(ref_raw), dtype=torch.float32).reshape(len(tokens), V)
            diff = (logits - ref).abs()
            md = diff.max().item()
            dtypes = {w[0]["dtype"] for w in W.values()}
            tol = a.tol if a.tol is not None else (1e-4 if dtypes == {"F32"} else None)
            am = (logits.argmax(-1) == ref.argmax(-1)).sum().item()
            info("tokens %s" % tokens)
            info("max |logit| ref %.4f; max abs diff %.3e (row max %s); mean abs diff %.3e; argmax agree %d/%d" %
                 (ref.abs().max().item(), md, ["%.1e" % d for d in diff.max(-1).values.tolist()],
                  diff.mean().item(), am, len(tokens)))
            if tol is not None:
                if md > tol:
                    err("logits max abs diff %.3e > tolerance %.1e" % (md, tol))
                else:
                    info("logits within tolerance %.1e" % tol)
            else:
                info("(dtype %s: no tolerance applied, difference reported)" % sorted(dtypes))
    print("-- tokenizer")
    if os.path.exists(os.path.join(folder, "tokenizer.model")):
        try:
            check_tokenizer(folder, cfg, tokens if prompt is not None else None, prompt, a.ref_tokenizer)
        except Exception as e:  # noqa: BLE001
            err("tokenizer check crashed: %s" % e)
    else:
        for fn in ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
            if os.path.exists(os.path.join(folder, fn)):
                warn("%s present without tokenizer.model" % fn)
        if a.require_tokenizer:
            err("no tokenizer.model")
        else:
            info("no tokenizer.model (skipped)")
    return finish()


def finish():
    print("== %d error(s), %d warning(s)" % (len(errors), len(warnings)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
