"""Tune a detector with GridSearchCV: normal-only training folds, AUROC on labelled folds.

The backbone is the slow, parameter-free part, so the patch features are computed once and
only the rest is searched: PaDiM's random channel pick (which the standard pipeline makes inside
the feature step) becomes a ``RandomProjection(method="channels")`` step here, so the number
of channels kept can be tuned along with the detector.
``NormalOnlyKFold`` trains every fold on normal images only and tests it on held-out normal
plus defective images, so ``scoring="roc_auc"`` works with +1 normal / -1 anomaly labels; the
detectors leave images labelled -1 out of their memory, so the final refit on all labelled
images trains on the normal ones only. The chosen model is then checked on a held-out test
set.

    python examples/grid_search.py            # 64 training images, 128 x 128 px
    python examples/grid_search.py --small    # a few seconds
"""

import argparse

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline

from sklearn_memad.datasets import make_texture_anomalies
from sklearn_memad.metrics import image_auroc
from sklearn_memad.model_selection import NormalOnlyKFold
from sklearn_memad.pipelines import make_detector_pipeline
from sklearn_memad.transformers import RandomProjection


def main(small=False):
    size = 64 if small else 128
    sizes = dict(
        n_train=16 if small else 64,
        n_test_normal=6 if small else 16,
        n_test_per_defect=2 if small else 8,
        image_size=size,
    )
    tuning = make_texture_anomalies("grass", random_state=0, **sizes)
    held_out = make_texture_anomalies("grass", random_state=1, **sizes)

    pipe = make_detector_pipeline("padim", image_size=size, random_state=0)
    # Every feature, computed once; the channel pick moves into the searched part.
    features = pipe[0].set_params(max_features=None)
    head = make_pipeline(RandomProjection(method="channels", random_state=0), pipe[-1])
    X = np.concatenate([tuning.X_train, tuning.X_test])
    y = np.concatenate([np.ones(len(tuning.X_train), dtype=int), tuning.y_test])
    grids = features.fit_transform(X)
    print(f"{len(X)} tuning images ({(y == -1).sum()} defective) -> grids {grids.shape}")

    grid = {
        "randomprojection__n_components": [32, 100] if not small else [16, 64],
        "padimdetector__reg": [0.001, 0.01, 0.1] if not small else [0.01, 0.1],
    }
    search = GridSearchCV(head, grid, scoring="roc_auc", cv=NormalOnlyKFold(n_splits=3))
    search.fit(grids, y)

    results = search.cv_results_
    print(f"{'n_components':>12} {'reg':>7} {'mean AUROC':>10} {'std':>6}")
    for params, mean, std in zip(
        results["params"], results["mean_test_score"], results["std_test_score"]
    ):
        print(
            f"{params['randomprojection__n_components']:>12} "
            f"{params['padimdetector__reg']:>7} {mean:>10.3f} {std:>6.3f}"
        )
    print(f"best: {search.best_params_} (cross-validated AUROC {search.best_score_:.3f})")

    # The refitted best head, behind the same feature extractor, is a full image pipeline.
    pipe = Pipeline([("featuretransformer", features)] + search.best_estimator_.steps)
    scores = -pipe.score_samples(held_out.X_test)
    print(f"held-out image AUROC of the best model: {image_auroc(held_out.y_test, scores):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a fast run on fewer, smaller images")
    main(small=parser.parse_args().small)
