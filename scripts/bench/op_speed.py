"""PyTorch's side of `Recycling.Bench op-speed`: forward + backward of sum(op(x)) for each layer shape of the
train-speed CNN and ResNet18 (64x64, batch 32), and an SGD step (momentum 0.9) over ResNet18's parameter shapes,
one line per case: name, CPU ms and wall ms per call (medians). Run:
/usr/bin/python3 scripts/bench/op_speed.py [--threads 1] [--reps 30] [--warmup 5] [--only NAME,...] [--mkldnn on|off] [--channels-last]"""
import argparse
import os
import resource
import statistics
import time
import torch
import torch.nn.functional as F


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--only")
    parser.add_argument("--mkldnn", choices=["on", "off"])
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mkldnn:
        torch.backends.mkldnn.enabled = args.mkldnn == "on"
    gen = torch.Generator().manual_seed(0)

    def rand(shape, grad=True):
        t = torch.randn(shape, generator=gen)
        return (t.contiguous(memory_format=torch.channels_last) if args.channels_last and len(shape) == 4 else t).requires_grad_(grad)

    cases = []

    def op(name, shape, input_grad, fn):
        def setup():
            x = rand(shape, input_grad)
            return lambda: fn(x).sum().backward()
        cases.append((name, setup))

    def conv(name, shape, input_grad, cout, k, stride, pad, bias):
        w, b = rand([cout, shape[1], k, k]), rand([cout]) if bias else None
        op(name, shape, input_grad, lambda x: F.conv2d(x, w, b, stride, pad))

    def batch_norm(name, shape):
        mean, var, scale, shift = torch.zeros(shape[1]), torch.ones(shape[1]), rand([shape[1]]), rand([shape[1]])
        op(name, shape, True, lambda x: F.batch_norm(x, mean, var, scale, shift, True, 0.1, 1e-5))

    conv("cnn.conv1", [32, 1, 28, 28], False, 16, 3, 1, 1, True)
    conv("cnn.conv2", [32, 16, 14, 14], True, 32, 3, 1, 1, True)
    conv("cnn.conv3", [32, 32, 7, 7], True, 64, 3, 1, 1, True)
    op("cnn.relu1", [32, 16, 28, 28], True, F.relu)
    op("cnn.pool1", [32, 16, 28, 28], True, lambda x: F.max_pool2d(x, 2))
    op("cnn.pool2", [32, 32, 14, 14], True, lambda x: F.max_pool2d(x, 2))
    op("cnn.mean", [32, 64, 7, 7], True, lambda x: x.mean((2, 3)))
    conv("resnet.conv0", [32, 3, 69, 69], False, 64, 7, 2, 0, False)
    batch_norm("resnet.bn0", [32, 64, 32, 32])
    op("resnet.relu0", [32, 64, 32, 32], True, F.relu)
    op("resnet.pool", [32, 64, 33, 33], True, lambda x: F.max_pool2d(x, 3, 2))
    conv("resnet.conv64", [32, 64, 16, 16], True, 64, 3, 1, 1, False)
    batch_norm("resnet.bn64", [32, 64, 16, 16])
    conv("resnet.conv128s2", [32, 64, 17, 17], True, 128, 3, 2, 0, False)
    conv("resnet.conv128", [32, 128, 8, 8], True, 128, 3, 1, 1, False)
    conv("resnet.conv256", [32, 256, 4, 4], True, 256, 3, 1, 1, False)
    conv("resnet.conv512", [32, 512, 2, 2], True, 512, 3, 1, 1, False)
    conv("resnet.proj512", [32, 256, 4, 4], True, 512, 1, 2, 0, False)
    batch_norm("resnet.bn512", [32, 512, 2, 2])

    def sgd_setup():
        convs = [[64, 3, 7, 7]] + [[64, 64, 3, 3]] * 4 + [[128, 64, 1, 1], [128, 64, 3, 3]] + [[128, 128, 3, 3]] * 3 \
            + [[256, 128, 1, 1], [256, 128, 3, 3]] + [[256, 256, 3, 3]] * 3 + [[512, 256, 1, 1], [512, 256, 3, 3]] + [[512, 512, 3, 3]] * 5
        shapes = [s for c in convs for s in (c, [c[0]], [c[0]])] + [[10, 2048], [10]]
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        return opt.step
    cases.append(("sgd.torch", sgd_setup))

    only = args.only.split(",") if args.only else None
    for name, setup in cases:
        if only and not any(name.startswith(o) for o in only):
            continue
        run = setup()
        for _ in range(args.warmup):
            run()
        cpu, wall, system = [], [], []
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(args.reps):
            c, w, s = time.process_time(), time.perf_counter(), os.times().system
            run()
            wall.append((time.perf_counter() - w) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            system.append((os.times().system - s) * 1000)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / args.reps
        print(f"{name:<20} cpu_ms {statistics.median(cpu):8.3f} wall_ms {statistics.median(wall):8.3f} sys_ms {statistics.median(system):8.3f} minflt {faults:8.0f}")


if __name__ == "__main__":
    main()
