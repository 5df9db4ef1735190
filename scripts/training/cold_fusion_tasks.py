#!/usr/bin/python3
"""Contributor task data for ColD fusion on the zoo (docs/recipes.md, "ColD fusion").

The zoo ships only the target's evaluation splits (probe_train, val, ood_test, all from Fashion-MNIST's test set);
the data its auxiliary models were trained on (the upright pretraining pool of the training set) is not shipped.
This script rebuilds that pool exactly as models/generate_zoo.py does (same permutation seed, same 20,000 images)
and writes one labelled split per auxiliary task, transformed and relabelled by the zoo's own `transform_aux`
(invert, coarse4, blur, noise, rot90, subset5, rotpred4, flipv). Each task gets its own disjoint slice of the pool
(task j: pool images j*N .. (j+1)*N-1, before subset5 keeps classes 0-4), so contributors share no image with each
other, and none with the shipped splits (which come from the test set). Transformed images are quantised to uint8
(value/255 is what the toolkit feeds), as the zoo quantises its rotated images. Random draws (noise, rotpred4's
rotations) come from one torch generator per task seeded from the task's index: the output is deterministic.

    /usr/bin/python3 scripts/training/cold_fusion_tasks.py OUT_DIR [--images N]

writes OUT_DIR/<task>_{images,labels}.npy for every task (N images per task before subset5's filter; default 2000).
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))
import generate_zoo as zoo  # noqa: E402  (the zoo's own pool, transforms and task list)


def pretraining_pool():
    """The zoo's upright pretraining pool: generate_zoo.make_data's first PRETRAIN_POOL images of its permutation."""
    x = zoo.read_idx(f"{zoo.FMNIST}/train-images-idx3-ubyte.gz")
    y = zoo.read_idx(f"{zoo.FMNIST}/train-labels-idx1-ubyte.gz")
    perm = np.random.RandomState(20260101).permutation(len(x))
    pool = perm[:zoo.PRETRAIN_POOL]
    return x[pool][:, None], y[pool].astype(np.int64)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    tasks = list(zoo.AUX_TASKS)
    if args.images < 1 or args.images * len(tasks) > zoo.PRETRAIN_POOL:
        parser.error(f"--images must be in 1..{zoo.PRETRAIN_POOL // len(tasks)}")
    images, labels = pretraining_pool()
    os.makedirs(args.out, exist_ok=True)
    for j, task in enumerate(tasks):
        part = slice(j * args.images, (j + 1) * args.images)
        x, y = zoo.to_float(images[part]), torch.from_numpy(labels[part])
        if task == "subset5":
            keep = y < 5
            x, y = x[keep], y[keep]
        gen = torch.Generator().manual_seed(20261400 + j)
        x, y = zoo.transform_aux(task, x, y, gen)
        x_u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        np.save(os.path.join(args.out, f"{task}_images.npy"), x_u8)
        np.save(os.path.join(args.out, f"{task}_labels.npy"), y.numpy().astype(np.int64))
        print(f"{task}: {len(y)} images, {int(y.max()) + 1} classes", flush=True)


if __name__ == "__main__":
    main()
