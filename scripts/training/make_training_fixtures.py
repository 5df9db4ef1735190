"""Reference fixtures for Recycling.Training (Recycling.Tests/Training/Fixtures), made with Debian's torch 1.13.

For each small model: the ONNX export, a batch, PyTorch's logits and the gradients of the mean cross-entropy
with respect to every parameter (keyed by the export's initializer names; exported without constant folding so
the names are the state_dict's), then a few training steps in file order with SGD (momentum) and with AdamW, and
the held-out logits after them. Also the diagonal Fisher with the true labels. The CNN keeps BatchNormalization (training=PRESERVE) and is trained with batch
statistics (running statistics updated) and separately with BatchNorm frozen (eval-mode statistics).
Run: /usr/bin/python3 scripts/training/make_training_fixtures.py  (writes Recycling.Tests/Training/Fixtures)."""
import io, os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Recycling.Tests", "Training", "Fixtures")
STEPS, BATCH = 3, 4


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 5)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class Cnn(nn.Module):
    """Convolutions without bias before BatchNorm, as ResNets have them: with batch statistics a bias there has a zero
    gradient up to rounding, which Adam would blow up into full steps of arbitrary sign."""
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu6(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Encoder(nn.Module):
    """BERT-style: token + position embeddings, an attention mask input, 2-head attention, exact GELU, LayerNorm,
    mean pooling, and an output head tied to the token embedding (one parameter read by Gather and MatMul)."""
    def __init__(self, vocab=12, d=16, heads=2, length=6):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, length, d) * 0.1)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.heads = heads

    def forward(self, ids, mask):
        b, t = ids.shape
        x = self.tok(ids) + self.pos[:, :t]
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(h.shape[-1], dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
        scores = scores + (1.0 - mask[:, None, None, :].float()) * -10000.0
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.proj(a)
        x = x + self.ff2(F.gelu(self.ff1(self.ln2(x))))
        pooled = (x * mask[:, :, None].float()).sum(1) / mask.sum(1, keepdim=True).float()
        return pooled @ self.tok.weight.t()


def export(model, args, names, path, opset, preserve):
    model.eval()
    kwargs = dict(training=torch.onnx.TrainingMode.PRESERVE) if preserve else {}
    torch.onnx.export(model, args, path, input_names=names, output_names=["logits"], opset_version=opset,
                      do_constant_folding=False, dynamic_axes={n: {0: "batch"} for n in names + ["logits"]}, **kwargs)


def grads(model, args, labels):
    model.zero_grad()
    F.cross_entropy(model(*args), labels).backward()
    return {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}


def train(model, inputs, labels, optimizer, bn_train):
    model.train() if bn_train else model.eval()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01))
    for s in range(STEPS):
        sl = slice(s * BATCH, (s + 1) * BATCH)
        opt.zero_grad()
        F.cross_entropy(model(*[x[sl] for x in inputs]), labels[sl]).backward()
        opt.step()
    model.eval()


def make(name, factory, inputs, names, labels, heldout, opset, preserve=False, bn_modes=(True,)):
    torch.manual_seed(1)
    model = factory()
    if isinstance(model, Cnn):  # non-trivial running statistics before export
        with torch.no_grad():
            for bn in (model.bn1, model.bn2):
                bn.running_mean.uniform_(-0.2, 0.2); bn.running_var.uniform_(0.5, 1.5)
    if isinstance(model, Encoder):  # distinct LayerNorm values: the exporter would merge equal initializers into one tensor
        with torch.no_grad():
            for ln in (model.ln1, model.ln2):
                ln.weight.uniform_(0.8, 1.2); ln.bias.uniform_(-0.1, 0.1)
    path = os.path.join(OUT, f"{name}.onnx")
    export(model, tuple(x[:2] for x in inputs), names, path, opset, preserve)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    arrays = {f"input:{n}": x.numpy() for n, x in zip(names, inputs)}
    arrays.update({f"heldout:{n}": x.numpy() for n, x in zip(names, heldout)})
    arrays["labels"] = labels.numpy().astype(np.int64)
    model.eval()
    first = tuple(x[:BATCH] for x in inputs)
    with torch.no_grad():
        arrays["logits"] = model(*first).numpy()
    for k, g in grads(model, first, labels[:BATCH]).items():
        arrays[f"grad:{k}"] = g
    # Diagonal Fisher with the true labels: mean over samples of the squared per-sample gradient of log p(y|x), eval mode.
    fisher = {k: np.zeros(p.shape, np.float64) for k, p in model.named_parameters()}
    for i in range(len(labels)):
        model.zero_grad()
        F.log_softmax(model(*[x[i:i + 1] for x in inputs]), -1)[0, labels[i]].backward()
        for k, p in model.named_parameters():
            fisher[k] += p.grad.double().numpy() ** 2 / len(labels)
    arrays.update({f"fisher:{k}": v.astype(np.float32) for k, v in fisher.items()})
    for opt in ("sgd", "adamw"):
        for bn_train in bn_modes:
            model.load_state_dict(state)
            train(model, inputs, labels, opt, bn_train)
            tag = f"{opt}" + ("" if len(bn_modes) == 1 else (":bntrain" if bn_train else ":bnfrozen"))
            with torch.no_grad():
                arrays[f"trained:{tag}"] = model(*heldout).numpy()
            for k, v in model.state_dict().items():
                if "running" in k:
                    arrays[f"stat:{tag}:{k}"] = v.numpy().copy()
    np.savez_compressed(os.path.join(OUT, f"{name}.npz"), **arrays)
    print(name, "written")


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    n = STEPS * BATCH
    x = torch.randn(n, 16, generator=g)
    make("mlp", Mlp, [x], ["input"], torch.randint(0, 5, (n,), generator=g), [torch.randn(3, 16, generator=g)], 13)
    img = torch.randn(n, 3, 8, 8, generator=g)
    make("cnn_bn", Cnn, [img], ["input"], torch.randint(0, 4, (n,), generator=g), [torch.randn(3, 3, 8, 8, generator=g)], 13,
         preserve=True, bn_modes=(True, False))
    ids = torch.randint(0, 12, (n, 6), generator=g)
    mask = torch.ones(n, 6, dtype=torch.int64); mask[::2, 4:] = 0
    hid, hmask = torch.randint(0, 12, (3, 6), generator=g), torch.ones(3, 6, dtype=torch.int64)
    hmask[0, 3:] = 0
    labels = torch.randint(0, 12, (n,), generator=g)
    for opset in (13, 17):
        make(f"encoder_opset{opset}", Encoder, [ids, mask], ["input_ids", "attention_mask"], labels, [hid, hmask], opset)


if __name__ == "__main__":
    main()
