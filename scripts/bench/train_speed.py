"""PyTorch's side of `Recycling.Bench train-speed`: the zoo CNN, the zoo ViT or CNTK's ResNet18 (cut at its last ReLU,
new linear head) as ordinary torch modules, loaded from the .npz the bench writes (the ONNX model's initial weights
under the module's parameter names, the batch as `input` and `labels`), trained on that batch with SGD (lr 0.01,
momentum 0.9) or AdamW (lr 1e-3, weight decay 0.01) with torch.set_num_threads(THREADS). Prints one JSON line:
samples/s over the timed steps, CPU seconds per step, the step-0 loss, peak RSS (ru_maxrss), each warm-up step's
wall and CPU seconds.
Run: /usr/bin/python3 scripts/bench/train_speed.py NPZ cnn|vit|resnet18 --batch B --steps N --warmup W --warmup-seconds S --threads T
--optimizer sgd|adamw"""
import argparse
import json
import os
import resource
import sys
import time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))
import generate_zoo  # noqa: E402  (the zoo's own module definitions: the networks the ONNX files were exported from)


class Logits(nn.Module):
    """A zoo model (which returns logits and features) as a module returning its logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def zoo_model(arch):
    """The CNN as exported (FusedCNN: BatchNorm folded into the convolutions) or the ViT, with 10 classes; parameters
    under the zoo's names."""
    return Logits(generate_zoo.onnx_equivalent(arch, 10))


BLOCKS = [2, 2, 2, 3]


class CntkResNet18(nn.Module):
    """CNTK's ResNet18 up to ReLU393 plus a linear head on the flattened 512x2x2 map (64x64 inputs): BasicBlocks,
    [2, 2, 2, 3] per stage as this export has them (22 convolutions), no conv biases, CNTK's asymmetric (top-left) padding, BatchNorm momentum 1 - 0.98835. Convolutions are numbered
    in the export's node order (a down-sampling block's 1x1 projection first)."""

    def __init__(self):
        super().__init__()
        shapes, cin = [(64, 3, 7)], 64
        for stage, width in enumerate([64, 128, 256, 512]):
            for block in range(BLOCKS[stage]):
                if stage > 0 and block == 0:
                    shapes.append((width, cin, 1))
                shapes += [(width, cin, 3), (width, width, 3)]
                cin = width
        for k, (cout, cin_, size) in enumerate(shapes):
            setattr(self, f"conv{k}", nn.Conv2d(cin_, cout, size, bias=False))
            setattr(self, f"bn{k}", nn.BatchNorm2d(cout, eps=1e-5, momentum=1 - 0.9883496761322021))
        self.head = nn.Linear(512 * 2 * 2, 10)

    def conv_bn(self, k, x, stride, padding=0):
        conv = getattr(self, f"conv{k}")
        return getattr(self, f"bn{k}")(F.conv2d(x, conv.weight, None, stride, padding))

    def forward(self, x):
        x = F.relu(self.conv_bn(0, F.pad(x, (3, 2, 3, 2)), 2))
        x = F.max_pool2d(F.pad(x, (1, 0, 1, 0), value=float("-inf")), 3, 2)
        k = 1
        for stage in range(4):
            for block in range(BLOCKS[stage]):
                down = stage > 0 and block == 0
                shortcut = self.conv_bn(k, x, 2) if down else x
                k += down
                y = F.relu(self.conv_bn(k, F.pad(x, (1, 0, 1, 0)) if down else x, 2 if down else 1, 0 if down else 1))
                x = F.relu(self.conv_bn(k + 1, y, 1, 1) + shortcut)
                k += 2
        return self.head(x.flatten(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("npz")
    parser.add_argument("arch", choices=["cnn", "vit", "resnet18"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arrays = np.load(args.npz)
    model = CntkResNet18() if args.arch == "resnet18" else zoo_model(args.arch)
    prefix = "" if args.arch == "resnet18" else "model."
    state = {prefix + k: torch.from_numpy(arrays[k].copy()) for k in arrays.files if k not in ("input", "labels")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{args.npz}: weights do not fit the {args.arch} module: missing {missing}, unexpected {unexpected}")
    x, y = torch.from_numpy(arrays["input"].copy()), torch.from_numpy(arrays["labels"].copy()).long()
    assert x.shape[0] == args.batch
    model.train()
    opt = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if args.optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    before_training = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    warmup_wall, warmup_cpu, loss0 = [], [], None
    started = time.perf_counter()
    # at least --warmup steps and --warmup-seconds, as the .NET side; each warm-up step timed: what the first steps cost
    while len(warmup_wall) < max(args.warmup, 1) or time.perf_counter() - started < args.warmup_seconds:
        cpu, wall = time.process_time(), time.perf_counter()
        loss = step()
        warmup_wall.append(time.perf_counter() - wall)
        warmup_cpu.append(time.process_time() - cpu)
        loss0 = loss if loss0 is None else loss0
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(args.steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"samples_per_s": args.steps * args.batch / wall, "cpu_s_per_step": cpu / args.steps, "loss0": loss0,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_rss_before_training_bytes": before_training,
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "warmup_wall_s": warmup_wall, "warmup_cpu_s": warmup_cpu}))


if __name__ == "__main__":
    main()
