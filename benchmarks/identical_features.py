"""Accuracy of sklearn_memad and anomalib 2.7 fed the very same patch features.

Extracts EfficientNet-Lite0 grids (layers ``_blocks.4`` + ``_blocks.10``, 100 channels kept at
random, 3x3 aggregation for PatchCore) once, saves them, and runs both libraries' memories on
them: anomalib through ``benchmarks/anomalib_peer.py`` in features mode (inside
``benchmarks/.venv-anomalib``), ours in this process. Reports image AUROC for both and, for
PaDiM (same regularisation, 0.01 + 1e-5 as anomalib adds), the largest relative difference of
the patch Mahalanobis distances.

    python benchmarks/identical_features.py --n-train 200 --n-test 200 --image-size 256
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import DEFAULT_DATA, PEER_PYTHON, _spread, image_size  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--image-size", default="256")
    args = p.parse_args(argv)

    from sklearn_memad import (
        DFKDEDetector,
        FeatureTransformer,
        LocalAggregation,
        PaDiMDetector,
        PatchCoreDetector,
        RandomProjection,
    )
    from sklearn_memad.datasets import load_mvtec
    from sklearn_memad.metrics import image_auroc

    size = image_size(args.image_size)
    train = load_mvtec(args.data, "train", image_size=size)
    test = load_mvtec(args.data, "test", image_size=size)
    train_idx, test_idx = (
        _spread(len(train.labels), args.n_train),
        _spread(len(test.labels), args.n_test),
    )
    labels = test.labels[test_idx]
    features = FeatureTransformer(
        backbone="efficientnet_lite0", layers=("_blocks.4", "_blocks.10"), image_size=None
    )
    pick = RandomProjection(n_components=100, method="channels", random_state=0)
    train_grids = pick.fit_transform(features.fit_transform(train.images[train_idx]))
    test_grids = pick.transform(features.transform(test.images[test_idx]))
    aggregated = LocalAggregation().fit(train_grids)
    inputs = {
        "padim": (train_grids, test_grids),
        "patchcore": (aggregated.transform(train_grids), aggregated.transform(test_grids)),
        "dfkde": (train_grids, test_grids),
    }
    ours = {
        "padim": PaDiMDetector(reg=0.01 + 1e-5),
        "patchcore": PatchCoreDetector(coreset_ratio=0.01, random_state=0),
        "dfkde": make_dfkde(RandomProjection, DFKDEDetector),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "labels.npy", labels)
        for name, (tr, te) in inputs.items():
            np.save(tmp / "train.npy", tr)
            np.save(tmp / "test.npy", te)
            subprocess.run(
                [
                    str(PEER_PYTHON),
                    str(HERE / "anomalib_peer.py"),
                    "--model",
                    name,
                    "--train-features",
                    str(tmp / "train.npy"),
                    "--test-features",
                    str(tmp / "test.npy"),
                    "--test-labels",
                    str(tmp / "labels.npy"),
                    "--coreset-ratio",
                    "0.01",
                    "--out",
                    str(tmp / "peer.json"),
                    "--save-scores",
                    str(tmp / "peer.npz"),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            peer = json.loads((tmp / "peer.json").read_text())
            detector = ours[name].fit(tr)
            row = {
                "detector": name,
                "ours_image_auroc": image_auroc(labels, -detector.score_samples(te)),
                "anomalib_image_auroc": peer["image_auroc"],
            }
            if name == "padim":
                peer_patches = np.load(tmp / "peer.npz")["patch_maps"].astype(np.float64)
                mine = detector.score_patches(te)
                row["max_relative_difference_of_patch_scores"] = float(
                    np.max(np.abs(mine - peer_patches) / np.abs(peer_patches))
                )
                row["ours_memory_bytes"] = detector.memory_bytes_
                row["anomalib_memory_bytes"] = peer["memory_bytes"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        f"{len(train_idx)} training / {len(test_idx)} test images at {size}, "
        "EfficientNet-Lite0 _blocks.4 + _blocks.10, 100 channels",
        "",
        "| detector | sklearn_memad image AUROC | anomalib image AUROC | note |",
        "|---|---|---|---|",
    ]
    for r in rows:
        note = ""
        if "max_relative_difference_of_patch_scores" in r:
            note = (
                f"patch scores max relative difference "
                f"{r['max_relative_difference_of_patch_scores']:.1e}; memory "
                f"{r['ours_memory_bytes'] / 2**20:.1f} vs "
                f"{r['anomalib_memory_bytes'] / 2**20:.1f} MiB"
            )
        lines.append(
            f"| {r['detector']} | {r['ours_image_auroc']:.3f} | "
            f"{r['anomalib_image_auroc']:.3f} | {note} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    command = "python benchmarks/identical_features.py " + " ".join(sys.argv[1:])
    out = Path(__file__).resolve().parent / "results" / "identical_features.md"
    out.write_text(f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')})\n\n{table}\n")
    print(f"\nWrote {out}")


def make_dfkde(projection, detector):
    from sklearn.pipeline import make_pipeline

    return make_pipeline(projection(16, random_state=0), detector())


if __name__ == "__main__":
    main()
