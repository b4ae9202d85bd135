"""PaDiM's detector alone: ``score_patches`` per image on grids of the peer benchmark's shape.

The peer benchmark's PaDiM scores batches of 16 grids of 64 x 64 positions x 100 features
(resnet18 layers 1-3 at 256 px, 100 random channels). This fits a ``PaDiMDetector`` on random
grids of that shape and times ``score_patches`` on one batch, so that two versions of the
library can be compared on the step itself, interleaved in time (the machine's speed drifts):

::

    python benchmarks/padim_scoring.py
    python benchmarks/padim_scoring.py --compare /path/to/other/checkout
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, nargs=3, default=(64, 64, 100), metavar=("H", "W", "D"))
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per checkout")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per round")
    p.add_argument("--compare", help="another checkout of sklearn_memad, timed in turn")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args):
    from sklearn_memad import PaDiMDetector

    rng = np.random.default_rng(0)
    h, w, d = args.grid
    detector = PaDiMDetector().fit(rng.normal(size=(args.n_train, h, w, d)).astype(np.float32))
    batch = rng.normal(size=(args.batch, h, w, d)).astype(np.float32)
    detector.score_patches(batch)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        detector.score_patches(batch)
        times.append(1e3 * (time.perf_counter() - start) / args.batch)
    print(json.dumps(times))


def run_worker(args, checkout):
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--grid",
        *map(str, args.grid),
        "--n-train",
        str(args.n_train),
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
    ]
    env = None if checkout is None else dict(os.environ, PYTHONPATH=checkout)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    checkouts = {"this checkout": None}
    if args.compare:
        checkouts[args.compare] = args.compare
    times = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, path in checkouts.items():
            times[name] += run_worker(args, path)
    h, w, d = args.grid
    print(
        f"PaDiMDetector.score_patches, {args.batch} grids of {h} x {w} x {d}, "
        f"{args.rounds} x {args.repeats} calls per checkout, interleaved"
    )
    for name, values in times.items():
        print(f"{name}: min {min(values):.2f}, median {np.median(values):.2f} ms per image")


if __name__ == "__main__":
    main()
