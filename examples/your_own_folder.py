"""Your own images: fit on a folder of defect-free images, score a test folder, save pictures.

Lay your images out as one MVTec AD category::

    my_part/
      train/good/*.png                 defect-free images (tens to a few hundred)
      test/good/*.png                  defect-free test images        (optional)
      test/<defect>/*.png              defective test images           (optional)
      ground_truth/<defect>/<name>_mask.png   masks of the defective images

then run ``python examples/your_own_folder.py my_part``. It fits the detector, prints the
image anomaly score and verdict of every test image (and AUROC / pixel AUROC when the layout
gives labels and masks), writes an overlay PNG per test image and saves the model, which
``memad score --model ... IMAGES`` then applies to new images. Without a folder it first
writes the demo's brick images into a temporary folder and uses that (``--small``: fewer,
smaller ones).

    python examples/your_own_folder.py my_part --method patchcore --image-size 256
    python examples/your_own_folder.py --small
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from sklearn_memad.datasets import load_mvtec
from sklearn_memad.display import write_overlay
from sklearn_memad.maps import predict_anomaly_maps
from sklearn_memad.metrics import image_auroc, pixel_auroc
from sklearn_memad.persistence import save_model
from sklearn_memad.pipelines import METHODS, make_detector_pipeline


def demo_folder(folder, small):
    from sklearn_memad.datasets import make_texture_anomalies, save_mvtec_layout

    data = make_texture_anomalies(
        "brick",
        n_train=12 if small else 64,
        n_test_normal=4 if small else 16,
        n_test_per_defect=2 if small else 8,
        image_size=64 if small else 128,
    )
    return save_mvtec_layout(data, Path(folder) / "brick")


def run(root, method, image_size, out):
    train = load_mvtec(root, "train", image_size)
    print(train.DESCR)
    pipe = make_detector_pipeline(method, image_size=image_size, verbose=True)
    pipe.fit(train.images)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = out / f"{method}.safetensors"
    save_model(pipe, model, train=os.fspath(root))
    print(f"saved {model}; apply it to new images with: memad score --model {model} IMAGES")

    if not (Path(root) / "test").is_dir():
        return
    test = load_mvtec(root, "test", image_size)
    result = predict_anomaly_maps(pipe, test.images)  # one backbone pass for scores and maps
    print(f"threshold (image anomaly score): {result.threshold:.4g}")
    for path, score, label in zip(test.paths, result.scores, result.labels):
        print(f"  {score:10.4g}  {'ANOMALY' if label == -1 else 'normal ':7}  {path}")
    if len(np.unique(test.labels)) == 2:
        print(f"image AUROC {image_auroc(test.labels, result.scores):.3f}")
        print(f"pixel AUROC {pixel_auroc(test.masks, result.maps):.3f}")
    for i, path in enumerate(test.paths):
        name = f"{test.kinds[i]}_{Path(path).stem}.png"
        write_overlay(
            out / name,
            test.images[i],
            result.maps[i],
            score=result.scores[i],
            threshold=result.threshold,
            vmin=result.vmin,
            vmax=result.vmax,
            mask=test.masks[i],
            title=f"{test.kinds[i]}/{Path(path).name}",
        )
    print(f"wrote {len(test.paths)} overlay PNGs to {out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", help="an MVTec-layout category folder")
    parser.add_argument("--method", choices=METHODS, default="patchcore")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side images are resized to (default 256; 64 with --small)",
    )
    parser.add_argument("--out", default="your_own_folder_out", help="output folder")
    parser.add_argument("--small", action="store_true", help="without a folder: small demo images")
    args = parser.parse_args()
    if args.folder:
        run(args.folder, args.method, args.image_size or 256, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = demo_folder(tmp, args.small)
            run(root, args.method, args.image_size or (64 if args.small else 128), args.out)
