"""ResNet18 (torchvision's layout: BasicBlocks [2, 2, 2, 2], 7x7 stem, MaxPool, BatchNorm kept) for 3x64x64 inputs
and 10 classes, random init, exported by torch 1.13 at opset 13, plus random images/labels in the layout
`recycle finetune --train PREFIX` and `recycle fisher --data PREFIX` read (PREFIX = OUT_DIR/train64). Used for the
Fisher measurement in docs/training.md; the export is 45 MB and not committed.
Run: /usr/bin/python3 scripts/bench/make_resnet18.py OUT_DIR [SAMPLES]"""
import os
import sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.down(x) if self.down is not None else x))


class ResNet18(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1, self.bn1, self.pool = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.MaxPool2d(3, 2, 1)
        widths, layers, cin = [64, 128, 256, 512], [], 64
        for i, w in enumerate(widths):
            layers += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
            cin = w
        self.layers, self.fc = nn.Sequential(*layers), nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(self.pool(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    out = sys.argv[1]
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = ResNet18().eval()
    torch.onnx.export(model, torch.randn(2, 3, 64, 64), os.path.join(out, "resnet18_64.onnx"), opset_version=13,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    rng = np.random.default_rng(0)
    np.save(os.path.join(out, "train64_images.npy"), rng.random((samples, 3, 64, 64), dtype=np.float32))
    np.save(os.path.join(out, "train64_labels.npy"), rng.integers(0, 10, samples).astype(np.int64))


if __name__ == "__main__":
    main()
