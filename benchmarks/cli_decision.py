"""The command line's decision on a small labelled folder, with the shipped defaults.

Issue 22, item 3: does ``memad fit --validation`` give a threshold that catches at least 12 of
the 15 defective tiles of a 60-tile folder at a false-positive rate of at most 0.2?

For each draw (seeded), from MTD in MVTec layout (``--data``):

- training folder: ``--n-train`` of the 762 training tiles;
- validation folder (``good/`` and one folder per defect kind, MTD's masks left out): half of
  the test tiles of every kind, less the tiles drawn for scoring;
- scoring folder: 45 good and 15 defective test tiles (defects drawn across the kinds in
  proportion), none of them in the validation folder.

The folders hold symbolic links to the data set's files, in a temporary directory. Then, per
detector and objective, exactly what a user types::

    memad fit --train TRAIN --method M --validation VAL [--objective fpr --target 0.2] --out F
    memad score --model F --out OUT SCORE

and the caught defective tiles and flagged good tiles are read from ``OUT/scores.csv``.

The current table (about 25 minutes on 2 shared cores)::

    python benchmarks/cli_decision.py
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_quality import load_average, run_header, run_meta, save_results  # noqa: E402

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
OBJECTIVES = {"f1": [], "fpr0.2": ["--objective", "fpr", "--target", "0.2"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "mtd")
    p.add_argument("--methods", nargs="+", default=["patchcore", "padim", "dfkde"])
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-good", type=int, default=45)
    p.add_argument("--n-defective", type=int, default=15)
    p.add_argument("--name", default="cli_decision")
    return p.parse_args(argv)


def _images(folder):
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def _link(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f.resolve(), folder / f.name)


def build_folders(args, draw, root):
    """Training, validation and scoring folders of one draw, as links under ``root``."""
    rng = np.random.RandomState(draw)
    train = _images(args.data / "train" / "good")
    _link([train[i] for i in rng.choice(len(train), args.n_train, replace=False)], root / "train")
    kinds = sorted(p.name for p in (args.data / "test").iterdir() if p.is_dir())
    by_kind = {k: _images(args.data / "test" / k) for k in kinds}
    defect_kinds = [k for k in kinds if k != "good"]
    sizes = np.array([len(by_kind[k]) for k in defect_kinds], dtype=float)
    picked = rng.choice(
        np.repeat(defect_kinds, sizes.astype(int)), args.n_defective, replace=False
    )
    counts = {k: int(np.sum(picked == k)) for k in defect_kinds}
    counts["good"] = args.n_good
    for kind, files in by_kind.items():
        order = rng.permutation(len(files))
        scored = [files[i] for i in order[: counts[kind]]]
        rest = order[counts[kind] :]
        validation = [files[i] for i in rest[: len(files) // 2]]
        _link(scored, root / "score" / kind)
        _link(validation, root / "validation" / kind)
    return counts


def _memad(*argv):
    done = subprocess.run(
        [sys.executable, "-m", "sklearn_memad", *argv], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"memad {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def run_one(root, method, objective):
    model = root / f"{method}_{objective}.safetensors"
    out = root / f"out_{method}_{objective}"
    start = time.perf_counter()
    fit_text = _memad(
        "fit",
        "--train",
        str(root / "train"),
        "--method",
        method,
        "--validation",
        str(root / "validation"),
        *OBJECTIVES[objective],
        "--out",
        str(model),
    )
    fit_s = time.perf_counter() - start
    _memad("score", "--model", str(model), "--out", str(out), "--no-overlays", str(root / "score"))
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kind = np.array([Path(r["path"]).parent.name for r in rows])
    flagged = np.array([int(r["label"]) == -1 for r in rows])
    good = kind == "good"
    threshold_line = next(
        (line.strip() for line in fit_text.splitlines() if "threshold" in line.lower()), ""
    )
    return {
        "caught": int(flagged[~good].sum()),
        "defective": int((~good).sum()),
        "false_positives": int(flagged[good].sum()),
        "good": int(good.sum()),
        "fit_s": fit_s,
        "threshold_text": threshold_line,
    }


def markdown(result, args):
    meta = result["meta"]
    lines = [
        *run_header(
            meta,
            f"Shipped defaults (`memad fit --method M`: "
            f"EfficientNet-Lite0, 256 px). {args.n_train} training tiles; scoring folder "
            f"{args.n_good} good + {args.n_defective} defective test tiles; validation folder: "
            "half of every kind of the other test tiles. Goal: at least 12 of 15 caught at a "
            "false-positive rate of at most 0.2.",
        ),
        "",
        "| detector | objective | draw | caught | false positives | FPR | goal met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        fpr = r["false_positives"] / r["good"]
        met = r["caught"] >= 0.8 * r["defective"] and fpr <= 0.2
        lines.append(
            f"| {r['method']} | {r['objective']} | {r['draw']} | {r['caught']} / "
            f"{r['defective']} | {r['false_positives']} / {r['good']} | {fpr:.2f} | "
            f"{'yes' if met else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    rows = []
    for draw in range(args.draws):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            counts = build_folders(args, draw, root)
            for method in args.methods:
                for objective in args.objectives:
                    row = run_one(root, method, objective)
                    row.update(method=method, objective=objective, draw=draw, counts=counts)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {"meta": run_meta("cli_decision", argv, load_start), "rows": rows}
    save_results(args.name, result, markdown(result, args))


if __name__ == "__main__":
    main()
