"""Peak memory of FeatureTransformer.transform on large images.

A thread samples the resident set every millisecond while ``transform`` runs on a batch of
``--n`` random uint8 images of ``--side`` x ``--side`` pixels (resized to ``--image-size``
for the backbone). It prints the input's own size and the peak growth of the resident set
over the size it had just before the call: what the call itself adds. Each measurement runs
in a fresh process, so one does not inherit another's freed heap.

Run it from the repository root; pass ``--library PATH`` to measure another checkout (e.g.
one extracted with ``git archive``) under the same conditions::

    python benchmarks/large_image_memory.py --side 2500 5000 10000 --n 1 4
    python benchmarks/large_image_memory.py --side 10000 --n 1 --library /tmp/old_checkout
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakSampler:
    """The largest resident set seen by a daemon thread since :meth:`reset`."""

    def __init__(self, period=0.001):
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.period)

    def reset(self):
        self.peak = _rss_bytes()

    def stop(self):
        self._stop.set()


def measure(side, n, image_size, batch_size):
    """One measurement, in this process: returns a dict of numbers (bytes and seconds)."""
    import numpy as np
    import torch

    from sklearn_memad import FeatureTransformer

    torch.set_num_threads(1)
    features = FeatureTransformer(
        backbone="resnet18",
        weights=None,
        image_size=image_size,
        batch_size=batch_size,
        random_state=0,
    ).fit(np.zeros((1, 32, 32, 3), np.uint8))
    features.transform(np.zeros((1, 64, 64, 3), np.uint8))  # the backbone is built and warm
    images = np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    sampler = PeakSampler()
    time.sleep(0.05)
    sampler.reset()
    before = _rss_bytes()
    start = time.perf_counter()
    grids = features.transform(images)
    elapsed = time.perf_counter() - start
    time.sleep(0.01)
    sampler.stop()
    return {
        "side": side,
        "n": n,
        "image_size": image_size,
        "batch_size": batch_size,
        "input_bytes": int(images.nbytes),
        "output_bytes": int(grids.nbytes),
        "peak_growth_bytes": int(sampler.peak - before),
        "seconds": round(elapsed, 2),
    }


def _run_child(args, side, n):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    library = args.library or str(ROOT)
    env["PYTHONPATH"] = library + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        sys.executable,
        __file__,
        "--child",
        "--side",
        str(side),
        "--n",
        str(n),
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, nargs="+", default=[2500, 5000, 10000])
    parser.add_argument("--n", type=int, nargs="+", default=[1])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--library", default=None, help="checkout to import sklearn_memad from")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.side[0], args.n[0], args.image_size, args.batch_size)))
        return
    rows = [_run_child(args, side, n) for side in args.side for n in args.n]
    mib = 1 << 20
    print("| side | images | input MiB | peak growth MiB | growth / input | s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['side']} | {row['n']} | {row['input_bytes'] / mib:.0f} | "
            f"{row['peak_growth_bytes'] / mib:.0f} | "
            f"{row['peak_growth_bytes'] / row['input_bytes']:.2f} | {row['seconds']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
