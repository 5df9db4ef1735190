#!/usr/bin/python3
"""Independent numpy reference for every merge method (mergekit's and PEFT's published rules).

Written from mergekit's documented semantics (merge_methods/*.py, sparsify.py, generalized_task_arithmetic.py)
and PEFT's merge_utils.py, not from our C# code. Random sparsifiers (DARE, DELLA) draw from OUR counter-based
generator (see Recycling.Onnx/Merging/DareMask.cs), reimplemented here, so the expected tensors are exact.

For each case below the script writes, under Recycling.Tests/Fixtures/merge-reference/:
  NAME.yml  a mergekit merge config (model paths relative to the config file)
  NAME.npz  the expected merged value of every float initializer, keyed by initializer name (float32)
The C# tests (Recycling.Tests/Merging/ReferenceConfigTests.cs) merge each config and compare tensor by tensor.

Conventions where the peers leave a choice open (documented in docs/merge-methods.md):
- task vectors are fp32 differences (x - base); masks and orderings are decided on them; sums run in fp64;
- orders are by descending magnitude, equal magnitudes by ascending element index (the lower index ranks as larger);
- DARE keeps element e of model i iff draw24(seed, tensor id, i, e) >= round((1 - density) * 2^24);
  DELLA keeps it iff draw24 >= round((1 - p_e) * 2^24), p_e its rank-dependent keep probability.

Run: /usr/bin/python3 scripts/merging/reference_merges.py   (about 2 s; needs numpy, onnx, PyYAML)
"""
import json
import math
import os
import sys

import numpy as np
import onnx
import yaml
from onnx import numpy_helper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "Recycling.Tests", "Fixtures")
OUT = os.path.join(FIXTURES, "merge-reference")
MODEL_DIR = os.path.join(FIXTURES, "torch-merge", "cnn", "default")
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

# Canonical keys (AlignedParameter.Key: "n<node>:<slot>" of the canonical graph) of cnn/default's initializers.
# They are identities, like names: DARE/DELLA key their masks by FNV-1a of the key (TensorId.FromKey).
CANONICAL_KEYS_FILE = os.path.join(os.path.dirname(__file__), "cnn_canonical_keys.json")


# ---------------------------------------------------------------- counter-based generator (ours)

def mix(z):
    """SplitMix64's finaliser on Python ints (exact 64-bit arithmetic)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix_array(z):
    with np.errstate(over="ignore"):
        z = z.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def fnv1a(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def model_key(seed, tensor_id, model_index):
    return (mix((mix(mix(seed ^ 0x5DA7E5EED0000000) ^ tensor_id) + (model_index + 1) * GOLDEN) & MASK64)) & MASK64


def draws24(seed, tensor_id, model_index, n):
    """The 24-bit draw of every element 0..n-1 (top 24 bits of Mix(key + e*Golden))."""
    key = np.uint64(model_key(seed, tensor_id, model_index))
    with np.errstate(over="ignore"):
        z = key + np.arange(n, dtype=np.uint64) * np.uint64(GOLDEN)
    return (mix_array(z) >> np.uint64(40)).astype(np.int64)


def keep_threshold(drop):
    """round(drop * 2^24), half to even like Math.Round."""
    return int(round(drop * (1 << 24)))


# ---------------------------------------------------------------- sparsifiers (mergekit's sparsify.py rules)

def rescaled(tau, mask, norm):
    """mask·τ, rescaled to keep τ's L1 norm when norm == 'l1' (skipped when either norm is below 1e-7)."""
    masked = np.where(mask, tau, np.float32(0)).astype(np.float64)
    if norm is None:
        return masked
    before = np.abs(tau.astype(np.float64)).sum()
    after = np.abs(masked).sum()
    if before < 1e-7 or after < 1e-7:
        return masked
    return masked * (before / after)


def descending(values):
    """Element indices by descending value, equal values by ascending index (the order every choice here uses)."""
    flat = values.reshape(-1).astype(np.float64)
    return np.lexsort((np.arange(flat.size), -flat))


def topk_mask(values, k):
    """Mask of the k largest values (equal values: lower indices first)."""
    mask = np.zeros(values.size, dtype=bool)
    mask[descending(values)[:k]] = True
    return mask.reshape(values.shape)


def magnitude(tau, density, norm=None):
    if density >= 1:
        return tau.astype(np.float64)
    k = int(density * tau.size)
    return rescaled(tau, topk_mask(np.abs(tau), k), norm)


def magnitude_outliers(tau, density, gamma, norm=None):
    """Breadcrumbs: drop the int(γ·N) largest and the smallest, keeping int(d·N) (mergekit's slice [n_bot:-n_top]:
    empty when n_top is 0, so such a tensor keeps nothing)."""
    if density >= 1:
        return tau.astype(np.float64)
    n = tau.size
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top += n_bot
        n_bot = 0
    order = descending(np.abs(tau))
    mask = np.zeros(n, dtype=bool)
    if n_top > 0:
        mask[order[n_top:n - n_bot]] = True
    return rescaled(tau, mask.reshape(tau.shape), norm)


def bernoulli(tau, density, norm, seed, tensor_id, model_index):
    if density >= 1:
        return tau.astype(np.float64)
    keep = draws24(seed, tensor_id, model_index, tau.size) >= keep_threshold(1.0 - density)
    return rescaled(tau, keep.reshape(tau.shape), norm)


def della_magprune(tau, density, epsilon, norm, seed, tensor_id, model_index):
    """DELLA: keep probability (d − ε) + 2ε·(rank − 1)/(n − 1) by magnitude rank along axis 1 (the whole vector
    for 1-D tensors), drawn from our generator; fibers of one element keep with probability d."""
    if density >= 1:
        return tau.astype(np.float64)
    if density <= 0:
        return np.zeros(tau.shape)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("epsilon must keep density ± epsilon inside (0, 1)")
    work = tau.reshape(1, -1) if tau.ndim < 2 else tau
    moved = np.moveaxis(np.abs(work), 1, -1)  # fibers along axis 1
    fibers = moved.reshape(-1, moved.shape[-1])
    m = fibers.shape[1]
    ranks = np.empty(fibers.shape, dtype=np.float64)
    for r in range(fibers.shape[0]):
        ranks[r, descending(fibers[r])] = np.arange(m, 0, -1)  # the largest ranks m
    rank_norm = (ranks - 1) / (m - 1) if m > 1 else np.full(ranks.shape, 0.5)
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    probs = np.moveaxis(probs.reshape(moved.shape), -1, 1).reshape(-1)
    draws = draws24(seed, tensor_id, model_index, tau.size)
    keep = np.array([draws[e] >= keep_threshold(1.0 - probs[e]) for e in range(tau.size)])
    return rescaled(tau, keep.reshape(tau.shape), norm)


# ---------------------------------------------------------------- generalized task arithmetic

def gta(base, xs, weights, densities, sparsify, consensus, normalize, lam, **sp):
    taus = [(x - base).astype(np.float32) for x in xs]
    deltas = np.stack([sparsify(t, densities[i], i, **sp) for i, t in enumerate(taus)])
    w = np.array(weights, dtype=np.float64).reshape((-1,) + (1,) * base.ndim)
    weighted = deltas * w
    if consensus:
        majority = np.where(weighted.sum(axis=0) >= 0, 1.0, -1.0)
        mask = np.sign(weighted) == majority
        mixed = (weighted * mask).sum(axis=0)
        divisor = (w * mask).sum(axis=0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(axis=0)
        divisor = np.full(base.shape, w.sum())
        divisor[np.abs(divisor) < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    return base + lam * mixed


# ---------------------------------------------------------------- the other mergekit methods

def linear(xs, weights, normalize=True):
    w = np.array(weights, dtype=np.float64)
    res = sum(w[i] * xs[i].astype(np.float64) for i in range(len(xs)))
    return res / w.sum() if normalize else res


def slerp(t, v0, v1, dot_threshold=0.9995, eps=1e-8):
    a, b = v0.astype(np.float64), v1.astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua = a / na if na > eps else a
    ub = b / nb if nb > eps else b
    dot = np.sum(ua * ub)
    if abs(dot) > dot_threshold:
        return (1 - t) * a + t * b
    theta = math.acos(dot)
    return math.sin(theta - theta * t) / math.sin(theta) * a + math.sin(theta * t) / math.sin(theta) * b


def nuslerp_vectors(t, v0, v1, eps=1e-8):
    """Row-by-row SLERP of the last axis; (nearly) colinear rows interpolate linearly."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-7)
    cos = np.clip(np.sum(unit(v0) * unit(v1), axis=-1, keepdims=True), -1, 1)
    theta = np.arccos(cos)
    sin = np.sin(theta)
    colinear = np.abs(sin) < eps
    with np.errstate(divide="ignore", invalid="ignore"):
        res = (np.sin((1 - t) * theta) * v0 + np.sin(t * theta) * v1) / sin
    return np.where(colinear, (1 - t) * v0 + t * v1, res)


def nuslerp(base, xs, weights, row_wise=False, flatten=True):
    if len(xs) != 2:
        raise ValueError("nuslerp takes two models")
    total = weights[0] + weights[1]
    t = 0.5 if abs(total) < 1e-6 else weights[1] / total
    v0, v1 = (xs[0].astype(np.float64), xs[1].astype(np.float64))
    if base is not None:
        v0, v1 = v0 - base, v1 - base
    shape = v0.shape
    if flatten:
        res = nuslerp_vectors(t, v0.reshape(1, -1), v1.reshape(1, -1)).reshape(shape)
    elif row_wise and v0.ndim > 1:
        res = np.swapaxes(nuslerp_vectors(t, np.swapaxes(v0, 0, -1), np.swapaxes(v1, 0, -1)), 0, -1)
    else:
        res = nuslerp_vectors(t, v0, v1)
    return res if base is None else base + res


def multislerp(base, xs, weights, normalize_weights=True, eps=1e-8):
    if len(xs) == 1:
        return xs[0].astype(np.float64)
    vs = np.stack([x.astype(np.float64) for x in xs])
    if base is not None:
        vs = vs - base
    flat = vs.reshape(len(xs), -1)
    w = np.array(weights, dtype=np.float64)
    if normalize_weights:
        w = w / w.sum()
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    units = flat / (norms + eps)
    mean = (units * w[:, None]).sum(0)
    mean_norm = np.linalg.norm(mean)
    if mean_norm < eps:
        raise ValueError("antipodal inputs")
    mean = mean / mean_norm
    dots = (units * mean).sum(-1, keepdims=True)
    tangent = ((units - dots * mean) * w[:, None]).sum(0)
    tn = np.linalg.norm(tangent) + eps
    res = (mean * math.cos(tn) + tangent * (math.sin(tn) / tn)) * (norms[:, 0] * w).sum()
    res = res.reshape(xs[0].shape)
    return res if base is None else base + res


def karcher(xs, max_iter=10, tol=1e-5):
    alphas = [1.0 / len(xs)] * len(xs)
    vs = [x.astype(np.float64).reshape(-1) for x in xs]
    norms = [float(np.linalg.norm(v)) for v in vs]
    units = [v / n if n != 0 else np.zeros_like(v) for v, n in zip(vs, norms)]
    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return np.zeros(xs[0].shape)
    a_sum = sum(alphas[i] for i in valid)
    a = [alphas[i] / a_sum for i in valid]
    us = [units[i] for i in valid]
    u = sum(ai * ui for ai, ui in zip(a, us))
    nu = np.linalg.norm(u)
    u = us[0].copy() if nu < tol else u / nu
    for _ in range(max_iter):
        T = np.zeros_like(u)
        for ai, ui in zip(a, us):
            dot = min(max(float(np.dot(u, ui)), -1.0), 1.0)
            theta = math.acos(dot)
            if theta < tol:
                continue
            T += ai * (theta / math.sin(theta)) * (ui - dot * u)
        nT = np.linalg.norm(T)
        if nT < tol:
            break
        u = math.cos(nT) * u + math.sin(nT) * (T / nT)
        un = np.linalg.norm(u)
        if un > tol:
            u = u / un
    return (sum(ai * n for ai, n in zip(alphas, norms)) * u).reshape(xs[0].shape)


def model_stock(base, xs, filter_wise=False):
    b = base.astype(np.float64)
    ws = [x.astype(np.float64) for x in xs]
    shape = b.shape
    if filter_wise:  # vectors along the last axis (a 1-D tensor is one vector), as mergekit's dim=-1
        if b.ndim == 1:
            b, ws = b[None, :], [w[None, :] for w in ws]
    else:
        b, ws = b.reshape(-1), [w.reshape(-1) for w in ws]
    offs = [w - b for w in ws]
    cos = []
    for i in range(len(offs)):
        for j in range(i + 1, len(offs)):
            n = np.linalg.norm(offs[i], axis=-1) * np.linalg.norm(offs[j], axis=-1)
            cos.append(np.clip((offs[i] * offs[j]).sum(-1) / np.maximum(n, 1e-6), -1, 1))
    c = np.mean(np.stack(cos), axis=0)[..., None] if filter_wise else np.mean(cos)
    n = len(ws)
    t = n * c / (1 + (n - 1) * c)
    return (t * (sum(ws) / n) + (1 - t) * b).reshape(shape)


def nearswap(base, x, t):
    a, b = base.astype(np.float64), x.astype(np.float64)
    w = np.clip(t / np.maximum(np.abs(a - b), 1e-6), 0, 1)
    return w * b + (1 - w) * a


def arcee_fusion(base, x):
    """Importance |x − base|·KL(softmax(x) ‖ softmax(base)) by rows (last axis); keep where ≥ median + 1.5·IQR."""
    a, b = base.astype(np.float64), x.astype(np.float64)
    def softmax(v):
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    p = softmax(b) + 1e-8
    q = softmax(a) + 1e-8
    kl = np.sum(p * np.log(p / q), axis=-1)
    importance = np.abs(b - a) * np.expand_dims(kl, -1)
    s = np.sort(importance.reshape(-1))
    def quantile(qv):
        return s[int(np.float32(qv) * np.float32(s.size - 1))]
    threshold = quantile(0.5) + 1.5 * (quantile(0.75) - quantile(0.25))
    return a + (b - a) * (importance >= threshold)


def ram_vectors(base, xs, epsilon):
    taus = np.stack([(x - base).astype(np.float32).astype(np.float64).reshape(-1) for x in xs])
    nonzero = np.abs(taus) > epsilon
    counts = nonzero.sum(axis=0)
    return taus, nonzero, counts, counts > 1, counts == 1


def ram(base, xs, epsilon=1e-5):
    taus, nz, counts, overlap, unique = ram_vectors(base, xs, epsilon)
    tz = taus * nz
    merged = (tz * unique + tz * overlap / np.maximum(counts, 1)).sum(axis=0)
    return base + merged.reshape(base.shape)


def ramplus_tl(base, xs, r=0.1, alpha=0.2, epsilon=1e-5):
    taus, nz, counts, overlap, unique = ram_vectors(base, xs, epsilon)
    shared = (nz & overlap).sum(axis=1)
    uniq = (nz & unique).sum(axis=1)
    rho = shared / np.maximum(uniq, epsilon)
    lam = 1 + r * np.clip(rho, 0, alpha)
    tz = taus * nz
    merged = (tz * unique * lam[:, None] + tz * overlap / np.maximum(counts, 1)).sum(axis=0)
    return base + merged.reshape(base.shape)


def sce(base, xs, select_topk=1.0):
    tvs = np.stack([(x - base).astype(np.float32).astype(np.float64) for x in xs])
    if select_topk < 1:
        if select_topk <= 0:
            mask = np.zeros(base.shape, dtype=bool)
        else:
            var = tvs.var(axis=0).astype(np.float32)  # ranked in fp32, as mergekit's fp32 tensors are
            k = int(np.count_nonzero(var) * select_topk)
            mask = topk_mask(np.abs(var), k)
        tvs = tvs * mask
    majority = np.where(tvs.sum(axis=0) >= 0, 1.0, -1.0)
    erase = np.sign(tvs) == majority
    weights = np.mean(tvs.reshape(len(xs), -1) ** 2, axis=1)
    total = weights.sum()
    weights = np.full(len(xs), 1.0 / len(xs)) if abs(total) < 1e-6 else weights / total
    erased = weights.reshape((-1,) + (1,) * base.ndim) * erase
    return base + (tvs * erased).sum(axis=0) / np.maximum(erased.sum(axis=0), 1e-6)


def magnitude_prune(base, xs, weights, densities):
    """PEFT's magnitude_prune: base + Σ wᵢ·topk_{int(dᵢ·M)}(τᵢ) (no rescale; PEFT takes one density for all)."""
    res = base.astype(np.float64).copy()
    for x, w, d in zip(xs, weights, densities):
        res += w * magnitude((x - base).astype(np.float32), d)
    return res


# ---------------------------------------------------------------- cases

def gta_case(method, consensus, sparsifier, normalize, rescale):
    def run(tensor_name, tensor_id, base, xs, g, per):
        norm = "l1" if g.get("rescale", rescale) else None
        seed = g.get("seed", 0)
        def sp(tau, density, i, **_):
            if sparsifier is None:
                return tau.astype(np.float64)
            if sparsifier == "magnitude":
                return magnitude(tau, density, norm)
            if sparsifier == "random":
                return bernoulli(tau, density, norm, seed, tensor_id, i)
            if sparsifier == "outliers":
                return magnitude_outliers(tau, density, per[i].get("gamma", 0.01), norm)
            return della_magprune(tau, density, per[i].get("epsilon", 0.15), norm, seed, tensor_id, i)
        weights = [p["weight"] for p in per]
        densities = [p.get("density", 1.0) for p in per]
        return gta(base, xs, weights, densities, sp, consensus, g.get("normalize", normalize), g.get("lambda", 1.0))
    return run


METHODS = {
    "linear": lambda n, i, b, xs, g, per: linear(xs, [p["weight"] for p in per], g.get("normalize", True)),
    "task_arithmetic": gta_case("task_arithmetic", False, None, False, False),
    "ties": gta_case("ties", True, "magnitude", True, False),
    "dare_ties": gta_case("dare_ties", True, "random", False, True),
    "dare_linear": gta_case("dare_linear", False, "random", False, True),
    "breadcrumbs": gta_case("breadcrumbs", False, "outliers", False, False),
    "breadcrumbs_ties": gta_case("breadcrumbs_ties", True, "outliers", False, False),
    "della": gta_case("della", True, "della", True, True),
    "della_linear": gta_case("della_linear", False, "della", False, True),
    "sce": lambda n, i, b, xs, g, per: sce(b, xs, g.get("select_topk", 1.0)),
    "slerp": lambda n, i, b, xs, g, per: slerp(g["t"], b, xs[0]),
    "nuslerp": lambda n, i, b, xs, g, per: nuslerp(b, xs, [p["weight"] for p in per],
                                                  g.get("nuslerp_row_wise", False), g.get("nuslerp_flatten", True)),
    "multislerp": lambda n, i, b, xs, g, per: multislerp(b, xs, [p["weight"] for p in per], g.get("normalize_weights", True)),
    "karcher": lambda n, i, b, xs, g, per: karcher(xs + ([b] if b is not None else []), g.get("max_iter", 10), g.get("tol", 1e-5)),
    "model_stock": lambda n, i, b, xs, g, per: model_stock(b, xs, g.get("filter_wise", False)),
    "nearswap": lambda n, i, b, xs, g, per: nearswap(b, xs[0], g["t"]),
    "arcee_fusion": lambda n, i, b, xs, g, per: arcee_fusion(b, xs[0]),
    "ram": lambda n, i, b, xs, g, per: ram(b, xs, g.get("epsilon", 1e-5)),
    "ramplus_tl": lambda n, i, b, xs, g, per: ramplus_tl(b, xs, g.get("r", 0.1), g.get("alpha", 0.2), g.get("epsilon", 1e-5)),
    "magnitude_prune": lambda n, i, b, xs, g, per: magnitude_prune(b, xs, [p["weight"] for p in per], [p.get("density", 1.0) for p in per]),
}

# name: (method, uses base, models, global parameters, per-model parameters)
W3 = [{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2}]
CASES = {
    "linear": ("linear", False, ["ft1", "ft2", "ft3"], {}, [{"weight": 1.0}, {"weight": 2.0}, {"weight": 0.5}]),
    "linear_raw": ("linear", False, ["ft1", "ft2"], {"normalize": False}, [{"weight": 0.7}, {"weight": 0.6}]),
    "task_arithmetic": ("task_arithmetic", True, ["ft1", "ft2", "ft3"], {"lambda": 0.8}, W3),
    "ties": ("ties", True, ["ft1", "ft2", "ft3"], {}, [{"weight": 1.0, "density": 0.5}, {"weight": 0.6, "density": 0.3}, {"weight": 0.8, "density": 0.2}]),
    "ties_raw": ("ties", True, ["ft1", "ft2", "ft3"], {"normalize": False, "lambda": 0.7}, [{"weight": 0.5, "density": 0.4}] * 3),
    "dare_ties": ("dare_ties", True, ["ft1", "ft2", "ft3"], {}, [{"weight": 0.5, "density": 0.5}, {"weight": 0.4, "density": 0.3}, {"weight": 0.3, "density": 0.7}]),
    "dare_linear": ("dare_linear", True, ["ft1", "ft2", "ft3"], {"seed": 7}, [{"weight": 0.6, "density": 0.4}, {"weight": 0.3, "density": 0.6}, {"weight": 0.5, "density": 0.2}]),
    "dare_linear_norescale": ("dare_linear", True, ["ft1", "ft2"], {"rescale": False}, [{"weight": 0.5, "density": 0.5}] * 2),
    "breadcrumbs": ("breadcrumbs", True, ["ft1", "ft2", "ft3"], {}, [{"weight": 0.5, "density": 0.6, "gamma": 0.05}, {"weight": 0.4, "density": 0.8, "gamma": 0.1}, {"weight": 0.3, "density": 0.5}]),
    "breadcrumbs_ties": ("breadcrumbs_ties", True, ["ft1", "ft2", "ft3"], {"lambda": 1.2}, [{"weight": 0.5, "density": 0.6, "gamma": 0.05}, {"weight": 0.4, "density": 0.8, "gamma": 0.1}, {"weight": 0.3, "density": 0.5, "gamma": 0.2}]),
    "della": ("della", True, ["ft1", "ft2", "ft3"], {}, [{"weight": 1.0, "density": 0.5, "epsilon": 0.1}, {"weight": 0.7, "density": 0.4}, {"weight": 0.5, "density": 0.6, "epsilon": 0.3}]),
    "della_linear": ("della_linear", True, ["ft1", "ft2", "ft3"], {"seed": 3, "lambda": 0.9}, [{"weight": 0.5, "density": 0.5, "epsilon": 0.1}, {"weight": 0.4, "density": 0.4}, {"weight": 0.3, "density": 0.7, "epsilon": 0.2}]),
    "sce": ("sce", True, ["ft1", "ft2", "ft3"], {}, [{}, {}, {}]),
    "sce_topk": ("sce", True, ["ft1", "ft2", "ft3"], {"select_topk": 0.3}, [{}, {}, {}]),
    "slerp": ("slerp", True, ["ft1"], {"t": 0.3}, [{}]),
    "nuslerp": ("nuslerp", False, ["ft1", "ft2"], {}, [{"weight": 0.7}, {"weight": 0.3}]),
    "nuslerp_base_rows": ("nuslerp", True, ["ft1", "ft2"], {"nuslerp_flatten": False, "nuslerp_row_wise": True}, [{"weight": 1.0}, {"weight": 3.0}]),
    "nuslerp_columns": ("nuslerp", False, ["ft2", "ft3"], {"nuslerp_flatten": False}, [{"weight": 0.4}, {"weight": 0.6}]),
    "multislerp": ("multislerp", False, ["ft1", "ft2", "ft3"], {}, [{"weight": 0.5}, {"weight": 0.2}, {"weight": 0.3}]),
    "multislerp_base": ("multislerp", True, ["ft1", "ft2", "ft3"], {}, [{"weight": 1.0}, {"weight": 1.0}, {"weight": 2.0}]),
    "karcher": ("karcher", False, ["ft1", "ft2", "ft3"], {}, [{}, {}, {}]),
    "karcher_base": ("karcher", True, ["ft1", "ft2"], {"max_iter": 20, "tol": 1e-7}, [{}, {}]),
    "model_stock": ("model_stock", True, ["ft1", "ft2", "ft3"], {}, [{}, {}, {}]),
    "model_stock_rows": ("model_stock", True, ["ft1", "ft2", "ft3"], {"filter_wise": True}, [{}, {}, {}]),
    "nearswap": ("nearswap", True, ["ft1"], {"t": 0.01}, [{}]),
    "arcee_fusion": ("arcee_fusion", True, ["ft2"], {}, [{}]),
    "ram": ("ram", True, ["ft1", "ft2", "ft3"], {"epsilon": 0.01}, [{}, {}, {}]),
    "ramplus_tl": ("ramplus_tl", True, ["ft1", "ft2", "ft3"], {"epsilon": 0.01, "r": 0.5, "alpha": 0.5}, [{}, {}, {}]),
    "ties_filters": ("ties", True, ["ft1", "ft2", "ft3"],
                     {"density": [{"filter": "fc.", "value": 0.9}, {"value": 0.3}], "weight": 0.5},
                     [{"density": [{"filter": "Conv_29", "value": 0.6}]}, {"weight": [{"filter": "bias", "value": 1.5}]}, {}]),
    "magnitude_prune": ("magnitude_prune", True, ["ft1", "ft2", "ft3"], {}, [{"weight": 0.5, "density": 0.3}, {"weight": 0.3, "density": 0.3}, {"weight": 0.4, "density": 0.3}]),
}


def evaluate(setting, tensor_name):
    """mergekit's parameter conditionals: a list of {filter, value} takes the first whose filter is absent, '*' or
    a substring of the tensor name; None when none matches (the next level decides)."""
    if isinstance(setting, list):
        for cond in setting:
            f = cond.get("filter")
            if f is None or f == "*" or f in tensor_name:
                return cond["value"]
        return None
    return setting


def resolve(g, per, tensor_name):
    """Per-model values first, then global ones (mergekit's lookup order), conditionals evaluated for this tensor."""
    rg = {k: v for k, v in ((k, evaluate(v, tensor_name)) for k, v in g.items()) if v is not None}
    rper = []
    for p in per:
        own = {k: v for k, v in ((k, evaluate(v, tensor_name)) for k, v in p.items()) if v is not None}
        rper.append({**rg, **own})
    return rg, rper


def load(name):
    model = onnx.load(os.path.join(MODEL_DIR, name + ".onnx"))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT}


def config_text(method, uses_base, models, g, per):
    rel = os.path.relpath(MODEL_DIR, OUT)
    cfg = {"merge_method": method}
    if uses_base:
        cfg["base_model"] = f"{rel}/base.onnx"
    entries = []
    for m, p in zip(models, per):
        entry = {"model": f"{rel}/{m}.onnx"}
        if p:
            entry["parameters"] = dict(p)
        entries.append(entry)
    cfg["models"] = entries
    if g:
        cfg["parameters"] = dict(g)
    cfg["dtype"] = "float32"
    return "# generated by scripts/merging/reference_merges.py\n" + yaml.safe_dump(cfg, sort_keys=False)


def main():
    with open(CANONICAL_KEYS_FILE) as f:
        keys = json.load(f)
    models = {m: load(m) for m in ["base", "ft1", "ft2", "ft3"]}
    os.makedirs(OUT, exist_ok=True)
    for name, (method, uses_base, chosen, g, per) in CASES.items():
        expected = {}
        for tensor_name, base in models["base"].items():
            xs = [models[m][tensor_name] for m in chosen]
            rg, rper = resolve(g, per, tensor_name)
            value = METHODS[method](tensor_name, fnv1a(keys[tensor_name]), base if uses_base else None, xs, rg, rper)
            expected[tensor_name] = np.asarray(value, dtype=np.float64).astype(np.float32)
        np.savez(os.path.join(OUT, name + ".npz"), **expected)
        with open(os.path.join(OUT, name + ".yml"), "w") as f:
            f.write(config_text(method, uses_base, chosen, g, per))
    print(f"wrote {len(CASES)} cases to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
