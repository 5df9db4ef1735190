"""Scaled-down versions of the architectures torch exporters emit for CNNs, FPN-style decoders, ViTs and BERT-style
attention, exported with Debian's torch 1.13 at several opsets (Recycling.Tests/Training/Fixtures/exports), random init:
- mobilenet: HardSwish (HardSigmoid*Mul before opset 14), ReLU6 (Clip), depthwise Conv, squeeze-excite with HardSigmoid;
- efficientnet: SiLU (Sigmoid*Mul), squeeze-excite, Dropout;
- resnet: 7x7 stem, MaxPool, BatchNorm, residual Add, Flatten, Gemm;
- fpn_*: F.interpolate nearest / bilinear (half_pixel) / bilinear align_corners (Upsample at 8-9, Resize 10, 11, 13),
  ConvTranspose, GroupNorm (InstanceNormalization on a reshape) and InstanceNorm;
- vit: patch Conv, class token, pre-norm TransformerEncoderLayer with exact GELU (Erf), LayerNormalization at 17;
- attention: embeddings, Einsum attention with a mask (Where / masked fill), GELU.
OpExportTests runs each through `OnnxProgram.Check` and compares the forward pass to ONNX Runtime's.
Run: /usr/bin/python3 scripts/training/make_export_zoo.py"""
import os
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Recycling.Tests", "Training", "Fixtures", "exports")
OPSETS = [8, 9, 10, 11, 13, 14, 17]


class SqueezeExcite(nn.Module):
    def __init__(self, c, gate):
        super().__init__()
        self.reduce, self.expand, self.gate = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1), gate

    def forward(self, x):
        return x * self.gate(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))


class MobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.se, self.project = SqueezeExcite(8, nn.Hardsigmoid()), nn.Conv2d(8, 16, 1)
        self.head, self.dropout = nn.Linear(16, 10), nn.Dropout(0.2)

    def forward(self, x):
        x = F.hardswish(self.project(self.se(self.depthwise(self.stem(x)))))
        return self.head(self.dropout(F.adaptive_avg_pool2d(x, 1).flatten(1)))


class EfficientNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.se, self.head = nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), SqueezeExcite(8, nn.Sigmoid()), nn.Linear(8, 10)

    def forward(self, x):
        x = self.se(F.silu(self.bn(self.conv(x))))
        return self.head(F.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), 0.2, self.training))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn1, self.pool = nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.MaxPool2d(3, 2, 1)
        self.conv, self.bn2, self.fc = nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.Linear(8, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.stem(x))))
        x = F.relu(x + self.bn2(self.conv(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


class Fpn(nn.Module):
    def __init__(self, mode, align_corners):
        super().__init__()
        self.conv, self.up = nn.Conv2d(3, 4, 3, 2, 1), nn.ConvTranspose2d(4, 4, 2, 2)
        self.group_norm, self.instance_norm = nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True)
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x):
        y = self.conv(x)
        if self.mode == "nearest":
            z = F.interpolate(y, scale_factor=2, mode="nearest")
        else:
            z = F.interpolate(y, scale_factor=2, mode=self.mode, align_corners=self.align_corners)
        lateral = F.interpolate(y, size=(x.shape[2], x.shape[3]), mode="nearest")
        return self.instance_norm(self.group_norm(z + self.up(y) + lateral))


class Vit(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, 8)
        self.cls, self.pos = nn.Parameter(torch.randn(1, 1, 16)), nn.Parameter(torch.randn(1, 17, 16))
        layer = nn.TransformerEncoderLayer(16, 2, 32, 0.1, activation="gelu", batch_first=True, norm_first=True)
        self.encoder, self.norm, self.head = nn.TransformerEncoder(layer, 1), nn.LayerNorm(16), nn.Linear(16, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.q, self.k, self.v, self.head = nn.Embedding(50, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, ids, mask):
        x = self.embed(ids)
        split = lambda t: t.view(x.shape[0], -1, 2, 8)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / 8 ** 0.5
        weights = scores.masked_fill(mask[:, None, None, :] == 0, -1e4).softmax(-1)
        out = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape[0], -1, 16)
        return self.head(F.gelu(out).mean(1))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    models = {"mobilenet": MobileNet(), "efficientnet": EfficientNet(), "resnet": ResNet(), "vit": Vit(), "attention": Attention(),
              "fpn_nearest": Fpn("nearest", None), "fpn_bilinear": Fpn("bilinear", False), "fpn_bilinear_corners": Fpn("bilinear", True)}
    for name, model in models.items():
        model.eval()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
        text = name == "attention"
        args = (torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)) if text else (torch.randn(2, 3, 32, 32),)
        inputs = ["input_ids", "attention_mask"] if text else ["input"]
        for opset in OPSETS:
            path = os.path.join(OUT, f"{name}_opset{opset}.onnx")
            try:
                torch.onnx.export(model, args, path, opset_version=opset, input_names=inputs, output_names=["logits"],
                                  dynamic_axes={n: {0: "batch"} for n in inputs + ["logits"]})
            except Exception as e:  # the exporter refuses some op/opset pairs (einsum before 12, align_corners before 11)
                print(f"{name} opset {opset}: not exportable ({str(e).splitlines()[0][:80]})")
                if os.path.exists(path):
                    os.remove(path)


if __name__ == "__main__":
    main()
