"""Learning-rate schedules and epoch averaging as PyTorch (torch 1.13) does them: Recycling.Tests/Training/Fixtures/schedules.npz.

Schedules (base lr 0.1, T optimizer steps, W warmup steps; the lr of step t = 0..T-1, read from the optimizer before
step t, scheduler.step() after every optimizer step):
  warmup (t < W):  lr * t / W                      (LambdaLR, as transformers' get_*_schedule_with_warmup)
  constant:        lr
  linear:          lr * max(0, (T - t) / (T - W))
  cosine:          lr * 0.5 * (1 + cos(pi * (t - W) / (T - W)))   (W = 0: CosineAnnealingLR(T_max=T, eta_min=0))
Stored as lr:KIND:wW:tT. Then Recycling.Tests/Training/Fixtures/mlp.onnx trained in file order (batch 4, 3 epochs of
3 steps) with SGD (momentum 0.9, lr 0.1, cosine, 2 warmup steps) and AdamW (lr 0.01, linear, 3 warmup steps): held-out
logits at the end (trained:NAME) and of the uniform average of the last two end-of-epoch weights (averaged:NAME).
Run: /usr/bin/python3 scripts/training/make_schedule_fixture.py"""
import math, os
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Recycling.Tests", "Training", "Fixtures")


def factor(kind, warmup, total):
    def f(t):
        if t < warmup:
            return t / warmup
        if kind == "constant":
            return 1.0
        progress = (t - warmup) / max(1, total - warmup)
        return max(0.0, 1.0 - progress) if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def scheduler(kind, warmup, total, optimizer):
    if kind == "cosine" and warmup == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor(kind, warmup, total))


def curve(kind, warmup, total):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = scheduler(kind, warmup, total, optimizer)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return np.array(lrs, dtype=np.float64)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 5)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def train_mlp(make_optimizer, kind, warmup, epochs=3, batch=4):
    reference = np.load(os.path.join(FIXTURES, "mlp.npz"))
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(os.path.join(FIXTURES, "mlp.onnx")).graph.initializer}
    model = Mlp()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(inits[name].copy()))
    x, y = torch.from_numpy(reference["input:input"]), torch.from_numpy(reference["labels"]).long()
    heldout = torch.from_numpy(reference["heldout:input"])
    steps_per_epoch = math.ceil(len(x) / batch)
    optimizer = make_optimizer(model.parameters())
    schedule = scheduler(kind, warmup, epochs * steps_per_epoch, optimizer)
    snapshots = []
    for _ in range(epochs):
        for s in range(0, len(x), batch):
            loss = F.cross_entropy(model(x[s:s + batch]), y[s:s + batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    with torch.no_grad():
        trained = model(heldout).numpy()
        model.load_state_dict({k: (snapshots[-2][k] + snapshots[-1][k]) / 2 for k in snapshots[-1]})
        averaged = model(heldout).numpy()
    return trained, averaged


def main():
    arrays = {}
    for kind, warmup, total in [("constant", 4, 10), ("linear", 3, 10), ("cosine", 3, 10), ("cosine", 0, 10), ("linear", 0, 7), ("cosine", 10, 10)]:
        arrays[f"lr:{kind}:w{warmup}:t{total}"] = curve(kind, warmup, total)
    for name, make, kind, warmup in [("sgd:cosine:w2", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "cosine", 2),
                                      ("adamw:linear:w3", lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01), "linear", 3)]:
        arrays[f"trained:{name}"], arrays[f"averaged:{name}"] = train_mlp(make, kind, warmup)
    np.savez(os.path.join(FIXTURES, "schedules.npz"), **arrays)


if __name__ == "__main__":
    main()
