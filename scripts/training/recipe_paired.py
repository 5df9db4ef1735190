#!/usr/bin/python3
"""Paired differences between the methods of a recipe report (docs/recipes.md, "Results on the zoo").

A recipe's methods share their seeds: under one seed, fusing's fused, base and intertraining runs see the same data
order, and ratatouille's run i and DiWA's run i the same hyperparameter draw. The seed-to-seed spread of each method
is therefore mostly shared, and the difference A - B per seed says more than comparing two means ± sd. This prints,
for each pair of methods and each data set, the per-seed differences, their mean and sample sd, and how many seeds
favour A.

    /usr/bin/python3 scripts/training/recipe_paired.py REPORT.json "A" "B" ["C" "D" ...]

REPORT.json: a `report.json` written by `recycle fuse` or `recycle ratatouille` (its "scores": method, seed,
accuracy per data set in %). Methods are named as in the report (e.g. "fused", "base", "ratatouille uniform soup",
"DiWA uniform soup").
"""
import json
import statistics
import sys


def main():
    if len(sys.argv) < 4 or len(sys.argv) % 2 != 0:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        report = json.load(f)
    scores = {}
    for row in report["scores"]:
        scores.setdefault(row["method"], {})[row["seed"]] = row["accuracy"]
    names = sys.argv[2:]
    for a, b in zip(names[::2], names[1::2]):
        for method in (a, b):
            if method not in scores:
                sys.exit(f"{sys.argv[1]!r}: no method {method!r} (it has: {', '.join(sorted(scores))})")
        seeds = sorted(set(scores[a]) & set(scores[b]))
        for split in report["splits"]:
            diffs = [scores[a][s][split] - scores[b][s][split] for s in seeds]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            wins = sum(d > 0 for d in diffs)
            each = ", ".join(f"{d:+.2f}" for d in diffs)
            print(f"{a} - {b} | {split} | {statistics.mean(diffs):+.2f} ± {sd:.2f} | {wins}/{len(diffs)} seeds > 0 | {each}")


if __name__ == "__main__":
    main()
