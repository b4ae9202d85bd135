"""Compare PaDiM, PatchCore and DFKDE: accuracy, speed and memory on the same images.

Each detector's standard pipeline (``sklearn_memad.pipelines.make_detector_pipeline``) is fitted
on the same defect-free images and scored on the same test images: image AUROC, pixel AUROC,
AUPRO, fit and score time (feature extraction included), and the bytes each memory holds. The
images are the offline texture set by default, or an MVTec-layout category given with
``--data`` (e.g. the Magnetic-Tile set). With matplotlib, a figure shows the maps.

    python examples/compare_detectors.py                        # brick, grass, gravel
    python examples/compare_detectors.py --data PATH/TO/category --image-size 256
    python examples/compare_detectors.py --small                # a few seconds
"""

import argparse
import os
import time

import numpy as np
from sklearn.utils import Bunch

from sklearn_memad.datasets import load_mvtec, make_texture_anomalies
from sklearn_memad.maps import predict_anomaly_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc
from sklearn_memad.pipelines import METHODS, make_detector_pipeline


def texture_sets(small):
    size = 64 if small else 128
    for texture in ("brick",) if small else ("brick", "grass", "gravel"):
        data = make_texture_anomalies(
            texture,
            n_train=16 if small else 64,
            n_test_normal=4 if small else 16,
            n_test_per_defect=2 if small else 8,
            image_size=size,
        )
        yield (
            texture,
            Bunch(
                X_train=data.X_train,
                X_test=data.X_test,
                y_test=data.y_test,
                masks_test=data.masks_test,
            ),
            size,
        )


def folder_set(root, image_size, max_per_kind):
    train = load_mvtec(root, "train", image_size, max_per_kind=max_per_kind)
    test = load_mvtec(root, "test", image_size, max_per_kind=max_per_kind)
    name = os.path.basename(os.path.normpath(root))
    yield (
        name,
        Bunch(X_train=train.images, X_test=test.images, y_test=test.labels, masks_test=test.masks),
        image_size,
    )


def evaluate(method, data, size):
    pipe = make_detector_pipeline(method, image_size=size)
    start = time.perf_counter()
    pipe.fit(data.X_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    result = predict_anomaly_maps(pipe, data.X_test)  # scores and maps in one backbone pass
    score_s = time.perf_counter() - start
    return (
        pipe,
        result,
        {
            "image AUROC": image_auroc(data.y_test, result.scores),
            "pixel AUROC": pixel_auroc(data.masks_test, result.maps),
            "AUPRO": aupro(data.masks_test, result.maps),
            "fit s": fit_s,
            "score s": score_s,
            "memory MB": pipe[-1].memory_bytes_ / 1e6,
        },
    )


def plot(name, data, fitted, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no figure; pip install 'sklearn_memad[plot]')")
        return
    from sklearn_memad.display import AnomalyMapDisplay

    defective = np.flatnonzero(data.y_test == -1)[:3]
    fig, axes = plt.subplots(
        len(fitted), len(defective), figsize=(3 * len(defective), 9), squeeze=False
    )
    for row, (method, pipe) in zip(axes, fitted.items()):
        AnomalyMapDisplay.from_estimator(
            pipe,
            data.X_test[defective],
            masks=data.masks_test[defective],
            names=[method] * len(defective),
            ax=row,
            colorbar=False,
        )
    path = os.path.join(out, f"compare_{name}.png")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def main(small=False, data_root=None, image_size=256, max_per_kind=None, out="."):
    sets = folder_set(data_root, image_size, max_per_kind) if data_root else texture_sets(small)
    columns = ("image AUROC", "pixel AUROC", "AUPRO", "fit s", "score s", "memory MB")
    for name, data, size in sets:
        print(f"\n{name}: {len(data.X_train)} training, {len(data.X_test)} test images, {size} px")
        print(f"  {'method':<10}" + "".join(f"{c:>12}" for c in columns))
        fitted = {}
        for method in METHODS:
            pipe, _, row = evaluate(method, data, size)
            fitted[method] = pipe
            print(f"  {method:<10}" + "".join(f"{row[c]:>12.3f}" for c in columns))
        plot(name, data, fitted, out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a fast run on fewer, smaller images")
    parser.add_argument("--data", default=None, help="an MVTec-layout category folder")
    parser.add_argument("--image-size", type=int, default=256, help="with --data (default 256)")
    parser.add_argument(
        "--max-per-kind",
        type=int,
        default=None,
        help="with --data: at most this many images per folder",
    )
    parser.add_argument("--out", default=".", help="folder for the figure")
    args = parser.parse_args()
    main(args.small, args.data, args.image_size, args.max_per_kind, args.out)
