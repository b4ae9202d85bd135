"""Levers for few training images, at the shipped defaults: flips, layer weights, PaDiM's prior.

Issue 22, item 3 asks for more accuracy from 200 of MTD's training tiles. The learning curve
(``learning_curve.py``) shows that more images help; this measures what might stand in for
them, on the features of ``defaults_sweep.py`` (EfficientNet-Lite0, 256 px, the same 200
tiles, cached in ``results/tmp/``), each detector otherwise as shipped:

- ``flips``: the training tiles mirrored left-right, top-bottom and both, added to the
  training set (4 x the images; their features are cached as ``small_data_flip_*``);
- ``fliplr``: the left-right mirror only (2 x);
- ``layer weights`` (PatchCore): each layer's channels scaled to the same mean squared norm
  on the training patches, so that no layer dominates the distances;
- ``reg R`` (PaDiM): the covariance regularisation, 0.01 shipped; also on ELPV mono and
  poly (``defaults_sweep.py``'s sets, image AUROC only), as a default must hold across sets;
- ``pooled 3 x 3`` (PaDiM): each position's Gaussian estimated from the patches of its 3 x 3
  neighbourhood of positions (9 x the samples), with the regularisation ``reg``.

Metrics on all 582 test tiles: image AUROC (half A / half B as in the sweep), pixel AUROC
and AUPRO as the MVTec AD evaluation reads them (``defaults_check.py``).

The current table (about 20 minutes on 2 cores)::

    python benchmarks/small_data_levers.py
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sklearn_memad import (
    FeatureTransformer,
    LocalAggregation,
    PaDiMDetector,
    defaults,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from defaults_check import evaluate, native_masks  # noqa: E402
from defaults_sweep import (  # noqa: E402
    ALL_LAYERS,
    BACKBONE,
    SETS,
    TMP,
    _chunked,
    _RankingOnlyPatchCore,
    cached_features,
    load_set,
    padim_channels,
)
from merge_quality import load_average, run_header, run_meta, save_results  # noqa: E402

SIZE = 256
#: The variants also measured on the ELPV sets.
ACROSS_SETS = ("shipped", "reg 0.03", "reg 0.1", "reg 0.3", "reg 1")
#: Channels of each Lite0 layer in the cached grids, in order.
LAYER_CHANNELS = {"_blocks.4": 40, "_blocks.10": 112, "_blocks.14": 192}
FLIPS = {
    "lr": lambda images: images[:, :, ::-1],
    "tb": lambda images: images[:, ::-1],
    "both": lambda images: images[:, ::-1, ::-1],
}
VARIANTS = {
    "patchcore": ["shipped", "fliplr", "flips", "layer weights"],
    "padim": [
        "shipped",
        "fliplr",
        "flips",
        "reg 0.03",
        "reg 0.1",
        "reg 0.3",
        "reg 1",
        "reg 10",
        "pooled 3 x 3, reg 0.01",
        "pooled 3 x 3, reg 1",
    ],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mtd", default=str(HERE.parents[1] / "shared" / "data" / "mtd"))
    p.add_argument("--detectors", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--name", default="small_data_levers")
    return p.parse_args(argv)


def flipped_features(data, flip):
    """Grids of the training tiles mirrored by ``flip``, cached."""
    path = TMP / f"small_data_flip_{flip}_{len(data['train'])}.npy"
    if not path.exists():
        transformer = FeatureTransformer(
            backbone=BACKBONE, layers=ALL_LAYERS, image_size=None, random_state=0
        ).fit(data["train"][:2])
        np.save(path, transformer.transform(np.ascontiguousarray(FLIPS[flip](data["train"]))))
    return np.load(path)


def training_grids(variant, data, train):
    if variant == "fliplr":
        return np.concatenate([train, flipped_features(data, "lr")])
    if variant == "flips":
        return np.concatenate([train] + [flipped_features(data, f) for f in FLIPS])
    return train


def neighbourhood_samples(grids):
    """Each grid shifted by one position in the 8 directions (edges repeated), and itself."""
    padded = np.pad(grids, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = grids.shape[1:3]
    return np.concatenate(
        [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    )


def patchcore_scores(variant, data, train, test):
    scale = np.ones(train.shape[-1], dtype=np.float32)
    if variant == "layer weights":
        start = 0
        for channels in LAYER_CHANNELS.values():
            block = train[..., start : start + channels]
            scale[start : start + channels] = 1 / np.sqrt(np.mean(np.sum(block**2, axis=-1)))
            start += channels
    aggregation = LocalAggregation(size=defaults.AGGREGATION_SIZE)
    detector = _RankingOnlyPatchCore(random_state=0)
    detector.fit(aggregation.fit_transform(training_grids(variant, data, train) * scale))
    return detector, _chunked(
        lambda g: detector.score_patches(aggregation.transform(g * scale)), test
    )


def padim_scores(variant, data, train, test):
    kept = padim_channels(ALL_LAYERS, SIZE, defaults.N_COMPONENTS["padim"])
    grids = training_grids(variant, data, train)[..., kept]
    reg = defaults.PADIM_REG
    if variant.startswith("reg"):
        reg = float(variant.split()[1])
    if variant.startswith("pooled"):
        reg = float(variant.split("reg ")[1])
        grids = neighbourhood_samples(grids)
    detector = PaDiMDetector(reg=reg).fit(np.ascontiguousarray(grids))
    return detector, _chunked(lambda g: detector.score_patches(g[..., kept]), test)


def measure(args):
    rows = []
    for name in args.sets:
        data = load_set(name, SIZE, args)
        if data["masks"] is not None:
            data["native_masks"] = native_masks(args.mtd, data)
        (train, test), _ = cached_features(name, SIZE, data)
        train = np.asarray(train)
        assert train.shape[-1] == sum(LAYER_CHANNELS.values()), "cached grids of other layers"
        for method in args.detectors:
            variants = VARIANTS[method] if name == "mtd" else []
            if name != "mtd" and method == "padim":
                variants = ACROSS_SETS
            for variant in variants:
                score = patchcore_scores if method == "patchcore" else padim_scores
                detector, patches = score(variant, data, train, test)
                row = evaluate(patches, data, detector.top_k, detector.border)
                row.update(set=name, detector=method, variant=variant)
                rows.append(row)
                print(json.dumps(row, default=float), flush=True)
    return rows


def markdown(result):
    meta = result["meta"]
    lines = [
        *run_header(
            meta,
            f"200 training images per set (the sweep's "
            f"draw), EfficientNet-Lite0 at {SIZE} px, the shipped defaults but for the variant; "
            "all test images; MTD's pixel metrics as the MVTec AD evaluation reads them.",
        ),
        "",
        "| set | detector | variant | image AUROC (A / B) | pixel AUROC | AUPRO |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a = r["image_auroc"]
        pixel = (
            f"{r['pixel_auroc_native']:.3f} | {r['aupro_native']:.3f}"
            if "aupro_native" in r
            else "- | -"
        )
        lines.append(
            f"| {r['set']} | {r['detector']} | {r['variant']} | "
            f"{a['all']:.3f} ({a['a']:.3f} / {a['b']:.3f}) | {pixel} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    rows = measure(args)
    result = {"meta": run_meta("small_data_levers", argv, load_start), "rows": rows}
    save_results(args.name, result, markdown(result))


if __name__ == "__main__":
    main()
