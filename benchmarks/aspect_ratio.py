"""Does keeping each tile's aspect ratio help PatchCore on MTD, against squashing it square?

MTD's tiles are 0.4-2.6 times as wide as high; the standard pipeline squashes each to a square.
Here every image is instead resized to a fixed height with its width following its own aspect
ratio (rounded to a multiple of 32 px), images of one size are run through the backbone
together, and one PatchCore memory is built from the patches of all sizes (the memory is
position-free). Both variants are scored in the same frame: each pixel map is resampled to the
square evaluation size and compared with the masks as ``load_mvtec`` squashes them, so the
two differ only in what the backbone saw.

Example::

    python benchmarks/aspect_ratio.py --height 256 \\
        --configs _blocks.4,_blocks.10:3 _blocks.4,_blocks.10,_blocks.14:9
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sklearn_memad import FeatureTransformer, LocalAggregation
from sklearn_memad.datasets import load_mvtec, read_rgb
from sklearn_memad.detectors import image_scores_from_patches
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from patchcore_levers import _RankingOnlyPatchCore  # noqa: E402

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--size", type=int, default=256, help="square size (and evaluation frame)")
    p.add_argument("--height", type=int, default=256, help="height of the aspect-kept images")
    p.add_argument(
        "--configs", nargs="+", default=["_blocks.4,_blocks.10:3"], help="layers:aggregation pairs"
    )
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 30])
    p.add_argument("--sigma", type=float, nargs="+", default=[4.0, 8.0])
    p.add_argument("--coreset-ratio", type=float, default=0.01)
    p.add_argument("--name", default="aspect_ratio")
    return p.parse_args(argv)


def aspect_sizes(paths, height):
    """(height, width) per image: its aspect ratio at ``height``, width a multiple of 32."""
    sizes = []
    for path in paths:
        with Image.open(path) as im:
            w, h = im.size
        sizes.append((height, max(32, int(round(height * w / h / 32)) * 32)))
    return sizes


def grouped_images(paths, sizes):
    """{size: (indices, images (n, H, W, 3) uint8)} for the aspect-kept variant."""
    groups = defaultdict(list)
    for i, size in enumerate(sizes):
        groups[size].append(i)
    out = {}
    for size, indices in sorted(groups.items()):
        images = [
            np.asarray(read_rgb(paths[i]).resize(size[::-1], Image.Resampling.BILINEAR))
            for i in indices
        ]
        out[size] = (np.array(indices), np.stack(images))
    return out


def run_variant(train_groups, test_groups, n_test, layers, aggregation_size, args):
    features = FeatureTransformer(
        "efficientnet_lite0", layers=layers, image_size=None, random_state=0
    )
    aggregation = LocalAggregation(aggregation_size)
    first = next(iter(train_groups.values()))[1][:1]
    features.fit(first)
    d = aggregation.fit_transform(features.transform(first)).shape[-1]
    start = time.perf_counter()
    # Patches of every size, one per row: the memory does not care where a patch came from.
    bank = np.concatenate(
        [
            aggregation.transform(features.transform(images)).reshape(-1, 1, 1, d)
            for _, images in train_groups.values()
        ]
    )
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    detector = _RankingOnlyPatchCore(
        coreset_ratio=args.coreset_ratio, random_state=0, border=0
    ).fit(bank)
    fit_s = time.perf_counter() - start
    frame = (args.size, args.size)
    image_scores = {k: np.empty(n_test) for k in args.top_k}
    maps = {s: np.empty((n_test,) + frame, dtype=np.float32) for s in args.sigma}
    for size, (indices, images) in test_groups.items():
        scores = detector.score_patches(aggregation.transform(features.transform(images)))
        for k in args.top_k:
            image_scores[k][indices] = image_scores_from_patches(scores, k)
        for sigma in args.sigma:
            pixel = torch.from_numpy(patch_to_pixel_maps(scores, size, sigma=sigma)[:, None])
            if size != frame:
                pixel = F.interpolate(pixel, size=frame, mode="bilinear", align_corners=False)
            maps[sigma][indices] = pixel[:, 0].numpy()
    return (
        image_scores,
        maps,
        {"bank_patches": int(len(bank)), "extract_seconds": extract_s, "fit_seconds": fit_s},
    )


def main(argv=None):
    args = parse_args(argv)
    frame = (args.size, args.size)
    train = load_mvtec(args.data, "train", image_size=frame)
    test = load_mvtec(args.data, "test", image_size=frame)
    defective = test.labels == -1
    kinds = test.kinds
    by_kind = {k: (kinds == k) | (kinds == "good") for k in sorted(set(kinds) - {"good"})}
    variants = {
        "squashed": (
            {frame: (np.arange(len(train.images)), train.images)},
            {frame: (np.arange(len(test.images)), test.images)},
        ),
        f"aspect, height {args.height}": (
            grouped_images(train.paths, aspect_sizes(train.paths, args.height)),
            grouped_images(test.paths, aspect_sizes(test.paths, args.height)),
        ),
    }
    rows = []
    for config in args.configs:
        layer_text, aggregation_size = config.rsplit(":", 1)
        layers = tuple(layer_text.split(","))
        for name, (train_groups, test_groups) in variants.items():
            image_scores, maps, info = run_variant(
                train_groups, test_groups, len(test.images), layers, int(aggregation_size), args
            )
            row = {
                "variant": name,
                "layers": layer_text,
                "aggregation": int(aggregation_size),
                "n_sizes": len(train_groups),
                **info,
            }
            for k, scores in image_scores.items():
                row[f"image_top{k}"] = image_auroc(test.labels, scores)
            for sigma, m in maps.items():
                row[f"pixel_sigma{sigma:g}"] = pixel_auroc(test.masks, m)
                row[f"pixel_sigma{sigma:g}_by_kind"] = {
                    kind: pixel_auroc(test.masks[r], m[r]) for kind, r in by_kind.items()
                }
                row[f"aupro_sigma{sigma:g}"] = aupro(test.masks[defective], m[defective])
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=1))
    (out / f"{args.name}.md").write_text(markdown(rows, args))
    print(markdown(rows, args))


def markdown(rows, args):
    kinds = sorted(rows[0][f"pixel_sigma{args.sigma[0]:g}_by_kind"])
    lines = [
        f"PatchCore on MTD, EfficientNet-Lite0, coreset {args.coreset_ratio:g}; squashed = "
        f"{args.size} x {args.size}; aspect = height {args.height}, width by the tile's aspect "
        f"ratio (multiple of 32); all maps scored in the {args.size} x {args.size} frame. "
        f"Pixel AUROC per kind: {', '.join(kinds)} (each with the good images).",
        "",
        "| layers | agg | variant | image AUROC "
        + " / ".join(f"top{k}" for k in args.top_k)
        + " | "
        + " | ".join(
            f"pixel AUROC, AUPRO (sigma {s:g}) | per kind (sigma {s:g})" for s in args.sigma
        )
        + " | fit s |",
        "|" + "---|" * (5 + 2 * len(args.sigma)),
    ]
    for r in rows:
        image = " / ".join(f"{r[f'image_top{k}']:.3f}" for k in args.top_k)
        pixel = " | ".join(
            f"{r[f'pixel_sigma{s:g}']:.3f}, {r[f'aupro_sigma{s:g}']:.3f} | "
            + " / ".join(f"{r[f'pixel_sigma{s:g}_by_kind'][k]:.3f}" for k in kinds)
            for s in args.sigma
        )
        lines.append(
            f"| {r['layers']} | {r['aggregation']} | {r['variant']} | {image} | "
            f"{pixel} | {r['fit_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
