#!/usr/bin/python3
"""Golden vectors for camelid's NF4 quantizer (tests/unit/test_nf4.c).

An independent implementation, written for camelid from the algorithm as FACTS 4.2 states it (numpy float32
arithmetic throughout, not bitsandbytes' code):

  - blocks of `blocksize` (64) over the flattened row-major weight; absmax = max|w| per block (stored as is);
    scaled = clip(w * (1 / max(absmax, 1e-38)), -1, 1), all in float32;
  - code = the number of NF4 midpoints strictly below the scaled value (midpoints (c[i] + c[i+1]) / 2 in
    float32), so a value on a midpoint takes the lower code; two codes per byte, even flat index in the high
    nibble, an odd count padded with the code of 0.0;
  - double quantization: offset = mean(absmax) (summed in float64, rounded to float32); absmax - offset in
    float32, quantized in blocks of 256 the same way against the midpoints of the signed 8-bit dynamic map;
    dequantized absmax = float32(float32(map[q] * nested_absmax) + offset).

The dynamic map is built with torch (Debian python3-torch 1.13) following create_dynamic_map(signed=True,
max_exponent_bits=7, total_bits=8): for i in 0..6, 2**i + 1 points of torch.linspace(0.1, 1) in float32,
the means of neighbours times +-10**(i - 6), then 0 and 1, sorted. torch's float32 linspace is used because its
rounding is what the map's values are (a plain float32 formula differs in a few dozen entries).

Usage: /usr/bin/python3 scripts/golden/nf4_golden.py [OUT_DIR]   (default tests/data/nf4)
Writes dynamic_map.f32 and, per case NAME in cases.txt ("NAME ROWS COLS" lines):
  NAME.in.f32        the weight, float32 [ROWS, COLS]
  NAME.packed.u8     the packed codes, (ROWS * COLS + 1) // 2 bytes
  NAME.absmax.f32    the block absmax values
  NAME.dq.u8         the double-quantized absmax codes
  NAME.nested.f32    nested_absmax (one per 256 blocks) followed by the offset
  NAME.absmax_dq.f32 the dequantized absmax values
  NAME.deq.f32       the weight dequantized with the dequantized absmax
"""
import os
import sys

import numpy as np

f32 = np.float32

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=f32)


def midpoints(code):
    return ((code[:-1] + code[1:]) / f32(2)).astype(f32)


def dynamic_map():
    import torch
    vals = []
    for i in range(7):
        pts = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        means = (pts[:-1] + pts[1:]) / 2.0
        scale = 10.0 ** (i - 6)
        vals += (scale * means).tolist()
        vals += (-scale * means).tolist()
    vals += [0.0, 1.0]
    assert len(vals) == 256
    return np.array(sorted(vals), dtype=f32)


def block_quant(x, blocksize, mids):
    """codes and absmax of float32 values x in blocks (the last may be short)"""
    n = x.size
    nb = (n + blocksize - 1) // blocksize
    codes = np.zeros(n, dtype=np.uint8)
    absmax = np.zeros(nb, dtype=f32)
    for b in range(nb):
        blk = x[b * blocksize:(b + 1) * blocksize]
        a = f32(np.max(np.abs(blk)))
        absmax[b] = a
        r = f32(1) / max(a, f32(1e-38))
        s = np.clip((blk * r).astype(f32), f32(-1), f32(1))
        codes[b * blocksize:b * blocksize + blk.size] = np.searchsorted(mids, s, side="left")
    return codes, absmax


def nf4_quant(w, blocksize=64):
    x = w.reshape(-1).astype(f32)
    codes, absmax = block_quant(x, blocksize, midpoints(NF4))
    if codes.size % 2:
        codes = np.append(codes, np.uint8(np.searchsorted(midpoints(NF4), f32(0), side="left")))
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    return packed, absmax


def double_quant(absmax, dmap):
    offset = f32(np.mean(absmax.astype(np.float64)))
    centred = (absmax - offset).astype(f32)
    q, nested = block_quant(centred, 256, midpoints(dmap))
    deq = np.empty_like(absmax)
    for i in range(absmax.size):
        deq[i] = f32(f32(dmap[q[i]] * nested[i // 256]) + offset)
    return q, nested, offset, deq


def dequant(packed, absmax, n, blocksize=64):
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 15
    out = NF4[codes[:n]]
    return np.array([f32(out[i] * absmax[i // blocksize]) for i in range(n)], dtype=f32)


def tie_block(scale):
    """64 values whose scaled forms sit exactly on every NF4 midpoint and one float32 step to either side;
    the block's absmax is `scale` (a power of two, so w * (1 / absmax) is exact)"""
    mids = midpoints(NF4)
    vals = [f32(1.0)]
    for m in mids:
        vals += [m, np.nextafter(m, f32(2)), np.nextafter(m, f32(-2))]
    vals += [f32(-1.0), f32(0.0), f32(-0.0), np.nextafter(f32(0), f32(1)), f32(-0.5), f32(0.5), f32(0.75),
             f32(-0.75), f32(0.999), f32(-0.999), f32(0.04), f32(-0.04), f32(0.3), f32(-0.3), f32(0.6), f32(-0.6),
             f32(0.85), f32(-0.85)]
    assert len(vals) == 64, len(vals)
    return (np.array(vals, dtype=f32) * f32(scale)).astype(f32)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "data", "nf4")
    os.makedirs(out, exist_ok=True)
    dmap = dynamic_map()
    dmap.tofile(os.path.join(out, "dynamic_map.f32"))
    rng = np.random.default_rng(20240601)
    cases = []
    # exact midpoints (scale 1 and 1/8) and a non-power-of-two scale where ties come through rounding
    ties = np.concatenate([tie_block(1.0), tie_block(0.125), tie_block(3.0)]).reshape(3, 64)
    cases.append(("ties", ties))
    # zero block, a subnormal absmax (the 1e-38 clamp), a negative maximum, exact +-1 clamping
    special = np.zeros((4, 64), dtype=f32)
    special[1] = rng.standard_normal(64).astype(f32) * f32(1e-40)
    special[2] = rng.standard_normal(64).astype(f32) * f32(0.02)
    special[2, 17] = f32(-0.5)
    special[3] = rng.uniform(-1, 1, 64).astype(f32)
    special[3, 5] = f32(1.0)
    special[3, 6] = f32(-1.0)
    cases.append(("special", special))
    # N(0, 0.02^2) at a few shapes: square, stories260K's ffn_down (rows of 172: blocks cross rows), an odd
    # count (short last block, padded nibble), and more than 256 blocks (two nested blocks, the last short)
    for name, shape in [("gauss64x64", (64, 64)), ("down64x172", (64, 172)), ("odd3x37", (3, 37)),
                        ("gauss150x128", (150, 128))]:
        cases.append((name, (rng.standard_normal(shape) * 0.02).astype(f32)))
    with open(os.path.join(out, "cases.txt"), "w") as idx:
        for name, w in cases:
            rows, cols = w.shape
            packed, absmax = nf4_quant(w)
            q, nested, offset, absmax_dq = double_quant(absmax, dmap)
            w.astype(f32).tofile(os.path.join(out, name + ".in.f32"))
            packed.tofile(os.path.join(out, name + ".packed.u8"))
            absmax.tofile(os.path.join(out, name + ".absmax.f32"))
            q.astype(np.uint8).tofile(os.path.join(out, name + ".dq.u8"))
            np.append(nested, offset).astype(f32).tofile(os.path.join(out, name + ".nested.f32"))
            absmax_dq.tofile(os.path.join(out, name + ".absmax_dq.f32"))
            dequant(packed, absmax_dq, w.size).tofile(os.path.join(out, name + ".deq.f32"))
            idx.write("%s %d %d\n" % (name, rows, cols))


if __name__ == "__main__":
    main()
