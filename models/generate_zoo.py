#!/usr/bin/python3
"""Generate the Recycling model zoo: real fine-tunings of one base per architecture, exported to ONNX,
with Fisher files, evaluation data and the PyTorch reference results of the recycling study.

Run with Debian's interpreter (python3-torch 1.13 CPU, python3-onnx, numpy):

    /usr/bin/python3 models/generate_zoo.py [--out models] [--only cnn|vit] [--quick]

Deterministic: fixed seeds, torch.set_num_threads(1), torch.use_deterministic_algorithms(True); two runs
on the same machine/torch build give bit-identical weights, hence identical accuracies and file hashes.
See models/README.md for the protocol.
"""
import argparse
import gzip
import hashlib
import io
import json
import math
import os
import struct
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper
from torch.nn.utils.fusion import fuse_conv_bn_eval

# One intra-op thread: on the shared 2-core machine (load average often > 10) OpenMP threads of one process
# stall each other at barriers; a fixed thread count also keeps float reductions in a fixed order.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

FMNIST = "/usr/share/datasets/fashion-mnist"
TRAIN_DOMAINS = [0, 15, 30, 45, 60]
OOD_DOMAIN = 75
OPSET = 17

# Sizes (images). The 60k training set feeds pretraining / auxiliary / target training; the 10k test set
# feeds the shipped evaluation splits only, so shipped images were never trained on.
PRETRAIN_POOL = 20000          # train-set images kept for the base and the auxiliary tasks (upright)
TARGET_TRAIN = 5000            # train-set images for the target task, 1000 per training domain
FISHER_IMAGES = 1000           # target-training images used for every Fisher estimate
PROBE_TRAIN, VAL, OOD = 2000, 2000, 2000   # shipped splits, from the test set (disjoint)
BATCH = 128

ARCH = {
    "cnn": dict(base_epochs=2, base_lr=2e-3, aux_images=4000, aux_lr=5e-4,
                ft_epochs=10, ft_lr=(1e-4, 3e-4), lp_steps=20, lp_lr=1e-2),
    "vit": dict(base_epochs=2, base_lr=2e-3, aux_images=4000, aux_lr=3e-4,
                ft_epochs=14, ft_lr=(1e-4, 3e-4), lp_steps=20, lp_lr=1e-2),
}

# Auxiliary tasks (role "auxiliary"): name -> (number of classes, description)
AUX_TASKS = {
    "invert": (10, "10-way classification of inverted images (1 - x)"),
    "coarse4": (4, "4-way coarse labels: tops {0,2,4,6}, trouser/dress {1,3}, footwear {5,7,9}, bag {8}"),
    "blur": (10, "10-way classification of Gaussian-blurred images (sigma 1.5, 7x7)"),
    "noise": (10, "10-way classification with additive Gaussian noise (sigma 0.3, clamped to [0,1])"),
    "rot90": (10, "10-way classification of images rotated by 90 degrees"),
    "subset5": (5, "5-way classification restricted to classes 0-4"),
    "rotpred4": (4, "self-supervised: predict the rotation (0/90/180/270) of upright images"),
    "flipv": (10, "10-way classification of vertically flipped images"),
}
COARSE = torch.tensor([0, 1, 0, 1, 0, 2, 0, 2, 3, 2])


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------------------------------------- data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def rotate_u8(images, degrees):
    """Rotate uint8 [N,28,28] images counter-clockwise by `degrees` (bilinear, zero fill), quantised to uint8."""
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    out = torch.empty_like(x)
    for d in sorted(set(degrees.tolist())):
        idx = torch.from_numpy(np.nonzero(degrees == d)[0])
        t = math.radians(d)
        theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
                             dtype=torch.float32).expand(len(idx), 2, 3)
        grid = F.affine_grid(theta, (len(idx), 1, 28, 28), align_corners=False)
        out[idx] = F.grid_sample(x[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def make_data():
    tr_x, tr_y = read_idx(f"{FMNIST}/train-images-idx3-ubyte.gz"), read_idx(f"{FMNIST}/train-labels-idx1-ubyte.gz")
    te_x, te_y = read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz"), read_idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")
    rng = np.random.RandomState(20260101)
    perm = rng.permutation(len(tr_x))
    pre = perm[:PRETRAIN_POOL]
    tgt = perm[PRETRAIN_POOL:PRETRAIN_POOL + TARGET_TRAIN]
    data = {"pretrain": (tr_x[pre][:, None], tr_y[pre].astype(np.int64), np.zeros(len(pre), np.int64))}
    dom = np.array(TRAIN_DOMAINS)[np.arange(TARGET_TRAIN) % len(TRAIN_DOMAINS)]
    data["target_train"] = (rotate_u8(tr_x[tgt], dom), tr_y[tgt].astype(np.int64), dom.astype(np.int64))
    tperm = np.random.RandomState(20260102).permutation(len(te_x))
    start = 0
    for name, n, ood in (("probe_train", PROBE_TRAIN, False), ("val", VAL, False), ("ood_test", OOD, True)):
        idx = tperm[start:start + n]
        start += n
        d = np.full(n, OOD_DOMAIN) if ood else np.array(TRAIN_DOMAINS)[np.arange(n) % len(TRAIN_DOMAINS)]
        data[name] = (rotate_u8(te_x[idx], d), te_y[idx].astype(np.int64), d.astype(np.int64))
    return data


def to_float(images_u8):
    return torch.from_numpy(images_u8).float().div_(255.0)


# --------------------------------------------------------------------------------------------- models
class CNN(nn.Module):
    """3 conv blocks (16-32-64) with BatchNorm; features = global average pool of the last block."""

    def __init__(self, num_classes=10):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

        self.block1, self.block2, self.block3 = block(1, 16), block(16, 32), block(32, 64)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(64, num_classes)

    def body(self, x):
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        return self.block3(x).mean(dim=(2, 3))

    def forward(self, x):
        f = self.body(x)
        return self.head(f), f


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5
        return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Patch 7 (16 patches) + class token, dim 48, 2 pre-norm encoder blocks (4 heads, MLP 96), final LayerNorm;
    features = normalised class token."""

    def __init__(self, num_classes=10, dim=48, patch=7):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (28 // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(EncoderBlock(dim, 4, 2 * dim), EncoderBlock(dim, 4, 2 * dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def body(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x)[:, 0])

    def forward(self, x):
        f = self.body(x)
        return self.head(f), f


def new_model(arch, num_classes):
    return CNN(num_classes) if arch == "cnn" else ViT(num_classes)


class FusedCNN(nn.Module):
    """The CNN with BatchNorm folded into the convolutions: the computation the ONNX export contains."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        f = F.relu(self.conv3(x)).mean(dim=(2, 3))
        return self.head(f), f


def fused_copy(model):
    """Equivalent model whose parameters are the ones the ONNX export holds (CNN: BN folded; ViT: itself)."""
    if isinstance(model, ViT):
        return model
    m = model.eval()
    fused = FusedCNN(m.head.out_features)
    for i, blk in enumerate((m.block1, m.block2, m.block3), start=1):
        setattr(fused, f"conv{i}", fuse_conv_bn_eval(blk[0], blk[1]))
    fused.head.load_state_dict(m.head.state_dict())
    return fused.eval()


def onnx_equivalent(arch, num_classes):
    return FusedCNN(num_classes) if arch == "cnn" else ViT(num_classes)


# ------------------------------------------------------------------------------------------- training
def transform_aux(task, x, y, gen):
    """x float [B,1,28,28] upright, y fine labels -> (inputs, labels) of the auxiliary task."""
    if task == "invert":
        return 1.0 - x, y
    if task == "coarse4":
        return x, COARSE[y]
    if task == "blur":
        k = torch.exp(-0.5 * (torch.arange(7, dtype=torch.float32) - 3) ** 2 / 1.5 ** 2)
        k = k / k.sum()
        return F.conv2d(F.conv2d(x, k.view(1, 1, 1, 7), padding=(0, 3)), k.view(1, 1, 7, 1), padding=(3, 0)), y
    if task == "noise":
        return (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1), y
    if task == "rot90":
        return torch.rot90(x, 1, (2, 3)), y
    if task == "rotpred4":
        r = torch.randint(0, 4, (x.shape[0],), generator=gen)
        out = torch.stack([torch.rot90(x[i], int(r[i]), (1, 2)) for i in range(x.shape[0])])
        return out, r
    if task == "subset5":
        return x, y
    if task == "flipv":
        return torch.flip(x, (2,)), y
    raise ValueError(task)


def run_epochs(model, params, images, labels, *, steps, lr, wd, seed, aux_task=None, keep=None, on_epoch=None):
    """AdamW, batch 128, constant lr, data order drawn from `seed`. `keep` filters labels (label subset).
    `on_epoch` is called after each full pass over the data."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    n, step = len(images), 0
    model.train()
    while step < steps:
        order = torch.randperm(n, generator=gen)
        for s in range(0, n - BATCH + 1, BATCH):
            idx = order[s:s + BATCH]
            x, y = to_float(images[idx.numpy()]), torch.from_numpy(labels[idx.numpy()])
            if keep is not None:
                m = y < keep
                x, y = x[m], y[m]
            if aux_task is not None:
                x, y = transform_aux(aux_task, x, y, gen)
            loss = F.cross_entropy(model(x)[0], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        if on_epoch is not None and s + 2 * BATCH > n:
            model.eval()
            on_epoch()
            model.train()
    model.eval()


@torch.no_grad()
def predict(model, images, batch=500):
    model.eval()
    logits, feats = [], []
    for s in range(0, len(images), batch):
        lo, fe = model(to_float(images[s:s + batch]) if isinstance(images, np.ndarray) else images[s:s + batch])
        logits.append(lo)
        feats.append(fe)
    return torch.cat(logits), torch.cat(feats)


def accuracy(logits, labels):
    return float((logits.argmax(1) == torch.from_numpy(labels)).double().mean() * 100)


# ------------------------------------------------------------------------------------- linear probe
PROBE_L2 = 1e-3


def linear_probe(train_feats, train_labels, num_classes):
    """Multinomial logistic regression on standardised features: minimise mean cross-entropy
    + PROBE_L2/2 * ||W||^2 (bias not penalised), full-batch L-BFGS (strong Wolfe) in float64 from zero.
    Returns (W, b) acting on RAW features (standardisation folded in), float64."""
    x = train_feats.double()
    mu, sd = x.mean(0), x.std(0, unbiased=False)
    sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))
    z = (x - mu) / sd
    y = torch.from_numpy(train_labels)
    w = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=1000, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * PROBE_L2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / sd).detach()
    return w_raw, (b - w_raw @ mu).detach()


def probe_accuracies(feats, data, num_classes=10):
    w, b = linear_probe(feats["probe_train"], data["probe_train"][1], num_classes)
    return {s: accuracy(feats[s].double() @ w.T + b, data[s][1]) for s in ("probe_train", "val", "ood_test")}


# --------------------------------------------------------------------------------------------- export
def export_onnx(model, path):
    model.eval()
    buf = io.BytesIO()
    torch.onnx.export(model, torch.zeros(2, 1, 28, 28), buf, input_names=["input"],
                      output_names=["logits", "features"], opset_version=OPSET,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})
    write_atomic(path, buf.getvalue())


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def onnx_float_tensors(path):
    """All float tensors of the export by name, Identity aliases resolved to the survivor's array."""
    g = onnx.load(path).graph
    t = {i.name: numpy_helper.to_array(i) for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in t}
    return t, alias


def map_onnx_to_torch(onnx_tensors, torch_model, path):
    """Map each parameter of the ONNX-equivalent torch model to (ONNX initializer name, transposed?) by value.
    Deduplicated parameters (the exporter keeps one and adds Identity nodes) map to the survivor. Every
    parameter must be found and every float initializer must be used."""
    mapping = {}
    for pname, p in torch_model.state_dict().items():
        p = p.detach().numpy()
        best = None
        for oname, arr in onnx_tensors.items():
            for tr, cand in ((False, p), (True, p.T if p.ndim == 2 else None)):
                if cand is None or cand.shape != arr.shape:
                    continue
                err = float(np.abs(cand - arr).max()) / (float(np.abs(cand).max()) + 1e-12)
                if err < 1e-5 and (best is None or err < best[2]):
                    best = (oname, tr, err)
        if best is None:
            raise RuntimeError(f"{path}: parameter {pname} matches no initializer")
        mapping[pname] = (best[0], best[1])
    unused = set(onnx_tensors) - {o for o, _ in mapping.values()}
    if unused:
        raise RuntimeError(f"{path}: initializers matching no parameter: {sorted(unused)}")
    return mapping


def load_onnx_weights(torch_model, onnx_tensors, mapping):
    sd = {}
    for pname, (oname, tr) in mapping.items():
        arr = onnx_tensors[oname]
        sd[pname] = torch.from_numpy(np.array(arr.T if tr else arr))
    torch_model.load_state_dict(sd, strict=True)
    return torch_model.eval()


# --------------------------------------------------------------------------------------------- fisher
def per_sample_sq_grads(model, x, pick):
    """Sum over the batch of squared per-sample gradients of pick(log_softmax(logits)) (one scalar per sample),
    for every parameter of `model` (FusedCNN or ViT in eval mode, where samples do not interact).
    Per-sample gradients are rebuilt from each module's input and output gradient (Conv2d, Linear,
    LayerNorm) and, for the ViT's class token and position embedding, from the gradient of the embedded tokens."""
    saved, hooks = {}, []

    def fwd(mod, inp, out):
        saved[mod] = [inp[0].detach(), None]
        out.register_hook(lambda g, mod=mod: saved[mod].__setitem__(1, g.detach()))

    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.LayerNorm))]
    for m in mods:
        hooks.append(m.register_forward_hook(fwd))
    tokens = {}
    if isinstance(model, ViT):
        def body(x_):
            t = model.patch_embed(x_).flatten(2).transpose(1, 2)
            t = torch.cat([model.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + model.pos_embed
            t.register_hook(lambda g: tokens.__setitem__("g", g.detach()))
            return model.norm(model.blocks(t)[:, 0])
        f = body(x)
        logits = model.head(f)
    else:
        logits, _ = model(x)
    lp = F.log_softmax(logits, -1)
    pick(lp).sum().backward()
    for h in hooks:
        h.remove()
    out = {}
    b = x.shape[0]
    names = {m: n for n, m in model.named_modules()}
    for m in mods:
        a, g = saved[m]
        n = names[m]
        if isinstance(m, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
            ap = F.pad(a, (pw, pw, ph, ph))
            ho, wo = g.shape[2], g.shape[3]
            # im2col by strided slices (torch's unfold is very slow on this CPU build)
            cols = torch.stack([torch.stack([ap[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                                             for j in range(kw)], 2) for i in range(kh)], 2)  # [B,C,kh,kw,Ho,Wo]
            gw = torch.einsum("bohw,bcijhw->bocij", g, cols)
            gb = g.sum(dim=(2, 3))
        elif isinstance(m, nn.Linear):
            a3, g3 = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
            gw, gb = torch.einsum("bto,bti->boi", g3, a3), g3.sum(1)
        else:
            xhat = (a - a.mean(-1, keepdim=True)) / torch.sqrt(a.var(-1, unbiased=False, keepdim=True) + m.eps)
            g3, x3 = g.reshape(b, -1, g.shape[-1]), xhat.reshape(b, -1, a.shape[-1])
            gw, gb = (g3 * x3).sum(1), g3.sum(1)
        out[f"{n}.weight"], out[f"{n}.bias"] = (gw ** 2).sum(0), (gb ** 2).sum(0)
    if isinstance(model, ViT):
        g = tokens["g"]
        out["pos_embed"] = (g ** 2).sum(0, keepdim=True)
        out["cls_token"] = (g[:, :1] ** 2).sum(0, keepdim=True)
    model.zero_grad(set_to_none=True)
    return out


def fisher_diag(fused_model, images, seed, batch=250):
    """Sampled diagonal Fisher: mean over images of (d log p(y|x) / d theta)^2 with y ~ p(.|x) (one draw per
    image, drawn from a generator seeded per model). Checked against a per-image autograd loop on 3 images
    (rtol 1e-3, atol 1e-5 of the largest entry: fp32 cancellation in near-zero gradients fails tighter bounds)."""
    gen = torch.Generator().manual_seed(seed)
    fused_model.eval()
    params = dict(fused_model.named_parameters())
    acc = {k: torch.zeros_like(p) for k, p in params.items()}
    x_all = to_float(images)
    ys = []
    for s in range(0, len(x_all), batch):
        x = x_all[s:s + batch]
        with torch.no_grad():
            p = F.softmax(fused_model(x)[0], -1)
        y = torch.multinomial(p, 1, generator=gen)[:, 0]
        ys.append(y)
        sq = per_sample_sq_grads(fused_model, x, lambda lp, y=y: lp.gather(1, y[:, None])[:, 0])
        if set(sq) != set(params):
            raise RuntimeError(f"per-sample gradients missing for {set(params) - set(sq)}")
        for k in acc:
            acc[k] += sq[k].reshape(acc[k].shape)
    # independent check of the per-sample machinery on the first three images
    y0 = ys[0]
    check = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(3):
        lp = F.log_softmax(fused_model(x_all[i:i + 1])[0], -1)[0]
        for k, g in zip(params, torch.autograd.grad(lp[int(y0[i])], list(params.values()))):
            check[k] += g * g
    fast = per_sample_sq_grads(fused_model, x_all[:3], lambda lp: lp.gather(1, y0[:3, None])[:, 0])
    for k in params:
        ref = check[k]
        if not torch.allclose(fast[k].reshape(ref.shape), ref, rtol=1e-3, atol=1e-5 * float(ref.abs().max() + 1e-12)):
            raise RuntimeError(f"per-sample gradient check failed for {k}")
    return {k: (v / len(x_all)).numpy().astype(np.float32) for k, v in acc.items()}


# -------------------------------------------------------------------------------------------- averages
def average_state_dicts(sds):
    out = {}
    for k in sds[0]:
        if k.endswith("num_batches_tracked"):
            out[k] = sds[0][k]
        else:
            out[k] = sum(sd[k].double() for sd in sds).div(len(sds)).float()
    return out


def average_arrays(dicts):
    return {k: (sum(d[k].astype(np.float64) for d in dicts) / len(dicts)).astype(np.float32) for k in dicts[0]}


# ------------------------------------------------------------------------------------------------ main
class Zoo:
    def __init__(self, out, data):
        self.out, self.data, self.models = out, data, []


def eval_splits(model, data):
    lv, fv = predict(model, data["val"][0])
    lo, fo = predict(model, data["ood_test"][0])
    return {"val": accuracy(lv, data["val"][1]), "ood_test": accuracy(lo, data["ood_test"][1])}, (lv, lo)


def build_arch(arch, data, out, quick):
    ckpt = os.path.join(out, f"_checkpoint_{arch}.pt")
    if os.path.exists(ckpt):
        # resume after a crash in the study: the models of this architecture are already built and exported
        log(f"{arch}: resuming from {ckpt}")
        c = torch.load(ckpt)
        study = recycling_study(arch, data, c["records"], c["state"], c["onnx_w"], c["targets"], c["aux"],
                                c["feats"], c["logits"])
        os.remove(ckpt)
        return c["records"], study
    cfg = dict(ARCH[arch], fisher_images=FISHER_IMAGES)
    if quick:
        cfg.update(base_epochs=1, aux_images=1024, ft_epochs=1, fisher_images=100)
    seed0 = 1000 if arch == "cnn" else 2000
    records, state, onnx_w, out_logits = [], {}, {}, {}
    n_target = len(data["target_train"][0]) if not quick else 512
    tgt_x, tgt_y = data["target_train"][0][:n_target], data["target_train"][1][:n_target]

    def save(name, model, role, parent, task, nc, hyper, seed, extra=None):
        path = os.path.join(out, f"{name}.onnx")
        export_onnx(model, path)
        accs, logits = eval_splits(model, data)
        state[name] = {k: v.clone() for k, v in model.state_dict().items()}
        tensors, alias = onnx_float_tensors(path)
        mapping = map_onnx_to_torch(tensors, fused_copy(model), path)
        onnx_w[name] = (tensors, mapping)
        out_logits[name] = logits
        # the ONNX weights loaded into the equivalent torch model must give the same logits
        check = data["val"][0][:500]
        diff = float((predict(load_onnx_weights(onnx_equivalent(arch, nc), tensors, mapping), check)[0]
                      - predict(model, check)[0]).abs().max())
        if diff > 1e-3:
            raise RuntimeError(f"{name}: ONNX weights in the equivalent torch model change the logits by {diff}")
        rec = dict(name=name, file=f"{name}.onnx", sha256=sha256(path), architecture=arch, role=role,
                   init=parent, task=task, num_classes=nc, hyperparameters=hyper, seed=seed,
                   accuracy=accs, onnx_weights_max_logit_diff=diff,
                   initializers=len(tensors), identity_aliases=len(alias))
        if extra:
            rec.update(extra)
        records.append(rec)
        log(f"{name}: val {accs['val']:.2f} ood {accs['ood_test']:.2f} (onnx weights: max logit diff {diff:.1e}) "
            f"{len(tensors)} initializers, {len(alias)} Identity")
        return logits

    # 1. base, pretrained on upright images of the pretraining pool
    torch.manual_seed(seed0)
    base = new_model(arch, 10)
    pre_x, pre_y, _ = data["pretrain"]
    steps = cfg["base_epochs"] * (len(pre_x) // BATCH) if not quick else 20
    if arch == "vit":
        # LayerNorm affine parameters stay at their initialisation (ones/zeros) during pretraining, so the
        # base export carries the exporter's Identity-deduplicated tensors (fine-tunings train them).
        params = [p for n, p in base.named_parameters() if ".norm" not in n and not n.startswith("norm.")]
        hyper_note = "LayerNorm affine frozen at init (ones/zeros)"
    else:
        params, hyper_note = list(base.parameters()), None
    run_epochs(base, params, pre_x, pre_y, steps=steps, lr=cfg["base_lr"], wd=0.05, seed=seed0)
    hb = dict(optimizer="AdamW", lr=cfg["base_lr"], weight_decay=0.05, batch=BATCH, steps=steps,
              data=f"pretrain pool ({len(pre_x)} upright train-set images)")
    if hyper_note:
        hb["note"] = hyper_note
    save(f"{arch}_base", base, "base", None, "fmnist10-upright", 10, hb, seed0)

    # 2. auxiliary fine-tunings (own heads, all parameters trained)
    aux_names = []
    for j, (task, (nc, desc)) in enumerate(AUX_TASKS.items()):
        seed = seed0 + 100 + j
        torch.manual_seed(seed)
        m = new_model(arch, nc)
        body = {k: v for k, v in state[f"{arch}_base"].items() if not k.startswith("head.")}
        m.load_state_dict(body, strict=False)
        keep = 5 if task == "subset5" else None
        steps = cfg["aux_images"] // BATCH
        run_epochs(m, list(m.parameters()), pre_x, pre_y, steps=steps, lr=cfg["aux_lr"], wd=0.0, seed=seed,
                   aux_task=task, keep=keep)
        name = f"{arch}_aux_{task}"
        aux_names.append(name)
        save(name, m, "auxiliary", f"{arch}_base", task, nc,
             dict(optimizer="AdamW", lr=cfg["aux_lr"], weight_decay=0.0, batch=BATCH, steps=steps,
                  data="pretrain pool, transformed per task", description=desc), seed)

    # features of the base on the shipped splits and the target training set
    feats = {}
    base_m = new_model(arch, 10)
    base_m.load_state_dict(state[f"{arch}_base"])
    for s in ("probe_train", "val", "ood_test"):
        feats[s] = predict(base_m, data[s][0])[1]
    # 3. shared linear-probe head: probe on base features of the target training set
    _, ftr = predict(base_m, tgt_x)
    w_lp, b_lp = linear_probe(ftr, tgt_y, 10)
    shared_head = {"head.weight": w_lp.float(), "head.bias": b_lp.float()}

    # 4. target fine-tunings. DiWA-style from the base; ratatouille-style from each auxiliary.
    starts = [(f"{arch}_base", k) for k in range(8)] + [(a, 0) for a in aux_names]
    target_names, fisher_idx = [], np.arange(0, len(tgt_x), max(1, len(tgt_x) // cfg["fisher_images"]))[:cfg["fisher_images"]]
    for j, (parent, k) in enumerate(starts):
        seed = seed0 + 500 + j
        rng = np.random.RandomState(seed)
        lr = float(math.exp(rng.uniform(math.log(cfg["ft_lr"][0]), math.log(cfg["ft_lr"][1]))))
        wd = float(rng.choice([0.0, 1e-4, 1e-3]))
        torch.manual_seed(seed)
        m = new_model(arch, 10)
        body = {kk: v for kk, v in state[parent].items() if not kk.startswith("head.")}
        m.load_state_dict({**body, **shared_head})
        hyper = dict(optimizer="AdamW", lr=lr, weight_decay=wd, batch=BATCH, epochs=cfg["ft_epochs"],
                     data=f"target training set ({len(tgt_x)} train-set images, rotations {TRAIN_DOMAINS})",
                     head_init="shared linear-probe head (L-BFGS probe on base features)")
        if parent != f"{arch}_base":
            # short LP from the shared head on the auxiliary featurizer, then fine-tuning
            lp_params = list(m.head.parameters())
            # BN statistics must not move during the LP: keep the body in eval mode by training the head only
            gen = torch.Generator().manual_seed(seed + 7)
            opt = torch.optim.AdamW(lp_params, lr=cfg["lp_lr"], weight_decay=0.0)
            m.eval()
            for _ in range(cfg["lp_steps"]):
                idx = torch.randint(0, len(tgt_x), (BATCH,), generator=gen).numpy()
                with torch.no_grad():
                    f = m.body(to_float(tgt_x[idx]))
                loss = F.cross_entropy(m.head(f), torch.from_numpy(tgt_y[idx]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            hyper["lp"] = dict(optimizer="AdamW", lr=cfg["lp_lr"], steps=cfg["lp_steps"], batch=BATCH, trained="head only")
        steps = cfg["ft_epochs"] * (len(tgt_x) // BATCH)
        curve = []
        epochs_done = []

        def on_epoch():
            epochs_done.append(1)
            if len(epochs_done) < cfg["ft_epochs"]:   # the last epoch's value is the model's recorded val accuracy
                curve.append(round(accuracy(predict(m, data["val"][0])[0], data["val"][1]), 2))

        run_epochs(m, list(m.parameters()), tgt_x, tgt_y, steps=steps, lr=lr, wd=wd, seed=seed, on_epoch=on_epoch)
        hyper["steps"] = steps
        name = f"{arch}_target_{'diwa' if parent.endswith('_base') else 'rat'}{j:02d}"
        target_names.append(name)
        fis = fisher_diag(fused_copy(m), tgt_x[fisher_idx], seed + 13)
        save(name, m, "target", parent, "fmnist10-rotated", 10, hyper, seed)
        hyper["val_accuracy_per_epoch"] = curve + [round(records[-1]["accuracy"]["val"], 2)]
        tensors, mapping = onnx_w[name]
        fisher_onnx = {}
        for pname, (oname, tr) in mapping.items():
            if oname in fisher_onnx:
                raise RuntimeError(f"{name}: deduplicated initializer {oname} in a target export; its Fisher is undefined here")
            fisher_onnx[oname] = np.ascontiguousarray(fis[pname].T if tr else fis[pname])
        if set(fisher_onnx) != set(tensors) or any(fisher_onnx[o].shape != tensors[o].shape for o in tensors):
            raise RuntimeError(f"{name}: Fisher entries do not cover the float initializers")
        fpath = os.path.join(out, f"{name}.fisher.npz")
        buf = io.BytesIO()
        np.savez_compressed(buf, **fisher_onnx)
        write_atomic(fpath, buf.getvalue())
        records[-1].update(fisher=f"{name}.fisher.npz", fisher_sha256=sha256(fpath),
                           fisher_images=len(fisher_idx), fisher_tensors=len(fisher_onnx))

    torch.save(dict(records=records, state=state, onnx_w=onnx_w, targets=target_names, aux=aux_names, feats=feats,
                    logits=out_logits), ckpt)
    study = recycling_study(arch, data, records, state, onnx_w, target_names, aux_names, feats, out_logits)
    os.remove(ckpt)
    return records, study


def recycling_study(arch, data, records, state, onnx_w, targets, aux_names, base_feats, out_logits):
    rec = {r["name"]: r for r in records}
    diwa = [t for t in targets if rec[t]["init"].endswith("_base")]
    yv, yo = data["val"][1], data["ood_test"][1]

    def model_from_state(sd, nc=10):
        m = new_model(arch, nc)
        m.load_state_dict(sd)
        return m.eval()

    def model_from_onnx(avg, ref):
        mapping = onnx_w[ref][1]
        return load_onnx_weights(onnx_equivalent(arch, 10), avg, mapping)

    cache = {}

    def val_of(names, way):
        key = (way, tuple(sorted(names)))
        if key not in cache:
            cache[key] = accuracy(predict(averaged(names, way), data["val"][0])[0], yv)
        return cache[key]

    def evaluate(names, way):
        m = averaged(names, way)
        return {"val": val_of(names, way), "ood_test": accuracy(predict(m, data["ood_test"][0])[0], yo)}

    def averaged(names, way):
        if way == "state_dict":
            m = model_from_state(average_state_dicts([state[n] for n in names]))
        else:
            names_set = [set(onnx_w[n][0]) for n in names]
            if any(s != names_set[0] for s in names_set):
                raise RuntimeError(f"initializer names differ among {names}")
            m = model_from_onnx(average_arrays([onnx_w[n][0] for n in names]), names[0])
        return m

    ind = {t: rec[t]["accuracy"] for t in targets}
    best = max(targets, key=lambda t: (ind[t]["val"], -targets.index(t)))
    out = {"individual": {
        "each": ind,
        "best_by_val": dict(model=best, **ind[best]),
        "mean": {s: float(np.mean([ind[t][s] for t in targets])) for s in ("val", "ood_test")},
        "mean_diwa": {s: float(np.mean([ind[t][s] for t in diwa])) for s in ("val", "ood_test")},
    }}

    # ensembles: mean of output probabilities
    probs = {t: (out_logits[t][0].softmax(-1), out_logits[t][1].softmax(-1)) for t in targets}
    for key, names in (("ensemble_diwa", diwa), ("ensemble_all", targets)):
        pv = sum(probs[n][0] for n in names) / len(names)
        po = sum(probs[n][1] for n in names) / len(names)
        out[key] = dict(models=names, val=accuracy(pv, yv), ood_test=accuracy(po, yo))

    for way in ("state_dict", "onnx"):
        res = {}
        for key, names in (("uniform_soup_diwa", diwa), ("ratatouille_uniform", targets)):
            res[key] = dict(models=names, **evaluate(names, way))
        for key, names in (("greedy_soup_diwa", diwa), ("ratatouille_greedy", targets)):
            for rule in (">", ">="):
                order = sorted(names, key=lambda t: (-ind[t]["val"], names.index(t)))
                soup, cur = [order[0]], val_of([order[0]], way)
                for cand in order[1:]:
                    v = val_of(soup + [cand], way)
                    if v > cur or (rule == ">=" and v == cur):
                        soup, cur = soup + [cand], v
                res[f"{key}{'_strict' if rule == '>' else '_ge'}"] = dict(rule=rule, order=order, accepted=soup,
                                                                          **evaluate(soup, way))
        # fusing: uniform average of the auxiliary bodies, then a linear probe on probe-train features
        if way == "state_dict":
            bodies = [{k: v for k, v in state[a].items() if not k.startswith("head.")} for a in aux_names]
            fused = new_model(arch, 10)
            fused.load_state_dict({**average_state_dicts(bodies), **{k: v for k, v in fused.state_dict().items() if k.startswith("head.")}})
        else:
            # average the non-head initializers by ONNX name (heads differ in shape and are dropped)
            bodies = []
            for a in aux_names:
                t, mp = onnx_w[a]
                heads = {o for p, (o, _) in mp.items() if p.startswith("head.")}
                bodies.append({o: v for o, v in t.items() if o not in heads})
            if any(set(b) != set(bodies[0]) for b in bodies):
                raise RuntimeError("auxiliary body initializer names differ")
            avg = average_arrays(bodies)
            fused = onnx_equivalent(arch, 10)
            sd = dict(fused.state_dict())
            for p, (o, tr) in onnx_w[aux_names[0]][1].items():
                if not p.startswith("head."):
                    sd[p] = torch.from_numpy(np.ascontiguousarray(avg[o].T if tr else avg[o]))
            fused.load_state_dict(sd)
        fused.eval()
        ff = {s: predict(fused, data[s][0])[1] for s in ("probe_train", "val", "ood_test")}
        res["fusing_lp"] = dict(models=aux_names, **probe_accuracies(ff, data))
        out[way] = res

    # linear probes (probe-train split) of the base and each auxiliary body
    lp = {f"{arch}_base": probe_accuracies(base_feats, data)}
    for a in aux_names:
        m = model_from_state(state[a], rec[a]["num_classes"])
        lp[a] = probe_accuracies({s: predict(m, data[s][0])[1] for s in ("probe_train", "val", "ood_test")}, data)
    out["linear_probe"] = lp
    out["base_lp"] = lp[f"{arch}_base"]
    return out


def save_npy_gz(path, arr):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr))
    write_atomic(path, gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))


def keep_other_arch(previous, fresh, arch):
    """`--only ARCH` regenerates one architecture: the other one's models, study and timing are kept from the
    zoo.json already in --out (so the two architectures can be built separately, even in parallel)."""
    others = [m for m in previous["models"] if m["architecture"] != arch]
    fresh["models"] = sorted(others + fresh["models"], key=lambda m: m["architecture"])  # stable: keeps each one's order
    fresh["reference"] = dict(sorted({**{k: v for k, v in previous["reference"].items() if k != arch},
                                      **fresh["reference"]}.items()))
    times = {k: v for k, v in previous["generation_seconds"].items() if k != arch}
    fresh["generation_seconds"] = dict(sorted({**times, **fresh["generation_seconds"]}.items()))
    return fresh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", choices=["cnn", "vit"])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (not the shipped zoo)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    data = make_data()
    log("data ready", {k: v[0].shape for k, v in data.items()})
    data_dir = os.path.join(args.out, "data")
    os.makedirs(data_dir, exist_ok=True)
    files = {}
    for split in ("probe_train", "val", "ood_test"):
        for part, arr in zip(("images", "labels", "domains"), data[split]):
            rel = f"data/{split}_{part}.npy.gz"
            save_npy_gz(os.path.join(args.out, rel), arr)
            files[f"{split}_{part}"] = dict(file=rel, sha256=sha256(os.path.join(args.out, rel)),
                                            dtype=str(arr.dtype), shape=list(arr.shape))
    models, studies, times = [], {}, {}
    for arch in (["cnn", "vit"] if args.only is None else [args.only]):
        ta, ca = time.time(), time.process_time()
        recs, study = build_arch(arch, data, args.out, args.quick)
        times[arch] = dict(wall=round(time.time() - ta, 1), cpu=round(time.process_time() - ca, 1),
                           load_average_at_end=[round(x, 2) for x in os.getloadavg()])
        models += recs
        studies[arch] = study
        log(f"{arch} done: {times[arch]}")
    zoo = {
        "format": 1,
        "generator": "models/generate_zoo.py",
        "torch": torch.__version__, "onnx": onnx.__version__, "opset": OPSET, "threads": torch.get_num_threads(),
        "input": dict(name="input", dtype="float32", shape=["batch", 1, 28, 28], scale="uint8 / 255"),
        "outputs": ["logits", "features"],
        "domains": dict(train=TRAIN_DOMAINS, ood=OOD_DOMAIN, meaning="rotation in degrees, counter-clockwise"),
        "data": files,
        "linear_probe": dict(method="multinomial logistic regression on features standardised with probe_train "
                                    "mean/std (std<1e-6 -> 1), objective mean cross-entropy + l2/2*||W||^2 "
                                    "(bias unpenalised), full-batch L-BFGS (strong Wolfe) in float64 from zero, "
                                    "trained on probe_train", l2=PROBE_L2),
        "fisher": "sampled diagonal Fisher: mean over images of squared gradient of log p(y|x), y drawn from the "
                  "model's own prediction (one draw per image); w.r.t. the exported (BN-folded for the CNN) "
                  "parameters; keyed by ONNX initializer name",
        "models": models,
        "reference": studies,
        "generation_seconds": times,
    }
    zoo_path = os.path.join(args.out, "zoo.json" if not args.quick else "zoo.quick.json")
    if args.only is not None and os.path.exists(zoo_path):
        zoo = keep_other_arch(json.load(open(zoo_path)), zoo, args.only)
    write_atomic(zoo_path, (json.dumps(zoo, indent=1) + "\n").encode())
    log(f"total {time.time() - t0:.1f} s, cpu {time.process_time():.1f} s")


if __name__ == "__main__":
    main()
