#!/usr/bin/python3
"""PyTorch CPU reference for bench/train_vs_torch.sh: tokens/s of full training steps (forward, backward,
clip, AdamW) of a LLaMA of a named shape, written in plain torch (Debian python3-torch; no transformers), random
weights and tokens, fp32. Usage: torch_train.py SHAPE BATCH SEQ THREADS STEPS. Prints one line:
"torch SHAPE tokens_per_s N"."""
import math
import sys
import time

import torch

SHAPES = {  # dim, hidden, layers, heads, kv heads, vocab (FACTS 1.7)
    "stories15M": (288, 768, 6, 6, 6, 32000),
    "stories42M": (512, 1376, 8, 8, 8, 32000),
    "stories110M": (768, 2048, 12, 12, 12, 32000),
}


class Block(torch.nn.Module):
    def __init__(self, d, h, nh, nkv):
        super().__init__()
        self.nh, self.nkv, self.hd = nh, nkv, d // nh
        self.q = torch.nn.Linear(d, nh * self.hd, bias=False)
        self.k = torch.nn.Linear(d, nkv * self.hd, bias=False)
        self.v = torch.nn.Linear(d, nkv * self.hd, bias=False)
        self.o = torch.nn.Linear(nh * self.hd, d, bias=False)
        self.g = torch.nn.Linear(d, h, bias=False)
        self.u = torch.nn.Linear(d, h, bias=False)
        self.dn = torch.nn.Linear(h, d, bias=False)
        self.n1 = torch.nn.Parameter(torch.ones(d))
        self.n2 = torch.nn.Parameter(torch.ones(d))

    @staticmethod
    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.norm(x, self.n1)
        q = self.q(h).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.nkv, self.hd).transpose(1, 2)

        def rope(t):
            t1, t2 = t[..., : self.hd // 2], t[..., self.hd // 2 :]
            return t * cos + torch.cat((-t2, t1), -1) * sin

        q, k = rope(q), rope(k)
        if self.nkv != self.nh:
            k = k.repeat_interleave(self.nh // self.nkv, 1)
            v = v.repeat_interleave(self.nh // self.nkv, 1)
        a = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        a = torch.softmax(a, -1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(B, T, -1))
        h = self.norm(x, self.n2)
        return x + self.dn(torch.nn.functional.silu(self.g(h)) * self.u(h))


def main():
    shape, B, T, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    d, h, L, nh, nkv, V = SHAPES[shape]
    emb = torch.nn.Embedding(V, d)
    blocks = torch.nn.ModuleList(Block(d, h, nh, nkv) for _ in range(L))
    nf = torch.nn.Parameter(torch.ones(d))
    params = list(emb.parameters()) + list(blocks.parameters()) + [nf]  # tied head
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)
    hd = d // nh
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos = torch.cat((ang.cos(), ang.cos()), -1)
    sin = torch.cat((ang.sin(), ang.sin()), -1)
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        z = emb(x)
        for b in blocks:
            z = b(z, cos, sin, mask)
        z = Block.norm(z, nf)
        loss = torch.nn.functional.cross_entropy((z @ emb.weight.t()).view(-1, V), y.view(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step > 0:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"torch {shape} tokens_per_s {B * T / times[len(times) // 2]:.1f}")


if __name__ == "__main__":
    main()
