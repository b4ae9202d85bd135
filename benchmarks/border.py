"""Border and corner hot spots of the standard pipelines on MTD, their cause and remedies.

Issue 22, item 1. The three standard pipelines
(:func:`~sklearn_memad.pipelines.make_detector_pipeline`: EfficientNet-Lite0 with its ImageNet
weights, 256 px, the library's defaults) are fitted on ``--n-train`` MTD training tiles (a
seeded sample, the same for every variant) and score every test tile. For each image the
script records where its highest-scoring patch lies on the 32 x 32 patch grid (outer ring,
outer two rings, corner 2 x 2 blocks, which side), for good and defective tiles, and where the
ground truth lies (masks), so that the two can be read together.

Feature variants (the backbone's input or its convolutions; everything after is the library's):

- ``zero``: the library as shipped: the image squashed to 256 x 256, TensorFlow-style "same"
  zero padding in every convolution of the backbone;
- ``input_reflect``: the 256 x 256 image mirrored by ``--pad`` px on each side before the
  backbone, the grid cropped back to 32 x 32 (the padded cells dropped);
- ``conv_reflect`` / ``conv_replicate``: every padded convolution of the built backbone pads
  by reflection / by repeating its edge instead of with zeros.

Scoring remedies on the patch maps of each variant:

- ``margin1`` / ``margin2``: a region of interest: the outer 1 or 2 rings of patches are left
  out of the image score, and in the map they take the score of the nearest kept patch;
- ``posnorm``: each patch score standardised by the mean and standard deviation, at its grid
  position, of the training images' out-of-sample patch scores (those the detector computes
  in ``fit`` to set ``offset_``); ``zonenorm``: the same pooled by zone (the 4 corner cells,
  the rest of ring 0, ring 1, ring 2, the interior), which does not depend on the grid size;
- ``rings`` (PatchCore): border patches scored against border patches: one coreset memory per
  ring group (ring 0, ring 1, the rest), each ``auto_coreset_ratio`` of all the training
  patches, so the memory keeps its size; ``ringsauto``: the same, each memory with the
  ``"auto"`` coreset of its own patches (10 % of ring 0's and ring 1's: a larger memory);
  ``ringsnorm``: ``rings``, then standardised by zone as ``zonenorm``;
- ``aggreflect`` (PatchCore): the neighbourhood mean over a grid mirrored at its border,
  instead of ``LocalAggregation``'s mean of the existing neighbours (with 3 x 3: 4 at a
  corner, 6 on an edge, 9 inside);
- ``zonealign`` (PatchCore): the aggregated features of each border zone shifted onto the
  interior's mean and scaled to the interior's total spread before the memory is built.

Two diagnostics of the cause: the "padding reach" (how much the features of a 128 x 128 crop
differ, ring by ring from the crop's edge, from those of the same pixels inside the whole tile,
for each padding), and the border rate of good tiles by aspect ratio (MTD tiles are squashed
to a square from 0.4-2.6 times as wide as high).

Pipeline settings (``--settings``): ``shipped`` pins the standard pipelines' defaults of commit
fcb7af7, those issue 22 measured (layers ``_blocks.4`` + ``_blocks.10``, 3 x 3 aggregation,
the largest patch score, PaDiM 100 features, DFKDE 16); ``current`` takes
``make_detector_pipeline(method)`` of the checkout as it is. The first settings get every
``--variants``, the crop test and the padding reach; the others ``--other-variants``.

Grids are cached under ``benchmarks/results/tmp/border_*`` (git-ignored). Example::

    python benchmarks/border.py
"""

import argparse
import hashlib
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_quality import load_average, run_meta  # noqa: E402

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"
CACHE = HERE / "results" / "tmp"
METHODS = ("patchcore", "padim", "dfkde")
NAMES = {"patchcore": "PatchCore", "padim": "PaDiM", "dfkde": "DFKDE"}
REMEDY_NOTES = {
    "none": "the standard pipeline's patch scores",
    "margin1": "outer ring left out of the image score; in the map it repeats its neighbour",
    "margin2": "the same for the outer two rings",
    "posnorm": "patch scores standardised per grid position by the training images' "
    "out-of-sample patch scores (computed by fit anyway)",
    "zonenorm": "the same per zone (4 corner cells, rest of ring 0, ring 1, ring 2, interior)",
    "rings": "PatchCore: one memory per ring group (ring 0, ring 1, the rest), each with the "
    "whole bank's coreset ratio (same total size)",
    "ringsauto": "the same, each memory with its own 'auto' coreset (a larger memory)",
    "ringsnorm": "rings, then zonenorm",
    "aggreflect": "PatchCore: the pipeline's aggregation over a grid mirrored at its border",
    "zonealign": "PatchCore: each border zone's features moved onto the interior's mean and "
    "spread before the memory is built",
}
FEATURE_NOTES = {
    "zero": "as shipped (zero padding in the backbone)",
    "input_reflect": "input mirrored by --pad px, grid cropped back",
    "conv_reflect": "every backbone convolution pads by reflection",
    "conv_replicate": "every backbone convolution pads by repeating its edge",
}
VARIANTS = ("zero", "input_reflect", "conv_reflect", "conv_replicate")
REMEDIES = (
    "none",
    "margin1",
    "margin2",
    "posnorm",
    "zonenorm",
    "rings",
    "ringsauto",
    "ringsnorm",
    "aggreflect",
    "zonealign",
)
#: The standard pipelines' defaults as committed when this study was made (commit fcb7af7,
#: the settings measured in issue 22): ``--settings shipped`` pins them. ``current`` takes
#: ``make_detector_pipeline(method)`` of the checkout as it is.
SHIPPED = {
    "layers": ("_blocks.4", "_blocks.10"),
    "aggregation": 3,
    "top_k": 1,
    "n_components": {"padim": 100, "dfkde": 16},
}
SETTINGS = ("shipped", "current")
ZONES = ("corner cells", "ring 0 edges", "ring 1", "ring 2", "interior")
STRIDE = 8  # pixels per cell of the grid (the finest default layer, _blocks.4)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="seed of the training sample")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument(
        "--settings",
        nargs="+",
        choices=SETTINGS,
        default=list(SETTINGS),
        help="pipeline settings: 'shipped' pins the defaults of commit fcb7af7; 'current' "
        "takes make_detector_pipeline's defaults of this checkout",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="feature variants of the first --settings",
    )
    p.add_argument(
        "--other-variants",
        nargs="+",
        choices=VARIANTS,
        default=["zero"],
        help="feature variants of the other --settings",
    )
    p.add_argument("--remedies", nargs="+", choices=REMEDIES, default=list(REMEDIES))
    p.add_argument("--pad", type=int, default=32, help="input_reflect's margin (px, mult. of 16)")
    p.add_argument("--sigma", type=float, default=4.0, help="map smoothing (the default)")
    p.add_argument("--reach-images", type=int, default=48, help="good tiles for padding reach")
    p.add_argument(
        "--crop-variants",
        nargs="*",
        choices=VARIANTS,
        default=["zero", "input_reflect"],
        help="feature variants of the central-crop test (none: skip it)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-cache", action="store_true", help="recompute the cached grids")
    p.add_argument("--name", default="border")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite NAME.md from NAME.json without measuring",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- grid geometry
def ring_index(h, w):
    """(h, w) ints: how many cells each cell lies from the nearest edge of the grid."""
    i = np.arange(h)[:, None]
    j = np.arange(w)[None, :]
    return np.minimum(np.minimum(i, h - 1 - i), np.minimum(j, w - 1 - j))


def corner_cells(h, w, size=2):
    """(h, w) bools: the ``size`` x ``size`` block at each corner."""
    i = np.arange(h)[:, None]
    j = np.arange(w)[None, :]
    return (np.minimum(i, h - 1 - i) < size) & (np.minimum(j, w - 1 - j) < size)


def side_of(i, j, h, w):
    """Which edge a ring-0 cell lies on; 'corner' for the four corner cells."""
    sides = [
        s
        for s, on in (
            ("top", i == 0),
            ("bottom", i == h - 1),
            ("left", j == 0),
            ("right", j == w - 1),
        )
        if on
    ]
    return "corner" if len(sides) > 1 else (sides[0] if sides else None)


def cell_masks(masks, h, w):
    """Pixel masks (n, H, W) -> (n, h, w): a cell is defective if any of its pixels is."""
    n, height, width = masks.shape
    return masks.reshape(n, h, height // h, w, width // w).any(axis=(2, 4))


def dilate(cells):
    """One-cell (8-connected) dilation of boolean cell masks (n, h, w)."""
    padded = np.pad(cells, ((0, 0), (1, 1), (1, 1)))
    h, w = cells.shape[1:]
    out = np.zeros_like(cells)
    for di in range(3):
        for dj in range(3):
            out |= padded[:, di : di + h, dj : dj + w]
    return out


# ----------------------------------------------------------------------------- data
def load_data(args):
    from sklearn_memad.datasets import load_mvtec

    size = args.image_size
    train = load_mvtec(args.data, "train", image_size=size, n_jobs=2)
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(train.labels), size=args.n_train, replace=False))
    test = load_mvtec(args.data, "test", image_size=size, n_jobs=2)
    names = [Path(train.paths[i]).name for i in chosen]
    return {
        "train": train.images[chosen],
        "train_names": names,
        "test": test.images,
        "labels": test.labels,
        "masks": test.masks,
        "kinds": test.kinds,
        "original_sizes": test.original_sizes,
    }


# ----------------------------------------------------------------------------- features
def _padded_forward(mode):
    """The forward of efficientnet_lite_pytorch's Conv2dDynamicSamePadding, padding by ``mode``."""
    import math

    import torch.nn.functional as F

    def forward(self, x):
        ih, iw = x.size()[-2:]
        kh, kw = self.weight.size()[-2:]
        sh, sw = self.stride
        oh, ow = math.ceil(ih / sh), math.ceil(iw / sw)
        pad_h = max((oh - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pad_w = max((ow - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        if pad_h > 0 or pad_w > 0:
            pads = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
            x = F.pad(x, pads, mode=mode)
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    return forward


def feature_transformer(variant, image_size, pad, layers):
    """A fitted FeatureTransformer with every default feature (no channel subset) for
    ``variant``, and the input size it expects."""
    from sklearn_memad import defaults
    from sklearn_memad.features import FeatureTransformer

    side = image_size + (2 * pad if variant == "input_reflect" else 0)
    ft = FeatureTransformer(
        backbone=defaults.BACKBONE, layers=layers, image_size=None, random_state=0
    )
    ft.fit(np.zeros((1, side, side, 3), dtype=np.uint8))
    if variant.startswith("conv_"):
        mode = variant.split("_", 1)[1]
        patched = 0
        for module in ft.feature_extractor().model.modules():
            if type(module).__name__ == "Conv2dDynamicSamePadding":
                module.forward = types.MethodType(_padded_forward(mode), module)
                patched += 1
        if not patched:
            raise RuntimeError("no Conv2dDynamicSamePadding found in the backbone")
    return ft


def grids_of(ft, variant, images, pad, batch=32):
    """Full-feature grids (n, h, w, d) of ``images`` (n, S, S, 3) for ``variant``."""
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        if variant == "input_reflect":
            chunk = np.pad(chunk, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        grids = ft.transform(chunk)
        if variant == "input_reflect":
            c = pad // STRIDE
            grids = grids[:, c:-c, c:-c]
        out.append(np.ascontiguousarray(grids))
    return np.concatenate(out)


def cached_grids(args, variant, data, layers):
    from sklearn_memad import defaults

    CACHE.mkdir(parents=True, exist_ok=True)
    key = {
        "variant": variant,
        "backbone": defaults.BACKBONE,
        "layers": list(layers),
        "pad": args.pad if variant == "input_reflect" else 0,
        "image_size": args.image_size,
        "train": hashlib.sha1("\n".join(data["train_names"]).encode()).hexdigest()[:12],
        "n_test": int(len(data["labels"])),
        "data": str(Path(args.data).resolve()),
    }
    tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    stem = CACHE / f"border_{variant}_{tag}"
    info_file = Path(f"{stem}_info.json")
    files = {part: Path(f"{stem}_{part}.npy") for part in ("train", "test")}
    if (
        not args.no_cache
        and info_file.exists()
        and all(f.exists() for f in files.values())
        and json.loads(info_file.read_text()).get("key") == key
    ):
        info = json.loads(info_file.read_text())
        return {part: np.load(f, mmap_mode="r") for part, f in files.items()}, info
    ft = feature_transformer(variant, args.image_size, args.pad, layers)
    start = time.perf_counter()
    train = grids_of(ft, variant, data["train"], args.pad)
    test = grids_of(ft, variant, data["test"], args.pad)
    seconds = time.perf_counter() - start
    np.save(files["train"], train)
    np.save(files["test"], test)
    n = len(train) + len(test)
    info = {"key": key, "grid_shape": list(train.shape[1:]), "ms_per_image": 1e3 * seconds / n}
    info_file.write_text(json.dumps(info))
    del train, test
    return {part: np.load(f, mmap_mode="r") for part, f in files.items()}, info


# ----------------------------------------------------------------------------- detectors
def standard_pipeline(method, settings):
    """``make_detector_pipeline(method)``, pinned to ``SHIPPED`` for ``"shipped"``."""
    from sklearn_memad.pipelines import make_detector_pipeline

    if settings == "current":
        return make_detector_pipeline(method)
    pipe = make_detector_pipeline(
        method, layers=SHIPPED["layers"], n_components=SHIPPED["n_components"].get(method)
    )
    if method == "patchcore":
        pipe.set_params(localaggregation__size=SHIPPED["aggregation"])
    pipe.steps[-1][1].set_params(top_k=SHIPPED["top_k"])
    return pipe


def resolved_layers(settings):
    """The backbone layers the pipelines of ``settings`` use."""
    pipe = standard_pipeline("patchcore", settings)
    pipe[0].fit(np.zeros((1, 32, 32, 3), dtype=np.uint8))
    return tuple(pipe[0].feature_extractor().layers)


def describe(method, settings):
    """The settings of ``method``'s pipeline that matter here."""
    pipe = standard_pipeline(method, settings)
    out = {"layers": list(resolved_layers(settings)), "top_k": int(pipe[-1].top_k)}
    for name, step in pipe.steps[1:-1]:
        out[name] = step.get_params()
    if method == "padim":
        out["max_features"] = pipe[0].max_features
    return out


def fitted_parts(method, train_full, settings):
    """The standard pipeline of ``method``: its feature step's channel subset and the fitted
    steps after it, fitted on the full-feature training grids."""
    pipe = standard_pipeline(method, settings)
    side = 8 * train_full.shape[1]
    pipe[0].fit(np.zeros((1, side, side, 3), dtype=np.uint8))  # picks PaDiM's subset
    kept = pipe[0].features_kept_
    rest = pipe[1:]
    start = time.perf_counter()
    oos = _fit_capturing(
        rest, np.asarray(train_full[..., kept] if kept is not None else train_full)
    )
    return kept, rest, time.perf_counter() - start, oos


def transformed(rest, kept, grids, batch=64):
    """``grids`` through the steps between the features and the detector, by chunks."""
    for start in range(0, len(grids), batch):
        g = np.asarray(grids[start : start + batch])
        g = g[..., kept] if kept is not None else g
        yield rest[:-1].transform(g) if len(rest) > 1 else g


def patch_scores(rest, kept, grids):
    start = time.perf_counter()
    out = np.concatenate([rest[-1].score_patches(g) for g in transformed(rest, kept, grids)])
    return out, time.perf_counter() - start


def ring_memory_scores(
    rest, kept, train_full, test_full, groups=((0,), (1,), None), own_ratio=False, norm=False
):
    """PatchCore with one memory per ring group (``None``: every other ring); each memory's
    coreset is the whole bank's ratio, or with ``own_ratio`` the "auto" ratio of its own.
    With ``norm``, the scores are then standardised by zone (as ``zonenorm``), with the
    out-of-sample training scores of the ring memories."""
    from sklearn.base import clone

    from sklearn_memad.detectors import auto_coreset_ratio

    train = np.concatenate(list(transformed(rest, kept, train_full)))
    n, h, w, d = train.shape
    ring = ring_index(h, w)
    named = [r for g in groups if g is not None for r in g]
    ratio = auto_coreset_ratio(n * h * w)  # the whole bank's ratio, so the memory keeps its size
    out = np.empty((len(test_full), h, w), dtype=np.float32)
    oos = np.empty((n, h, w))
    fit_seconds = score_seconds = 0.0
    entries = 0
    for group in groups:
        cells = ~np.isin(ring, named) if group is None else np.isin(ring, group)
        detector = clone(rest[-1])
        if not own_ratio:
            detector.set_params(coreset_ratio=ratio)
        start = time.perf_counter()
        oos[:, cells] = _fit_capturing(
            detector, np.ascontiguousarray(train[:, cells][:, :, None, :])
        )[:, :, 0]
        fit_seconds += time.perf_counter() - start
        entries += len(detector.coreset_)
        start = time.perf_counter()
        pos = 0
        for g in transformed(rest, kept, test_full):
            scores = detector.score_patches(np.ascontiguousarray(g[:, cells][:, :, None, :]))
            out[pos : pos + len(g)][:, cells] = scores[:, :, 0]
            pos += len(g)
        score_seconds += time.perf_counter() - start
    if norm:
        out = normalized(out, oos, "zone")
    return out, fit_seconds, score_seconds, entries


def _fit_capturing(estimator, X):
    """Fit ``estimator`` (a detector, or a pipeline ending in one) on ``X``; return the
    detector's out-of-sample training patch scores, those ``fit`` computes to set
    ``offset_``."""
    detector = estimator[-1] if hasattr(estimator, "steps") else estimator
    calibrate = detector._calibrate
    captured = {}

    def capture(oos_patch_scores):
        captured["oos"] = np.array(oos_patch_scores, dtype=np.float64)
        return calibrate(oos_patch_scores)

    detector._calibrate = capture
    try:
        estimator.fit(X)
    finally:
        del detector._calibrate
    return captured["oos"]


def zone_aligned_scores(rest, kept, train_full, test_full):
    """PatchCore on grids whose border zones are moved onto the interior: each zone's
    features shifted to the interior's mean and scaled to the interior's total spread
    (statistics of the aggregated training grids); the interior is unchanged."""
    from sklearn.base import clone

    train = np.concatenate(list(transformed(rest, kept, train_full)))
    n, h, w, d = train.shape
    zone = zones(h, w)
    inner = train[:, zone == 4].reshape(-1, d).astype(np.float64)
    mean_in, spread_in = inner.mean(0), np.sqrt(inner.var(0).sum())
    stats = {}
    for z in range(4):
        part = train[:, zone == z].reshape(-1, d).astype(np.float64)
        stats[z] = (part.mean(0), spread_in / np.sqrt(part.var(0).sum()))

    def align(grids):
        grids = np.array(grids, dtype=np.float32)
        for z, (mean, scale) in stats.items():
            grids[:, zone == z] = (mean_in + (grids[:, zone == z] - mean) * scale).astype(
                np.float32
            )
        return grids

    detector = clone(rest[-1])
    start = time.perf_counter()
    detector.fit(align(train))
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = np.concatenate(
        [detector.score_patches(align(g)) for g in transformed(rest, kept, test_full)]
    )
    return out, fit_seconds, time.perf_counter() - start, len(detector.coreset_)


def zones(h, w):
    """(h, w) ints: 0 the corner cells, 1 the rest of ring 0, 2 ring 1, 3 ring 2, 4 deeper."""
    zone = np.minimum(ring_index(h, w), 3) + 1
    zone[corner_cells(h, w, size=1)] = 0
    return zone


def normalized(patches, oos, by):
    """Patch scores standardised by the training out-of-sample scores of their position
    (``by="position"``) or zone (``by="zone"``)."""
    if by == "position":
        mean, std = oos.mean(0), oos.std(0)
    else:
        zone = zones(*oos.shape[1:])
        mean, std = np.empty(zone.shape), np.empty(zone.shape)
        for z in np.unique(zone):
            mean[zone == z] = oos[:, zone == z].mean()
            std[zone == z] = oos[:, zone == z].std()
    return ((patches - mean) / np.maximum(std, 1e-12)).astype(np.float32)


def aggregate_reflect(grids, size=3):
    """``size`` x ``size`` mean over the grid mirrored by ``size // 2`` cells."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(grids)).permute(0, 3, 1, 2)
        r = size // 2
        x = F.avg_pool2d(F.pad(x, (r, r, r, r), mode="reflect"), size, stride=1)
        return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def reflect_aggregation_scores(rest, train_full, test_full, batch=64):
    """PatchCore as standard, but on grids aggregated over a mirrored border."""
    from sklearn.base import clone

    detector = clone(rest[-1])
    size = rest[0].size
    train = np.concatenate(
        [
            aggregate_reflect(np.asarray(train_full[s : s + batch]), size)
            for s in range(0, len(train_full), batch)
        ]
    )
    start = time.perf_counter()
    detector.fit(train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = np.concatenate(
        [
            detector.score_patches(aggregate_reflect(np.asarray(test_full[s : s + batch]), size))
            for s in range(0, len(test_full), batch)
        ]
    )
    return out, fit_seconds, time.perf_counter() - start, len(detector.coreset_)


def margin_map(patches, margin):
    """Outer ``margin`` rings left out: they take the score of the nearest kept cell."""
    inner = patches[:, margin:-margin, margin:-margin]
    return np.pad(inner, ((0, 0), (margin, margin), (margin, margin)), mode="edge")


# ----------------------------------------------------------------------------- measures
def truth_stats(data, h, w):
    """Where the defects lie: per defective image, does its mask touch the border?"""
    masks, labels = data["masks"], data["labels"]
    cells = cell_masks(masks, h, w)
    ring = ring_index(h, w)
    bad = labels == -1
    edge_px = (
        masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    )
    out = {
        "n_defective": int(bad.sum()),
        "touches_image_edge": float(edge_px[bad].mean()),
        "touches_ring0": float((cells & (ring == 0)).any((1, 2))[bad].mean()),
        "touches_ring01": float((cells & (ring <= 1)).any((1, 2))[bad].mean()),
        "touches_corner": float((cells & corner_cells(h, w)).any((1, 2))[bad].mean()),
        "area_in_ring0": float(cells[bad][:, ring == 0].sum() / max(cells[bad].sum(), 1)),
        "by_kind": {},
    }
    for kind in sorted(set(data["kinds"][bad])):
        k = data["kinds"] == kind
        out["by_kind"][kind] = {
            "n": int(k.sum()),
            "touches_ring0": float((cells & (ring == 0)).any((1, 2))[k].mean()),
        }
    return out, cells


def top_patch_stats(patches, data, cells):
    """Where each image's highest-scoring patch lies, for good and defective tiles."""
    n, h, w = patches.shape
    flat = patches.reshape(n, -1).argmax(1)
    i, j = np.divmod(flat, w)
    ring = ring_index(h, w)[i, j]
    corner = corner_cells(h, w)[i, j]
    labels = data["labels"]
    hit = dilate(cells)[np.arange(n), i, j]
    touches0 = (cells & (ring_index(h, w) == 0)).any((1, 2))

    def rates(sel):
        sides = {}
        for a, b in zip(i[sel & (ring == 0)], j[sel & (ring == 0)]):
            s = side_of(a, b, h, w)
            sides[s] = sides.get(s, 0) + 1
        return {
            "n": int(sel.sum()),
            "ring0": float((ring[sel] == 0).mean()),
            "ring01": float((ring[sel] <= 1).mean()),
            "corner": float(corner[sel].mean()),
            "ring0_sides": sides,
        }

    good, bad = labels == 1, labels == -1
    out = {"good": rates(good), "defective": rates(bad)}
    out["defective"]["top_on_defect"] = float(hit[bad].mean())
    # Border tops of defective tiles whose defect is nowhere near the border.
    off = bad & ~touches0
    out["defective"]["ring0_defect_off_border"] = (
        float((ring[off] == 0).mean()) if off.any() else None
    )
    on = bad & touches0
    out["defective"]["top_on_defect_when_defect_on_border"] = (
        float(hit[on].mean()) if on.any() else None
    )
    return out


def exceedance_by_zone(patches, labels):
    """Good tiles: share of the patches of each zone above the 99th percentile of the
    interior's (ring 3 and deeper) patch scores. 1 % for a zone that scores as the interior."""
    good = patches[labels == 1]
    zone = zones(*good.shape[1:])
    cut = np.quantile(good[:, zone == 4], 0.99)
    return {ZONES[z]: float((good[:, zone == z] > cut).mean()) for z in range(4)}


def coreset_zone_share(rest, kept, train_full):
    """Share of PatchCore's coreset entries taken from each zone of the grid (entries are
    copies of training patches, found again by their first four features)."""
    train = np.concatenate(list(transformed(rest, kept, train_full)))
    n, h, w, d = train.shape
    lookup = {tuple(r): i for i, r in enumerate(train.reshape(-1, d)[:, :4].tolist())}
    found = np.array([lookup.get(tuple(r), -1) for r in rest[-1].coreset_[:, :4].tolist()])
    zone = zones(h, w).ravel()[found % (h * w)]
    share = {ZONES[z]: float((zone[found >= 0] == z).mean()) for z in range(5)}
    share["unmatched"] = float((found < 0).mean())
    return share


def crop_test(args, data, methods, variants, settings):
    """The pipelines on the central crop of every tile (train and test), whose border is
    tile interior: do good tiles still score highest on the grid's border?"""
    lo = args.image_size // 8
    hi = args.image_size - lo
    labels = data["labels"]
    good = labels == 1
    out = {}
    for variant in variants:
        ft = feature_transformer(variant, hi - lo, args.pad, resolved_layers(settings))
        train = grids_of(
            ft, variant, np.ascontiguousarray(data["train"][:, lo:hi, lo:hi]), args.pad
        )
        test = grids_of(ft, variant, np.ascontiguousarray(data["test"][:, lo:hi, lo:hi]), args.pad)
        for method in methods:
            kept, rest, _, _ = fitted_parts(method, train, settings)
            patches, _ = patch_scores(rest, kept, test)
            n, h, w = patches.shape
            i, j = np.divmod(patches[good].reshape(int(good.sum()), -1).argmax(1), w)
            out[f"{method}/{variant}"] = {
                "crop": [lo, hi],
                "grid": h,
                "good_ring0": float((ring_index(h, w)[i, j] == 0).mean()),
                "good_corner": float(corner_cells(h, w)[i, j].mean()),
                "chance_ring0": float((h * w - (h - 2) * (w - 2)) / (h * w)),
                **exceedance_by_zone(patches, labels),
            }
            print(f"crop {method} {variant}: {out[f'{method}/{variant}']}", flush=True)
        del train, test
    return out


def spread_by_zone(train_full):
    """Total variance across training images of the features at each cell (no aggregation,
    every channel), averaged by zone, over that of the interior."""
    grids = np.asarray(train_full, dtype=np.float64)
    var = grids.var(axis=0).sum(axis=-1)
    zone = zones(*var.shape)
    interior = var[zone == 4].mean()
    return {ZONES[z]: float(var[zone == z].mean() / interior) for z in range(4)}


def aspect_rates(patches, data):
    """Good tiles: outer-ring share of top patches by width / height of the original tile."""
    labels, sizes = data["labels"], data["original_sizes"]
    aspect = sizes[:, 1] / sizes[:, 0]
    n, h, w = patches.shape
    i, j = np.divmod(patches.reshape(n, -1).argmax(1), w)
    ring0 = ring_index(h, w)[i, j] == 0
    bins = {
        "w/h < 0.75": aspect < 0.75,
        "0.75-1.33": (aspect >= 0.75) & (aspect <= 4 / 3),
        "w/h > 1.33": aspect > 4 / 3,
    }
    return {
        name: {
            "n": int((sel & (labels == 1)).sum()),
            "ring0": float(ring0[sel & (labels == 1)].mean())
            if (sel & (labels == 1)).any()
            else None,
        }
        for name, sel in bins.items()
    }


def accuracy(patches, data, top_k, sigma, score_from=None):
    """Image AUROC (overall and per kind) of the ``top_k`` image scores of ``score_from``
    (default ``patches``), pixel AUROC and AUPRO of the maps of ``patches``."""
    from sklearn_memad.detectors import image_scores_from_patches
    from sklearn_memad.maps import patch_to_pixel_maps
    from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

    scores = image_scores_from_patches(patches if score_from is None else score_from, top_k)
    maps = patch_to_pixel_maps(patches, data["masks"].shape[1:], sigma=sigma)
    good = data["labels"] == 1
    by_kind = {}
    for kind in sorted(set(data["kinds"][~good])):
        sel = good | (data["kinds"] == kind)
        by_kind[kind] = image_auroc(data["labels"][sel], scores[sel])
    return {
        "image_auroc_by_kind": by_kind,
        "image_auroc": image_auroc(data["labels"], scores),
        "pixel_auroc": pixel_auroc(data["masks"], maps),
        "aupro": aupro(data["masks"], maps),
    }


def padding_reach(args, data, variants, layers):
    """How far from an edge the padding changes the features: a 128 x 128 crop's grid
    against the same cells of the whole 256 x 256 tile, per ring of the crop grid."""
    good = data["test"][data["labels"] == 1][: args.reach_images]
    lo, hi = args.image_size // 4, 3 * args.image_size // 4
    out = {}
    for variant in variants:
        whole_ft = feature_transformer(variant, args.image_size, args.pad, layers)
        whole = grids_of(whole_ft, variant, good, args.pad)
        crop_ft = feature_transformer(variant, hi - lo, args.pad, layers)
        crop = grids_of(crop_ft, variant, np.ascontiguousarray(good[:, lo:hi, lo:hi]), args.pad)
        c0 = lo // STRIDE
        same = whole[:, c0 : c0 + crop.shape[1], c0 : c0 + crop.shape[2]]
        err = np.linalg.norm(crop - same, axis=-1) / np.linalg.norm(same, axis=-1).mean()
        ring = ring_index(*crop.shape[1:3])
        out[variant] = {f"ring{r}": float(err[:, ring == r].mean()) for r in range(4)}
        out[variant]["ring4+"] = float(err[:, ring >= 4].mean())
    return out


# ----------------------------------------------------------------------------- report
def _p(v):
    return "-" if v is None else f"{100 * v:.0f} %"


def markdown(meta, rows, truth, reach, aspect, exceed, spread, coreset_share, crops):
    n_good = rows[0]["top"]["good"]["n"]
    n_bad = rows[0]["top"]["defective"]["n"]
    g = meta["grid"]
    chance0 = (g * g - (g - 2) ** 2) / g**2
    chance01 = (g * g - (g - 4) ** 2) / g**2
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; load {meta['load_start']} at the "
        f"start, {meta['load_end']} at the end; torch threads {meta['threads']}. Standard "
        f"pipelines (`make_detector_pipeline(method)`: {meta['backbone']}, ImageNet weights, "
        f"{meta['image_size']} px, grid {g} x {g}; settings below) fitted on "
        f"{meta['n_train']} MTD training "
        f"tiles (seeded sample, seed {meta['seed']}, the same for every row), scoring all "
        f"{n_good + n_bad} test tiles ({n_good} good, {n_bad} defective). Images squashed to "
        f"{meta['image_size']} x {meta['image_size']} by `load_mvtec`; maps: patch map "
        f"upsampled and smoothed (sigma {meta['sigma']:g}), evaluated on the masks at that "
        "size. Outer ring = the 124 cells of ring 0; corner = the 2 x 2 cells at each corner. "
        f"By chance a top patch lies on ring 0 {100 * chance0:.0f} % of the time, on rings "
        f"0-1 {100 * chance01:.0f} %, in a corner block {100 * 16 / g**2:.1f} %.",
        "",
        "Settings: `shipped` pins the standard pipelines' defaults of commit fcb7af7 (those "
        "issue 22 measured); `current` is `make_detector_pipeline(method)` of the checkout "
        "at the time of the run (defaults being changed by issue 22 item 2, uncommitted):",
        "",
        *[
            f"- `{settings}`: "
            + "; ".join(f"{NAMES[m]} {_settings_text(d)}" for m, d in by_method.items())
            for settings, by_method in meta["pipelines"].items()
        ],
        "",
        "## Where the defects are (ground truth)",
        "",
        f"Of the {truth['n_defective']} defective test tiles, the mask touches the image's "
        f"outermost pixel in {_p(truth['touches_image_edge'])}, the outer ring of cells "
        f"(outer {STRIDE} px) in {_p(truth['touches_ring0'])}, the outer two rings in "
        f"{_p(truth['touches_ring01'])}, a corner block in {_p(truth['touches_corner'])}; "
        f"{_p(truth['area_in_ring0'])} of all defect cells are ring-0 cells. By kind (ring 0): "
        + ", ".join(
            f"{k} {_p(v['touches_ring0'])} of {v['n']}" for k, v in truth["by_kind"].items()
        )
        + ".",
        "",
        "## Accuracy and top-patch position, per feature variant and scoring remedy",
        "",
        "Top patch on ring 0 / rings 0-1 / corner, for good and defective tiles; 'on defect': "
        "defective tiles whose top patch lies on (or next to) a defect cell; 'off-border "
        "defects, top on ring 0': defective tiles whose defect does not touch ring 0 but "
        "whose top patch is there. Fit s: the detector steps only (features cached). "
        "Features: " + "; ".join(f"`{k}` {v}" for k, v in FEATURE_NOTES.items()) + ". "
        "Remedies: "
        + "; ".join(f"`{k}` {REMEDY_NOTES[k]}" for k in dict.fromkeys(r["remedy"] for r in rows))
        + ".",
        "",
        "| settings | detector | features | remedy | image AUROC | pixel AUROC | AUPRO | "
        "good: ring 0 / 0-1 "
        "/ corner | defective: ring 0 / 0-1 / corner | on defect | off-border defects, top on "
        "ring 0 | fit s | score ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["top"]
        gd, bd = t["good"], t["defective"]
        lines.append(
            f"| {r['settings']} | {NAMES[r['method']]} | {r['variant']} | {r['remedy']} | "
            f"{r['image_auroc']:.3f} | "
            f"{r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {_p(gd['ring0'])} / {_p(gd['ring01'])}"
            f" / {_p(gd['corner'])} | {_p(bd['ring0'])} / {_p(bd['ring01'])} / "
            f"{_p(bd['corner'])} | {_p(bd['top_on_defect'])} | "
            f"{_p(bd['ring0_defect_off_border'])} | {r['fit_seconds']:.0f} | "
            f"{r['score_ms_per_image']:.1f} |"
        )
    kinds = list(rows[0]["image_auroc_by_kind"])
    lines += [
        "",
        "## Image AUROC per defect kind (the kind's tiles against the good tiles)",
        "",
        "Every remedy on the shipped features (`zero`), and each padding without a remedy. "
        "Ring 0 touched by the defect: "
        + ", ".join(f"{k} {_p(truth['by_kind'][k]['touches_ring0'])}" for k in kinds)
        + ". Last column: defective tiles whose defect touches ring 0 and whose top patch "
        "lies on (or next to) it.",
        "",
        "| settings | detector | features | remedy | "
        + " | ".join(kinds)
        + " | on defect, border defects |",
        "|---|---|---|---|" + "---|" * (len(kinds) + 1),
    ]
    for r in rows:
        if r["variant"] != "zero" and r["remedy"] != "none":
            continue
        lines.append(
            f"| {r['settings']} | {NAMES[r['method']]} | {r['variant']} | {r['remedy']} | "
            + " | ".join(f"{r['image_auroc_by_kind'][k]:.3f}" for k in kinds)
            + f" | {_p(r['top']['defective']['top_on_defect_when_defect_on_border'])} |"
        )
    lines += [
        "",
        "## Which side: good tiles' ring-0 top patches (no remedy)",
        "",
        "| settings | detector | features | top | bottom | left | right | corner cell |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["remedy"] != "none":
            continue
        s = r["top"]["good"]["ring0_sides"]
        lines.append(
            f"| {r['settings']} | {NAMES[r['method']]} | {r['variant']} | "
            + " | ".join(str(s.get(k, 0)) for k in ("top", "bottom", "left", "right", "corner"))
            + " |"
        )
    lines += [
        "",
        "## Cause: border patches of good tiles against the interior",
        "",
        "Share of good tiles' patches in each zone above the 99th percentile of their "
        "interior (ring 3 and deeper) patch scores, no remedy; 1 % means the zone scores "
        "like the interior. Corner cells: the 4 corner cells; ring 0 edges: the other 120.",
        "",
        "| settings | detector | features | " + " | ".join(ZONES[:4]) + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for (settings, method, variant), e in exceed.items():
        lines.append(
            f"| {settings} | {NAMES[method]} | {variant} | "
            + " | ".join(_p(e[z]) for z in ZONES[:4])
            + " |"
        )
    lines += [
        "",
        "Spread of the training features (before aggregation or projection, every channel): "
        "total variance across the training tiles at a cell, mean over the zone, over that of "
        "the interior. 1.00: the zone's features vary across tiles as much as the interior's.",
        "",
        "| settings | features | " + " | ".join(ZONES[:4]) + " |",
        "|---|---|---|---|---|---|",
    ]
    for (settings, variant), v in spread.items():
        lines.append(
            f"| {settings} | {variant} | " + " | ".join(f"{v[z]:.2f}" for z in ZONES[:4]) + " |"
        )
    if coreset_share:
        g = meta["grid"]
        cells = np.bincount(zones(g, g).ravel(), minlength=5) / g**2
        lines += [
            "",
            "PatchCore's coreset (no remedy): share of its entries taken from each zone, "
            "against the zone's share of the grid's cells.",
            "",
            "| settings | features | " + " | ".join(ZONES) + " |",
            "|---|---|---|---|---|---|---|",
            "| | share of cells | " + " | ".join(f"{100 * c:.1f} %" for c in cells) + " |",
        ]
        for (settings, variant), v in coreset_share.items():
            lines.append(
                f"| {settings} | {variant} | "
                + " | ".join(f"{100 * v[z]:.1f} %" for z in ZONES)
                + " |"
            )
    if crops:
        first = next(iter(crops.values()))
        lo, hi = first["crop"]
        lines += [
            "",
            "## Cause: tile edges or grid edge? The central crop test",
            "",
            f"The `{meta['settings'][0]}` pipelines fitted and scored on the central "
            f"{hi - lo} x {hi - lo} px "
            f"(pixels {lo}-{hi}) of every squashed tile, whose border is tile interior, not "
            f"tile edge (grid {first['grid']} x {first['grid']}; a top patch lies on ring 0 "
            f"{100 * first['chance_ring0']:.0f} % of the time by chance). Good tiles: top "
            "patch on ring 0, in a corner block, and the zones' share above the interior's "
            "99th percentile.",
            "",
            "| detector | features | good: top on ring 0 | good: top in a corner block | "
            + " | ".join(ZONES[:4])
            + " |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, v in crops.items():
            method, variant = key.split("/")
            lines.append(
                f"| {NAMES[method]} | {variant} | {_p(v['good_ring0'])} | "
                f"{_p(v['good_corner'])} | " + " | ".join(_p(v[z]) for z in ZONES[:4]) + " |"
            )
    if reach:
        lines += [
            "",
            "## Cause: how far each padding reaches into the features",
            "",
            f"Features (`{meta['settings'][0]}` layers) of a 128 x 128 crop (the centre of "
            f"{len_or(meta, 'reach_images')} good "
            "tiles) against those of the same cells computed inside the whole tile: mean "
            "distance / mean norm, by ring of the crop's 16 x 16 grid. The crop's edge is no "
            "tile edge, so any difference is what the padding put in place of real context.",
            "",
            "| features | ring 0 | ring 1 | ring 2 | ring 3 | ring 4+ |",
            "|---|---|---|---|---|---|",
        ]
        for variant, v in reach.items():
            lines.append(
                f"| {variant} | "
                + " | ".join(f"{v[k]:.3f}" for k in ("ring0", "ring1", "ring2", "ring3", "ring4+"))
                + " |"
            )
    lines += [
        "",
        "## Cause: squashing (good tiles, top patch on ring 0, by the tile's width / height)",
        "",
        "| settings | detector | features | "
        + " | ".join(f"{k}" for k in next(iter(aspect.values())))
        + " |",
        "|---|---|---|" + "---|" * len(next(iter(aspect.values()))),
    ]
    for (settings, method, variant), a in aspect.items():
        lines.append(
            f"| {settings} | {NAMES[method]} | {variant} | "
            + " | ".join(f"{_p(v['ring0'])} (n {v['n']})" for v in a.values())
            + " |"
        )
    lines += [
        "",
        "Feature time per image (ms, the backbone only, one torch thread, measured when "
        "the grids were cached, on a shared machine: indicative only): "
        + ", ".join(f"{k} {v:.0f}" for k, v in meta["feature_ms"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _settings_text(d):
    parts = ["layers " + " + ".join(d["layers"])]
    agg = d.get("localaggregation")
    if agg:
        parts.append(f"{agg['size']} x {agg['size']} aggregation")
    if d.get("max_features"):
        parts.append(f"{d['max_features']} features")
    proj = d.get("randomprojection")
    if proj:
        parts.append(f"{proj['n_components']} projected features")
    parts.append("the largest patch score" if d["top_k"] == 1 else f"top-{d['top_k']} mean")
    return ", ".join(parts)


def len_or(meta, key):
    return meta.get(key, "?")


# ----------------------------------------------------------------------------- main
def measure(
    args, data, cells, grids, settings, variant, method, t_all, exceed, aspect, coreset_share
):
    """Fit ``method``'s pipeline on the cached grids, score the test tiles, apply every
    remedy; the result rows (diagnostics are added to the dicts passed in)."""
    kept, rest, fit_seconds, oos = fitted_parts(method, grids["train"], settings)
    patches, score_seconds = patch_scores(rest, kept, grids["test"])
    np.save(CACHE / f"border_{settings}_{variant}_{method}_patches.npy", patches)
    top_k = rest[-1].top_k
    g = patches.shape[1]
    exceed[(settings, method, variant)] = exceedance_by_zone(patches, data["labels"])
    if method == "patchcore":
        coreset_share[(settings, variant)] = coreset_zone_share(rest, kept, grids["train"])
    aspect[(settings, method, variant)] = aspect_rates(patches, data)
    rows = []
    for remedy in args.remedies:
        extra = {}
        if remedy in ("rings", "ringsauto", "ringsnorm", "zonealign", "aggreflect"):
            if method != "patchcore":
                continue
            if remedy == "zonealign":
                p, fit_s, score_s, entries = zone_aligned_scores(
                    rest, kept, grids["train"], grids["test"]
                )
            elif remedy == "aggreflect":
                p, fit_s, score_s, entries = reflect_aggregation_scores(
                    rest, grids["train"], grids["test"]
                )
            else:
                p, fit_s, score_s, entries = ring_memory_scores(
                    rest,
                    kept,
                    grids["train"],
                    grids["test"],
                    own_ratio=remedy == "ringsauto",
                    norm=remedy == "ringsnorm",
                )
            extra = {"coreset_entries": entries}
        elif remedy in ("posnorm", "zonenorm"):
            by = "position" if remedy == "posnorm" else "zone"
            p, fit_s, score_s = normalized(patches, oos, by), fit_seconds, score_seconds
        elif remedy.startswith("margin"):
            p, fit_s, score_s = margin_map(patches, int(remedy[6:])), fit_seconds, score_seconds
        else:
            p, fit_s, score_s = patches, fit_seconds, score_seconds
            if method == "patchcore":
                extra = {"coreset_entries": len(rest[-1].coreset_)}
        # Where the image score comes from: for a margin, the kept cells only (the map's
        # filled-in border repeats their values and would count twice in a top-k mean).
        located = p
        if remedy.startswith("margin"):
            located = np.where(ring_index(g, g) < int(remedy[6:]), -np.inf, p)
        row = {
            "settings": settings,
            "method": method,
            "variant": variant,
            "remedy": remedy,
            "top_k": int(top_k),
            **accuracy(p, data, top_k, args.sigma, score_from=located),
            "top": top_patch_stats(located, data, cells),
            "fit_seconds": fit_s,
            "score_ms_per_image": 1e3 * score_s / len(p),
            **extra,
        }
        rows.append(row)
        print(
            f"[{time.perf_counter() - t_all:.0f} s] {settings} {method} {variant} {remedy}: "
            f"{row['image_auroc']:.3f} {row['pixel_auroc']:.3f} {row['aupro']:.3f} "
            f"good ring0 {row['top']['good']['ring0']:.2f} "
            f"bad ring0 {row['top']['defective']['ring0']:.2f}",
            flush=True,
        )
    return rows


def main(argv=None):
    args = parse_args(argv)
    out = HERE / "results"
    if args.report_only:
        saved = json.loads((out / f"{args.name}.json").read_text())
        table = markdown(*_from_json(saved))
        (out / f"{args.name}.md").write_text(table)
        print(table)
        return
    import torch

    torch.set_num_threads(args.threads)
    load_start = load_average()
    t_all = time.perf_counter()
    data = load_data(args)
    g = args.image_size // STRIDE
    truth, cells = truth_stats(data, g, g)
    print(json.dumps(truth), flush=True)
    rows, exceed, aspect, feature_ms, spread, coreset_share = [], {}, {}, {}, {}, {}
    pipelines = {}
    for number, settings in enumerate(args.settings):
        layers = resolved_layers(settings)
        pipelines[settings] = {method: describe(method, settings) for method in args.methods}
        for variant in args.variants if number == 0 else args.other_variants:
            grids, info = cached_grids(args, variant, data, layers)
            feature_ms[f"{settings}/{variant}"] = info["ms_per_image"]
            print(
                f"[{time.perf_counter() - t_all:.0f} s] {settings} {variant}: {info}", flush=True
            )
            spread[(settings, variant)] = spread_by_zone(grids["train"])
            for method in args.methods:
                rows += measure(
                    args,
                    data,
                    cells,
                    grids,
                    settings,
                    variant,
                    method,
                    t_all,
                    exceed,
                    aspect,
                    coreset_share,
                )
            del grids
    first = args.settings[0]
    reach = {}
    if args.reach_images:
        reach = padding_reach(args, data, args.variants, resolved_layers(first))
    crops = {}
    if args.crop_variants:
        crops = crop_test(args, data, args.methods, args.crop_variants, first)
    from sklearn_memad import defaults

    meta = {
        **run_meta("border", argv, load_start),
        "command": run_meta("border", argv, load_start)["command"].strip(),
        "data": str(args.data),
        "n_train": args.n_train,
        "seed": args.seed,
        "train_files": data["train_names"],
        "image_size": args.image_size,
        "grid": g,
        "backbone": defaults.BACKBONE,
        "pad": args.pad,
        "sigma": args.sigma,
        "threads": args.threads,
        "reach_images": args.reach_images,
        "settings": args.settings,
        "pipelines": pipelines,
        "feature_ms": feature_ms,
        "wall_seconds": time.perf_counter() - t_all,
    }
    result = {
        "meta": meta,
        "truth": truth,
        "rows": rows,
        "exceedance": {"/".join(k): e for k, e in exceed.items()},
        "aspect": {"/".join(k): a for k, a in aspect.items()},
        "padding_reach": reach,
        "feature_spread": {"/".join(k): v for k, v in spread.items()},
        "coreset_share": {"/".join(k): v for k, v in coreset_share.items()},
        "crop_test": crops,
    }
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1, default=_json_default))
    table = markdown(meta, rows, truth, reach, aspect, exceed, spread, coreset_share, crops)
    (out / f"{args.name}.md").write_text(table)
    print(table)


def _from_json(saved):
    """``markdown``'s arguments from a saved results file."""

    def pairs(d):
        return {tuple(k.split("/")): v for k, v in d.items()}

    return (
        saved["meta"],
        saved["rows"],
        saved["truth"],
        saved["padding_reach"],
        pairs(saved["aspect"]),
        pairs(saved["exceedance"]),
        pairs(saved["feature_spread"]),
        pairs(saved["coreset_share"]),
        saved["crop_test"],
    )


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


if __name__ == "__main__":
    main()
