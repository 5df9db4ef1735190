"""Reference values for new heads, fixed-batch exports and image preprocessing (Recycling.Tests/Training/Fixtures/heads.npz,
fixed_batch.onnx), made with Debian's torch 1.13.

- resize_*: F.interpolate(mode='bilinear', align_corners=False, antialias=False) of seeded images, up and down.
- linear_*: nn.Linear(12, 5) after torch.manual_seed(7): PyTorch's default head initialisation.
- fixed_*: a small CNN exported with a fixed batch of 1 whose Reshape bakes that batch in ([1, -1]); its logits for
  32 samples computed by PyTorch one sample at a time.
Run: /usr/bin/python3 scripts/training/make_head_fixtures.py"""
import os
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Recycling.Tests", "Training", "Fixtures")


class FixedBatchCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(y.reshape(1, -1))


def main():
    arrays = {}
    g = np.random.default_rng(5)
    for name, shape, size in [("up", (1, 1, 5, 7), (9, 4)), ("down", (1, 3, 28, 28), (20, 13)), ("zoo", (1, 1, 28, 28), (64, 64))]:
        x = g.random(shape, dtype=np.float32)
        arrays[f"resize_{name}_input"] = x
        arrays[f"resize_{name}_output"] = F.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False).numpy()

    torch.manual_seed(7)
    linear = nn.Linear(12, 5)
    arrays["linear_weight"] = linear.weight.detach().numpy()
    arrays["linear_bias"] = linear.bias.detach().numpy()

    torch.manual_seed(3)
    model = FixedBatchCnn().eval()
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), os.path.join(OUT, "fixed_batch.onnx"), input_names=["input"],
                      output_names=["logits"], opset_version=13, do_constant_folding=False)
    x = torch.from_numpy(g.random((32, 1, 8, 8), dtype=np.float32))
    with torch.no_grad():
        arrays["fixed_input"] = x.numpy()
        arrays["fixed_logits"] = torch.cat([model(x[i:i + 1]) for i in range(32)]).numpy()
    np.savez_compressed(os.path.join(OUT, "heads.npz"), **arrays)


if __name__ == "__main__":
    main()
