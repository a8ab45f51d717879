#!/usr/bin/python3
"""Golden numbers for camelid's arena ratings (tests/data/arena/), computed independently of camelid.

Writes, deterministically:
  battles.json   2,000 synthetic battles in FastChat's clean-battle format (a JSON array, one object per
                 line), drawn from fixed "true" ratings with ties and both-bad votes
  golden.tsv     per model: online Elo (FastChat's compute_elo loop, repr = exact doubles), the
                 Bradley-Terry MLE as FastChat fits it (scipy L-BFGS-B from 0, gtol 1e-6, maxiter 100),
                 the same fit to gtol 1e-12, and FastChat's bootstrap interval (numpy default_rng(0)
                 multinomial over distinct rows, 100 rounds, 2.5/97.5 % quantiles), battles and wins
  separable.jsonl a small set where one model never loses (its MLE is infinite)

Run with Debian's python3 (python3-numpy, python3-scipy):  /usr/bin/python3 scripts/golden/arena_golden.py
"""
import json
import math
import os
import random
import sys

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "arena")

TRUE = {  # rating points; differences matter
    "vicuna-13b": 1180, "koala-13b": 1080, "alpaca-13b": 1010, "oasst-pythia-12b": 990,
    "chatglm-6b": 960, "stablelm-tuned-alpha-7b": 900, "dolly-v2-12b": 870, "llama-13b": 830,
}


def make_battles(n, seed):
    rnd = random.Random(seed)
    names = sorted(TRUE)
    rows = []
    t = 1682000000.0
    for i in range(n):
        a, b = rnd.sample(names, 2)
        p = 1 / (1 + 10 ** ((TRUE[b] - TRUE[a]) / 400))
        u = rnd.random()
        if u < 0.22:  # ties, a third of them both bad
            winner = "tie (bothbad)" if rnd.random() < 0.35 else "tie"
        elif rnd.random() < p:
            winner = "model_a"
        else:
            winner = "model_b"
        t += rnd.uniform(1, 90)
        rows.append({"model_a": a, "model_b": b, "winner": winner, "anony": True, "tstamp": round(t, 2)})
    return rows


def compute_elo(rows, K=4, SCALE=400, BASE=10, INIT=1000):
    """FastChat's online Elo, in file order."""
    rating = {}
    for r in rows:
        a, b, w = r["model_a"], r["model_b"], r["winner"]
        ra, rb = rating.get(a, INIT), rating.get(b, INIT)
        ea = 1 / (1 + BASE ** ((rb - ra) / SCALE))
        eb = 1 / (1 + BASE ** ((ra - rb) / SCALE))
        sa = {"model_a": 1, "model_b": 0, "tie": 0.5, "tie (bothbad)": 0.5}[w]
        rating[a] = ra + K * (sa - ea)
        rating[b] = rb + K * (1 - sa - eb)
    return rating


def distinct_rows(rows, models):
    idx = {m: i for i, m in enumerate(models)}
    counts = {}
    for r in rows:
        y = {"model_a": 1.0, "model_b": 0.0}.get(r["winner"], 0.5)
        key = (idx[r["model_a"]], idx[r["model_b"]], y)
        counts[key] = counts.get(key, 0) + 1
    keys = sorted(counts)
    matchups = np.array([[k[0], k[1]] for k in keys], dtype=np.int64)
    outcomes = np.array([k[2] for k in keys], dtype=np.float64)
    weights = np.array([counts[k] for k in keys], dtype=np.float64)
    return matchups, outcomes, weights


def loss_and_grad(r, matchups, outcomes, weights, alpha):
    d = alpha * (r[matchups[:, 0]] - r[matchups[:, 1]])
    p = expit(d)
    loss = -((np.log(p) * outcomes + np.log(1.0 - p) * (1.0 - outcomes)) * weights).sum()
    gm = -alpha * (outcomes - p) * weights
    grad = np.zeros_like(r)
    np.add.at(grad, matchups[:, 0], gm)
    np.add.at(grad, matchups[:, 1], -gm)
    return loss, grad


def fit_bt(matchups, outcomes, weights, n, gtol=1e-6, maxiter=100):
    res = minimize(loss_and_grad, np.zeros(n), args=(matchups, outcomes, weights, math.log(10)), jac=True,
                   method="L-BFGS-B", options={"maxiter": maxiter, "gtol": gtol})
    return res.x


def bootstrap(rows, models, rounds=100):
    m, o, w = distinct_rows(rows, models)
    rng = np.random.default_rng(seed=0)
    idxs = rng.multinomial(n=len(rows), pvals=w / w.sum(), size=rounds)
    out = np.array([fit_bt(m, o, c.astype(np.float64) / len(rows), len(models)) for c in idxs]) * 400 + 1000
    return np.quantile(out, 0.025, axis=0), np.quantile(out, 0.975, axis=0)


def main():
    os.makedirs(OUT, exist_ok=True)
    rows = make_battles(2000, seed=20230503)
    with open(os.path.join(OUT, "battles.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    models = sorted({r["model_a"] for r in rows} | {r["model_b"] for r in rows})
    elo = compute_elo(rows)
    m, o, w = distinct_rows(rows, models)
    bt = fit_bt(m, o, w, len(models)) * 400 + 1000
    bt_tight = fit_bt(m, o, w, len(models), gtol=1e-12, maxiter=10000) * 400 + 1000
    lo, hi = bootstrap(rows, models)
    with open(os.path.join(OUT, "golden.tsv"), "w") as f:
        f.write("# model\telo\tbt_fastchat\tbt_tight\tboot_lo_fastchat\tboot_hi_fastchat\tbattles\twins\n")
        for i, name in enumerate(models):
            battles = sum(1 for r in rows if name in (r["model_a"], r["model_b"]))
            wins = sum(1 for r in rows if (r["winner"] == "model_a" and r["model_a"] == name) or
                       (r["winner"] == "model_b" and r["model_b"] == name))
            f.write("%s\t%r\t%r\t%r\t%r\t%r\t%d\t%d\n" % (name, elo[name], float(bt[i]), float(bt_tight[i]),
                                                         float(lo[i]), float(hi[i]), battles, wins))
    # separable: "champion" wins or ties... no: wins every battle it is in; the others mix
    rnd = random.Random(7)
    sep = []
    others = ["m-one", "m-two", "m-three"]
    for i in range(60):
        if i % 3 == 0:
            a, b = "champion", rnd.choice(others)
            sep.append({"model_a": a, "model_b": b, "winner": "model_a"} if rnd.random() < 0.5 else
                       {"model_a": b, "model_b": a, "winner": "model_b"})
        else:
            a, b = rnd.sample(others, 2)
            sep.append({"model_a": a, "model_b": b, "winner": rnd.choice(["model_a", "model_b", "tie"])})
    with open(os.path.join(OUT, "separable.jsonl"), "w") as f:
        for r in sep:
            f.write(json.dumps(r) + "\n")
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
