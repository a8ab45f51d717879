#!/usr/bin/python3
"""Check a bitsandbytes NF4 folder written by `camelid quantize --type nf4` against its source, independently of
camelid (not run in CI; needs numpy).

  /usr/bin/python3 scripts/golden/check_nf4_folder.py NF4_DIR SOURCE_HF_DIR

SOURCE_HF_DIR is the F32/F16/BF16 Hugging Face folder the NF4 folder was made from (rotate-half q/k, so no row
permutation is involved). For every tensor of the NF4 file:
  - the layout transformers + bitsandbytes expect (FACTS 4.3): names, dtypes and shapes of the packed weight,
    absmax, quant_map, nested_absmax, nested_quant_map and the quant-state JSON, which must parse with json.loads
    and hold exactly the keys bitsandbytes' QuantState.from_dict accepts, its shape the linear's;
  - the packed codes, block absmax, double-quantized codes, nested absmax and offset equal a vectorized numpy
    re-implementation of FACTS 4.2 (scripts/golden/nf4_golden.py's algorithm) applied to the source weight,
    byte for byte;
  - embeddings, norms and the head equal the source rounded to BF16.
Prints one line per kind of tensor and the number of differing bytes; exits 1 on any difference.
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nf4_golden import NF4, dynamic_map, midpoints  # noqa: E402

f32 = np.float32
QS_KEYS = {"quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"}


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, t in header.items():
        s, e = t["data_offsets"]
        out[name] = (t["dtype"], t["shape"], data[base + s:base + e])
    return out


def as_array(dtype, raw):
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4")
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(f32)
    if dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(f32)
    if dtype == "U8":
        return np.frombuffer(raw, dtype=np.uint8)
    raise ValueError(dtype)


def to_bf16_bits(x):
    b = x.astype(f32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def block_quant(x, blocksize, mids):
    n = x.size
    nb = (n + blocksize - 1) // blocksize
    padded = np.zeros(nb * blocksize, dtype=f32)
    padded[:n] = x
    blocks = padded.reshape(nb, blocksize)
    absmax = np.abs(blocks).max(axis=1).astype(f32)
    r = (f32(1) / np.maximum(absmax, f32(1e-38))).astype(f32)
    scaled = np.clip((blocks * r[:, None]).astype(f32), f32(-1), f32(1))
    codes = np.searchsorted(mids, scaled.ravel(), side="left").astype(np.uint8)[:n]
    return codes, absmax


def main():
    nf4_dir, src_dir = sys.argv[1], sys.argv[2]
    q = read_safetensors(os.path.join(nf4_dir, "model.safetensors"))
    src = {}
    for f in sorted(os.listdir(src_dir)):
        if f.endswith(".safetensors"):
            src.update(read_safetensors(os.path.join(src_dir, f)))
    cfg = json.load(open(os.path.join(nf4_dir, "config.json")))
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["load_in_4bit"] and qc["bnb_4bit_quant_type"] == "nf4"
    dmap = dynamic_map()
    nf4_mids, map_mids = midpoints(NF4), midpoints(dmap)
    bad = 0
    n_linear = n_plain = 0
    for name, (dt, shape, raw) in src.items():
        qs_name = name + ".quant_state.bitsandbytes__nf4"
        if qs_name not in q:
            # 16-bit tensors: the source in BF16
            qdt, qshape, qraw = q[name]
            assert qdt == "BF16" and qshape == shape, name
            want = to_bf16_bits(as_array(dt, raw)).tobytes()
            bad += sum(a != b for a, b in zip(want, qraw)) + abs(len(want) - len(qraw))
            n_plain += 1
            continue
        n_linear += 1
        qs = json.loads(q[qs_name][2])
        assert set(qs) <= QS_KEYS and qs["quant_type"] == "nf4" and qs["shape"] == shape, (name, qs)
        nested = "nested_offset" in qs
        w = as_array(dt, raw)
        n = w.size
        codes, absmax = block_quant(w, qs["blocksize"], nf4_mids)
        if n % 2:
            codes = np.append(codes, np.uint8(7))
        packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
        pdt, pshape, praw = q[name]
        assert pdt == "U8" and pshape == [(n + 1) // 2, 1], name
        bad += int(np.count_nonzero(np.frombuffer(praw, dtype=np.uint8) != packed))
        assert q[name + ".quant_map"][0] == "F32" and np.array_equal(as_array("F32", q[name + ".quant_map"][2]), NF4)
        if nested:
            offset = f32(np.mean(absmax.astype(np.float64)))
            centred = (absmax - offset).astype(f32)
            dq, nested_absmax = block_quant(centred, qs["nested_blocksize"], map_mids)
            adt, _, araw = q[name + ".absmax"]
            assert adt == "U8" and qs["nested_dtype"] == "float32"
            bad += int(np.count_nonzero(np.frombuffer(araw, dtype=np.uint8) != dq))
            bad += int(np.count_nonzero(as_array("F32", q[name + ".nested_absmax"][2]) != nested_absmax))
            bad += int(f32(qs["nested_offset"]) != offset)
            bad += int(np.count_nonzero(as_array("F32", q[name + ".nested_quant_map"][2]) != dmap))
        else:
            bad += int(np.count_nonzero(as_array("F32", q[name + ".absmax"][2]) != absmax))
    print("%d NF4 linears and %d BF16 tensors checked against %s: %d differing values" % (n_linear, n_plain, src_dir, bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
