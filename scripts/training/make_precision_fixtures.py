"""Half- and double-precision reference fixtures for Recycling.Training (Recycling.Tests/Training/Fixtures/precision),
made with Debian's torch 1.13 and onnx 1.12.

Models: the MLP and the BatchNorm CNN of make_training_fixtures.py, exported in float16 and in float64.
- float64: model.double() exported as it is; PyTorch trains it in float64 (float64 weights and optimizer state).
- float16: torch 1.13 has no float16 Linear/Conv kernels on the CPU, so it can neither trace a model.half() nor train
  one. The float32 export is converted as onnxconverter-common's float16 converter does it (keep_io_types=False):
  every float tensor of the graph (initializers, inputs, outputs, value_info) becomes float16. The reference run is
  mixed precision with fp32 master weights: the forward reads the masters rounded to float16 (round to nearest even),
  and every value that the float16 graph stores (input, each layer's output, BatchNorm's running statistics) and
  every gradient flowing back through it is rounded to float16, while the arithmetic itself runs in float32 (as
  LibTorch's float16 CPU kernels accumulate in float32). The loss is computed on the float16 logits in float32.
  The optimizer (SGD momentum / AdamW) updates the fp32 masters with fp32 state. What the emulation cannot match is
  the order of summation inside a kernel and a few rounding points inside fused kernels (BatchNorm's normalisation):
  about one float16 unit (2^-11 relative) per value and step, so the tests compare within a few 1e-3 (stated there).
Stored per model: inputs, labels, held-out inputs, the initial held-out logits, the held-out logits after 3 steps of
SGD (momentum 0.9, lr 0.05) and of AdamW (lr 0.01, wd 0.01) in file order, batch 4 (BatchNorm in train mode: running
statistics updated; the CNN also with BatchNorm frozen), the trained weights rounded to the stored type, and the
true-label diagonal Fisher (mean squared per-sample gradient of log p(y|x), eval mode) as float32.
Run: /usr/bin/python3 scripts/training/make_precision_fixtures.py"""
import os
import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Recycling.Tests", "Training", "Fixtures", "precision")
STEPS, BATCH = 3, 4


class Round(torch.autograd.Function):
    """A value stored in float16: rounded to nearest even in the forward pass, its gradient rounded in the backward."""
    @staticmethod
    def forward(ctx, x):
        return x.half().float()

    @staticmethod
    def backward(ctx, g):
        return g.half().float()


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 5)

    def forward(self, x, r=None):
        r = r or (lambda v: v)
        return r(F.linear(r(torch.tanh(r(F.linear(r(x), r(self.fc1.weight), r(self.fc1.bias))))), r(self.fc2.weight), r(self.fc2.bias)))


class Cnn(nn.Module):
    """ReLU6 (Clip) in float16; plain ReLU in float64, because ONNX Runtime 1.31 refuses a float64 Clip after a Relu
    (its Relu+Clip fusion: "Unexpected data type for Clip 'min' input of 11"), the parent model as much as ours."""
    def __init__(self, relu6=True):
        super().__init__()
        self.relu6 = relu6
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x, r=None):
        r = r or (lambda v: v)
        def bn(m, v):
            return r(F.batch_norm(v, m.running_mean, m.running_var, r(m.weight), r(m.bias), m.training, m.momentum, m.eps))
        x = r(F.conv2d(r(x), r(self.conv1.weight), padding=1))
        x = r(F.max_pool2d(r(F.relu(bn(self.bn1, x))), 2))
        x = r(F.conv2d(x, r(self.conv2.weight), stride=2, padding=1))
        x = r((F.relu6 if self.relu6 else F.relu)(bn(self.bn2, x)))
        x = r(torch.flatten(r(F.adaptive_avg_pool2d(x, 1)), 1))
        return r(F.linear(x, r(self.fc.weight), r(self.fc.bias)))


def to_float16(path_in, path_out):
    """Every float32 tensor of the graph becomes float16 (onnxconverter-common's conversion, keep_io_types=False)."""
    model = onnx.load(path_in)
    g = model.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)
            g.initializer[i].CopyFrom(half)
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
    onnx.checker.check_model(model)
    onnx.save(model, path_out)


def export(model, x, path):
    model.eval()
    torch.onnx.export(model, (x[:2],), path, input_names=["input"], output_names=["logits"], opset_version=13,
                      do_constant_folding=False, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE)


def round_buffers(model):
    with torch.no_grad():
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())


def run(model, x, half):
    return model(x, Round.apply) if half else model(x)


def train(model, x, labels, optimizer, bn_train, half):
    model.train() if bn_train else model.eval()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01))
    for s in range(STEPS):
        sl = slice(s * BATCH, (s + 1) * BATCH)
        opt.zero_grad()
        F.cross_entropy(run(model, x[sl], half), labels[sl]).backward()
        opt.step()
        if half:
            round_buffers(model)
    model.eval()


def make(name, factory, x, labels, heldout, bn_modes, dtype):
    half = dtype == "float16"
    torch.manual_seed(1)
    model = factory()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial, distinct running statistics and affine parameters
                m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.2); m.bias.uniform_(-0.1, 0.1)
    path = os.path.join(OUT, f"{name}_{dtype}.onnx")
    if half:
        # The masters start as the float16 values the file stores.
        with torch.no_grad():
            for p in list(model.parameters()) + list(model.buffers()):
                if p.is_floating_point():
                    p.copy_(p.half().float())
        tmp = path + ".fp32.onnx"
        export(model, x, tmp)
        to_float16(tmp, path)
        os.remove(tmp)
    else:
        model = model.double()
        x, heldout = x.double(), heldout.double()
        export(model, x, path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stored = np.float16 if half else np.float64
    arrays = {"input": x.numpy().astype(np.float32), "labels": labels.numpy().astype(np.int64),
              "heldout": heldout.numpy().astype(np.float32)}
    model.eval()
    with torch.no_grad():
        arrays["initial"] = run(model, heldout, half).double().numpy()
    fisher = {k: np.zeros(p.shape, np.float64) for k, p in model.named_parameters()}
    for i in range(len(labels)):
        model.zero_grad()
        F.log_softmax(run(model, x[i:i + 1], half), -1)[0, labels[i]].backward()
        for k, p in model.named_parameters():
            fisher[k] += p.grad.double().numpy() ** 2 / len(labels)
    arrays.update({f"fisher:{k}": v.astype(np.float32) for k, v in fisher.items()})
    for opt in ("sgd", "adamw"):
        for bn_train in bn_modes:
            model.load_state_dict(state)
            train(model, x, labels, opt, bn_train, half)
            tag = opt + ("" if len(bn_modes) == 1 else (":bntrain" if bn_train else ":bnfrozen"))
            with torch.no_grad():
                arrays[f"trained:{tag}"] = run(model, heldout, half).double().numpy()
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    arrays[f"weight:{tag}:{k}"] = v.numpy().astype(stored)
    np.savez_compressed(os.path.join(OUT, f"{name}_{dtype}.npz"), **arrays)
    print(name, dtype, "written")


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    n = STEPS * BATCH
    x = torch.randn(n, 16, generator=g)
    mlp_labels, mlp_heldout = torch.randint(0, 5, (n,), generator=g), torch.randn(3, 16, generator=g)
    img = torch.randn(n, 3, 8, 8, generator=g)
    cnn_labels, cnn_heldout = torch.randint(0, 4, (n,), generator=g), torch.randn(3, 3, 8, 8, generator=g)
    # The BERT-style encoder of make_training_fixtures.py (Gather, LayerNorm, MatMul, Softmax, Erf, ReduceMean, the
    # attention mask's Cast) converted to float16: the executor's forward and gradients are checked against ONNX
    # Runtime and against its own float32 run (Recycling.Tests MixedPrecisionTests), no PyTorch trajectory.
    to_float16(os.path.join(OUT, "..", "encoder_opset13.onnx"), os.path.join(OUT, "encoder_float16.onnx"))
    for dtype in ("float16", "float64"):
        make("mlp", Mlp, x, mlp_labels, mlp_heldout, (True,), dtype)
        make("cnn_bn", lambda: Cnn(relu6=dtype == "float16"), img, cnn_labels, cnn_heldout, (True, False), dtype)


if __name__ == "__main__":
    main()
