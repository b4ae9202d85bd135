"""Defaults chosen across data sets: PatchCore, PaDiM and DFKDE on MTD and ELPV (mono, poly).

Issue 22, items 2-4. For every data set, EfficientNet-Lite0 (offline ImageNet weights),
200 training images and each image size, features of ``_blocks.4``, ``_blocks.10`` and
``_blocks.14`` are extracted once (cached in ``results/tmp/sweep_*``); the layer set
``_blocks.4,_blocks.10`` (the current default) is the first 152 channels of that grid (the
library resamples every layer on its own onto the finest grid, so the slice is exact). Then,
per layer set, every detector setting is fitted once and every image score (``top_k``) is read
off the same patch scores:

- PatchCore: aggregation size x top_k (coreset "auto", 1 neighbour, seed 0); with
  ``--coreset``, larger coreset ratios (``agg{a}_cs{ratio}``) for some aggregation sizes and
  layer sets only, as they cost more;
- PaDiM: channels (the random subset a FeatureTransformer(max_features=m, random_state=0)
  keeps, as the standard pipeline does) x top_k (reg 0.01);
- DFKDE: Gaussian projection size (seed 0) x bandwidth x top_k (``--extra-projection``
  sizes with the first bandwidth only).

Calibration (``offset_``) is skipped: no metric here reads it. Patch scores keep every
patch (``border=0``); ``benchmarks/defaults_check.py`` measures the border.

Data sets (200 training images each, seeded):

- ``mtd``: Magnetic-Tile defects in MVTec layout (``--mtd``), 200 of the 762 training tiles
  (``RandomState(0)``), all 582 test tiles; image AUROC, pixel AUROC (all test tiles) and
  AUPRO (defective tiles, as ``run.py``), maps smoothed with sigma 4;
- ``elpv_mono``, ``elpv_poly``: ELPV solar cells (``benchmarks/elpv.py``; CC BY-NC-SA 4.0;
  Buerhop-Lutz et al. 2018, Deitsch et al. 2019): normal = p 0, defective = p >= 2/3, p 1/3
  left out; image AUROC only.

The test images of each set are split into halves A and B (each kind halved at random,
``RandomState(0)``, as ``decisions.halves``). Settings are chosen on A and confirmed on B.
The proposal per detector maximises the mean over the sets of image AUROC on A.

The current tables (about 50 minutes of detector and feature work on 2 shared cores, load
about 5; rows are cached in ``results/tmp/sweep_rows.json``, so a rerun resumes)::

    python benchmarks/defaults_sweep.py --sizes 256 --extra-projection 64 --timing-images 64

and the MTD-only check of a larger PatchCore coreset (``defaults_sweep_coreset_mtd``)::

    python benchmarks/defaults_sweep.py --sets mtd --sizes 256 --coreset 0.05 \\
        --coreset-aggregation 3 7 --timing-images 0 --name defaults_sweep_coreset_mtd
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

from sklearn_memad import (
    DFKDEDetector,
    FeatureTransformer,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
)
from sklearn_memad.datasets import load_mvtec
from sklearn_memad.detectors import image_scores_from_patches
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from decisions import halves  # noqa: E402
from elpv import load_elpv  # noqa: E402
from merge_quality import load_average, run_meta, save_results  # noqa: E402

BACKBONE = "efficientnet_lite0"
ALL_LAYERS = ("_blocks.4", "_blocks.10", "_blocks.14")
LAYER_SETS = {"b4+b10": ALL_LAYERS[:2], "b4+b10+b14": ALL_LAYERS}
SETS = ("mtd", "elpv_mono", "elpv_poly")
DETECTORS = ("patchcore", "padim", "dfkde")
TMP = HERE / "results" / "tmp"
CHUNK = 128
SIGMA = 4.0
#: The shipped defaults (sklearn_memad/defaults.py, pipelines.make_detector_pipeline).
CURRENT = {
    "patchcore": dict(size=256, layers="b4+b10", param="agg3", top_k=1),
    "padim": dict(size=256, layers="b4+b10", param="ch100", top_k=1),
    "dfkde": dict(size=256, layers="b4+b10", param="proj16_scott", top_k=1),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mtd", default=str(HERE.parents[1] / "shared" / "data" / "mtd"))
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--sizes", type=int, nargs="+", default=[256])
    p.add_argument("--layer-sets", nargs="+", default=list(LAYER_SETS), choices=list(LAYER_SETS))
    p.add_argument("--aggregation", type=int, nargs="+", default=[3, 5, 7])
    p.add_argument(
        "--coreset", type=float, nargs="*", default=[], help="PatchCore ratios besides 'auto'"
    )
    p.add_argument("--coreset-aggregation", type=int, nargs="+", default=[3])
    p.add_argument("--coreset-layers", nargs="+", default=["b4+b10+b14"])
    p.add_argument("--channels", type=int, nargs="+", default=[100, 200])
    p.add_argument("--projection", type=int, nargs="+", default=[16, 32])
    p.add_argument(
        "--extra-projection",
        type=int,
        nargs="*",
        default=[],
        help="DFKDE projection sizes tried with the first bandwidth only",
    )
    p.add_argument("--bandwidth", nargs="+", default=["scott", "0.5", "1", "2"])
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 10, 30])
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--timing-images", type=int, default=64, help="0 skips the timing")
    p.add_argument("--fresh", action="store_true", help="ignore cached rows")
    p.add_argument("--name", default="defaults_sweep")
    p.add_argument("--report-only", action="store_true", help="re-render NAME.md from NAME.json")
    return p.parse_args(argv)


# ---------------------------------------------------------------- data and features
def load_set(name, size, args):
    """Bunch-like dict: train, images, labels, kinds, masks (None for ELPV), first (half A)."""
    if name == "mtd":
        train = load_mvtec(args.mtd, "train", image_size=(size, size))
        test = load_mvtec(args.mtd, "test", image_size=(size, size))
        pick = np.sort(np.random.RandomState(0).choice(len(train.images), args.n_train, False))
        data = dict(
            train=train.images[pick],
            images=test.images,
            labels=test.labels,
            kinds=test.kinds,
            masks=test.masks,
            paths=test.paths,
            original_sizes=test.original_sizes,
        )
    else:
        d = load_elpv(name.split("_")[1], size, n_train=args.n_train, seed=0)
        data = dict(train=d.train, images=d.images, labels=d.labels, kinds=d.kinds, masks=None)
    data["first"] = halves(data["labels"], data["kinds"], np.random.RandomState(0))
    return data


def cached_features(name, size, data):
    """(train grids, test grids) of all three layers, memory-mapped from the cache."""
    paths = {part: TMP / f"sweep_{name}_{size}_{part}.npy" for part in ("train", "test")}
    info = TMP / f"sweep_{name}_{size}_features.json"
    if not all(p.exists() for p in paths.values()) or not info.exists():
        TMP.mkdir(parents=True, exist_ok=True)
        ft = FeatureTransformer(
            backbone=BACKBONE, layers=ALL_LAYERS, image_size=None, random_state=0
        ).fit(data["train"][:2])
        start = time.perf_counter()
        for part, images in (("train", data["train"]), ("test", data["images"])):
            np.save(paths[part], ft.transform(images))
        seconds = time.perf_counter() - start
        n = len(data["train"]) + len(data["images"])
        info.write_text(json.dumps({"seconds": seconds, "images": n, "load": load_average()}))
    grids = tuple(np.load(paths[p], mmap_mode="r") for p in ("train", "test"))
    return grids, json.loads(info.read_text())


@functools.lru_cache
def layer_channels(size):
    """Channels of each layer set: a FeatureTransformer's feature_shape_ (probe only)."""
    probe = np.zeros((1, size, size, 3), np.uint8)
    return {
        key: FeatureTransformer(backbone=BACKBONE, layers=layers, image_size=None)
        .fit(probe)
        .feature_shape_[2]
        for key, layers in LAYER_SETS.items()
    }


@functools.lru_cache
def padim_channels(layers, size, m):
    """The channels the standard PaDiM pipeline keeps: FeatureTransformer(max_features=m)."""
    probe = np.zeros((1, size, size, 3), np.uint8)
    ft = FeatureTransformer(
        backbone=BACKBONE, layers=layers, image_size=None, max_features=m, random_state=0
    ).fit(probe)
    return ft.features_kept_  # None when m >= the channel count (all are kept)


# ---------------------------------------------------------------- detectors
class _RankingOnlyPatchCore(PatchCoreDetector):
    """PatchCore without the leave-one-image-out pass that only sets ``offset_``."""

    def _out_of_sample_patch_scores(self, grids):
        self.__dict__.pop("_selection", None)
        return np.zeros(grids.shape[:3])


class _RankingOnlyDFKDE(DFKDEDetector):
    """DFKDE without the held-out scoring of its training images that only sets ``offset_``."""

    def _out_of_sample_patch_scores(self, grids):
        self.__dict__.pop("_own_slots", None)
        return np.zeros(grids.shape[:3])


def _chunked(fn, grids):
    out = [fn(np.ascontiguousarray(grids[i : i + CHUNK])) for i in range(0, len(grids), CHUNK)]
    return np.concatenate(out).astype(np.float32)


def settings(detector, args, n_channels, layer_key):
    """(param key, fit-and-score function) of every setting of ``detector``."""
    if detector == "patchcore":
        for a in args.aggregation:
            yield f"agg{a}", lambda tr, te, a=a: _patchcore(tr, te, a, "auto")
        for ratio in args.coreset:  # larger coresets: costly, so only on some layers/sizes
            for a in args.coreset_aggregation:
                if layer_key in args.coreset_layers:
                    yield (
                        f"agg{a}_cs{ratio:g}",
                        lambda tr, te, a=a, r=ratio: _patchcore(tr, te, a, r),
                    )
    elif detector == "padim":
        for m in args.channels:
            if m < n_channels or m == max(args.channels):  # m >= d keeps them all, once
                yield f"ch{min(m, n_channels)}", lambda tr, te, kept: _padim(tr, te, kept)
    else:
        pairs = [(d, bw) for d in args.projection for bw in args.bandwidth]
        pairs += [(d, args.bandwidth[0]) for d in args.extra_projection]
        for d, bw in pairs:
            yield f"proj{d}_{bw}", lambda tr, te, d=d, bw=bw: _dfkde(tr, te, d, bw)


def _patchcore(train, test, size, ratio):
    agg = LocalAggregation(size=size)
    det = _RankingOnlyPatchCore(coreset_ratio=ratio, n_neighbors=1, random_state=0, border=0)
    det.fit(agg.fit_transform(np.ascontiguousarray(train)))
    fit_s = time.perf_counter()
    patches = _chunked(lambda g: det.score_patches(agg.transform(g)), test)
    return patches, fit_s, {"coreset": int(det.coreset_.shape[0])}


def _padim(train, test, kept):
    tr = np.ascontiguousarray(train if kept is None else train[..., kept])
    det = PaDiMDetector(border=0).fit(tr)
    del tr
    fit_s = time.perf_counter()
    pick = (lambda g: g) if kept is None else (lambda g: g[..., kept])
    return _chunked(lambda g: det.score_patches(pick(g)), test), fit_s, {}


def _dfkde(train, test, d, bandwidth):
    proj = RandomProjection(n_components=d, random_state=0)
    bw = bandwidth if bandwidth in ("scott", "silverman") else float(bandwidth)
    det = _RankingOnlyDFKDE(bandwidth=bw, border=0).fit(
        proj.fit_transform(np.ascontiguousarray(train))
    )
    fit_s = time.perf_counter()
    patches = _chunked(lambda g: det.score_patches(proj.transform(g)), test)
    return patches, fit_s, {"bandwidth_": det.bandwidth_}


# ---------------------------------------------------------------- metrics
def _halved(metric, truth, scores, first):
    return {
        "all": metric(truth, scores),
        "a": metric(truth[first], scores[first]),
        "b": metric(truth[~first], scores[~first]),
    }


def evaluate(patches, data, size, top_ks):
    first, labels = data["first"], data["labels"]
    row = {
        f"image_top{k}": _halved(image_auroc, labels, image_scores_from_patches(patches, k), first)
        for k in top_ks
    }
    if data["masks"] is not None:
        maps = patch_to_pixel_maps(patches, (size, size), sigma=SIGMA)
        masks = data["masks"]
        row["pixel_auroc"] = _halved(pixel_auroc, masks, maps, first)
        bad = labels == -1
        row["aupro"] = {
            "all": aupro(masks[bad], maps[bad]),
            "a": aupro(masks[bad & first], maps[bad & first]),
            "b": aupro(masks[bad & ~first], maps[bad & ~first]),
        }
    return row


# ---------------------------------------------------------------- the sweep
def sweep(args, rows):
    cache = TMP / "sweep_rows.json"
    features_info = {}
    for name in args.sets:
        for size in args.sizes:
            data = load_set(name, size, args)
            (train, test), info = cached_features(name, size, data)
            features_info[f"{name}|{size}"] = {
                **info,
                "n_train": int(len(train)),
                "n_test": int(len(test)),
                "n_a": int(data["first"].sum()),
                "n_b": int((~data["first"]).sum()),
                "n_defective": int((data["labels"] == -1).sum()),
            }
            channels = layer_channels(size)
            for layer_key in args.layer_sets:
                c = channels[layer_key]
                tr, te = train[..., :c], test[..., :c]
                for detector in DETECTORS:
                    for param, run in settings(detector, args, c, layer_key):
                        key = f"{name}|{size}|{layer_key}|{detector}|{param}"
                        if key in rows and all(f"image_top{k}" in rows[key] for k in args.top_k):
                            continue
                        start = time.perf_counter()
                        if detector == "padim":
                            kept = padim_channels(LAYER_SETS[layer_key], size, int(param[2:]))
                            patches, fitted, extra = run(tr, te, kept)
                        else:
                            patches, fitted, extra = run(tr, te)
                        end = time.perf_counter()
                        row = {
                            "set": name,
                            "size": size,
                            "layers": layer_key,
                            "detector": detector,
                            "param": param,
                            **extra,
                            "fit_s": fitted - start,
                            "score_ms_per_image": 1000 * (end - fitted) / len(te),
                            **evaluate(patches, data, size, args.top_k),
                        }
                        rows[key] = row
                        cache.write_text(json.dumps(rows))
                        print(key, _brief(row, args.top_k), flush=True)
            del train, test, data
    return features_info


def requested_keys(args):
    """The row keys this command's settings name (the cache may hold others)."""
    keys = []
    for size in args.sizes:
        channels = layer_channels(size)
        for name in args.sets:
            for layer_key in args.layer_sets:
                for detector in DETECTORS:
                    for param, _ in settings(detector, args, channels[layer_key], layer_key):
                        keys.append(f"{name}|{size}|{layer_key}|{detector}|{param}")
    return keys


def _brief(row, top_ks):
    parts = [f"top{k} {row[f'image_top{k}']['all']:.3f}" for k in top_ks]
    if "pixel_auroc" in row:
        parts.append(f"px {row['pixel_auroc']['all']:.3f} pro {row['aupro']['all']:.3f}")
    return " ".join(parts) + f" fit {row['fit_s']:.1f}s score {row['score_ms_per_image']:.1f}ms"


def candidates(rows, detector, sets, top_ks):
    """Every (size, layers, param, top_k) of ``detector`` measured on all ``sets``."""
    table = {}
    for r in rows.values():
        if r["detector"] != detector or r["set"] not in sets:
            continue
        for k in top_ks:
            cfg = (r["size"], r["layers"], r["param"], k)
            table.setdefault(cfg, {})[r["set"]] = r
    return {cfg: by_set for cfg, by_set in table.items() if len(by_set) == len(sets)}


def cfg_dict(cfg):
    return dict(zip(("size", "layers", "param", "top_k"), cfg))


def cell(by_set, s, k, half):
    return by_set[s][f"image_top{k}"][half]


def choose(rows, args):
    """Per detector: the proposal (best mean A), each set's own best on A, the current."""
    out = {}
    for det in DETECTORS:
        cands = candidates(rows, det, args.sets, args.top_k)
        if not cands:
            continue

        def mean_a(cfg, cands=cands):
            return np.mean([cell(cands[cfg], s, cfg[3], "a") for s in args.sets])

        ranked = sorted(cands, key=mean_a, reverse=True)
        current = tuple(CURRENT[det][k] for k in ("size", "layers", "param", "top_k"))
        per_set = {
            s: max(cands, key=lambda cfg, s=s: cell(cands[cfg], s, cfg[3], "a")) for s in args.sets
        }
        out[det] = {
            "proposal": cfg_dict(ranked[0]),
            "top": [cfg_dict(c) for c in ranked[:5]],
            "current": cfg_dict(current) if current in cands else None,
            "best_per_set_on_a": {s: cfg_dict(c) for s, c in per_set.items()},
            "n_candidates": len(cands),
        }
    return out


def lookup(rows, det, cfg, s):
    return rows.get(f"{s}|{cfg['size']}|{cfg['layers']}|{det}|{cfg['param']}")


def gap_check(rows, choice, sets, which):
    """Per set: image AUROC (all, A, B) of each detector's ``which`` setting, and the gap."""
    out = {}
    for s in sets:
        values = {}
        for det, c in choice.items():
            cfg = c[which]
            r = cfg and lookup(rows, det, cfg, s)
            if r:
                values[det] = r[f"image_top{cfg['top_k']}"]
        out[s] = {
            "auroc": values,
            "gap": {
                h: max(v[h] for v in values.values()) - min(v[h] for v in values.values())
                for h in ("all", "a", "b")
            }
            if values
            else None,
        }
    return out


# ---------------------------------------------------------------- timing
def timing(args, choice):
    """ms per image of a real pipeline (features + projection/aggregation + detector) on MTD."""
    from sklearn_memad.pipelines import DetectorPipeline

    out = {}
    data = None
    for det, c in choice.items():
        for which in ("current", "proposal"):
            cfg = c[which]
            if cfg is None:
                continue
            if data is None or data["size"] != cfg["size"]:
                data = load_set("mtd", cfg["size"], args)
                data["size"] = cfg["size"]
            steps = _pipeline_steps(det, cfg)
            pipe = DetectorPipeline([(type(s).__name__.lower(), s) for s in steps])
            start = time.perf_counter()
            pipe.fit(data["train"])
            fit_s = time.perf_counter() - start
            images = data["images"][: args.timing_images]
            pipe.score_samples(images[:4])  # warm-up
            start = time.perf_counter()
            pipe.score_samples(images)
            score_s = time.perf_counter() - start
            out[f"{det}|{which}"] = {
                "fit_s": fit_s,
                "score_ms_per_image": 1000 * score_s / len(images),
                "n_images": len(images),
                "load": load_average(),
                **cfg,
            }
            print(det, which, out[f"{det}|{which}"], flush=True)
    return out


def _pipeline_steps(det, cfg):
    layers = LAYER_SETS[cfg["layers"]]
    p, k = cfg["param"], cfg["top_k"]
    if det == "padim":
        m = int(p[2:])
        ft = FeatureTransformer(
            backbone=BACKBONE, layers=layers, image_size=None, max_features=m, random_state=0
        )
        return [ft, PaDiMDetector(top_k=k)]
    ft = FeatureTransformer(backbone=BACKBONE, layers=layers, image_size=None, random_state=0)
    if det == "patchcore":
        return [
            ft,
            LocalAggregation(size=int(p[3:])),
            PatchCoreDetector(coreset_ratio="auto", top_k=k, random_state=0),
        ]
    d, bw = p[4:].split("_")
    bw = bw if bw in ("scott", "silverman") else float(bw)
    return [
        ft,
        RandomProjection(n_components=int(d), random_state=0),
        DFKDEDetector(bandwidth=bw, top_k=k),
    ]


# ---------------------------------------------------------------- report
def _cfg_name(cfg):
    return f"{cfg['size']} px, {cfg['layers']}, {cfg['param']}, top{cfg['top_k']}"


def _m(metric, half="all"):
    return "-" if metric is None else f"{metric[half]:.3f}"


def _row_cells(r, cfg, sets):
    cells = []
    for s in sets:
        x = r.get(s)
        m = x and x[f"image_top{cfg['top_k']}"]
        cells.append("-" if not m else f"{m['all']:.3f} ({m['a']:.3f} / {m['b']:.3f})")
    mtd = r.get("mtd")
    if mtd and "pixel_auroc" in mtd:
        px, pro = mtd["pixel_auroc"], mtd["aupro"]
        cells.append(f"{px['all']:.3f} ({px['a']:.3f} / {px['b']:.3f})")
        cells.append(f"{pro['all']:.3f} ({pro['a']:.3f} / {pro['b']:.3f})")
    else:
        cells += ["-", "-"]
    return cells


def _config_table(result, args, det, entries):
    rows = {}
    for r in result["rows"]:
        rows[f"{r['set']}|{r['size']}|{r['layers']}|{r['detector']}|{r['param']}"] = r
    head = " | ".join(f"{s} image AUROC all (A / B)" for s in args.sets)
    lines = [
        f"| {det} setting | why | mean A | {head} | MTD pixel AUROC all (A / B) "
        "| MTD AUPRO all (A / B) |",
        "|---|---|---|" + "---|" * (len(args.sets) + 2),
    ]
    merged = {}
    for why, cfg in entries:  # one line per setting, with every reason it is listed
        merged.setdefault(_cfg_name(cfg), [[], cfg])[0].append(why)
    for whys, cfg in merged.values():
        why = "; ".join(whys)
        by_set = {s: lookup(rows, det, cfg, s) for s in args.sets}
        cells = _row_cells(by_set, cfg, args.sets)
        mean_a = np.mean([cell(by_set, t, cfg["top_k"], "a") for t in args.sets])
        lines.append(f"| {_cfg_name(cfg)} | {why} | {mean_a:.4f} | " + " | ".join(cells) + " |")
    return lines


def _feature_min(meta):
    return sum(v["seconds"] for v in meta["features"].values()) / 60


def _detector_min(result):
    n_test = {k.split("|")[0]: v["n_test"] for k, v in result["meta"]["features"].items()}
    return (
        sum(r["fit_s"] + r["score_ms_per_image"] * n_test[r["set"]] / 1000 for r in result["rows"])
        / 60
    )


def markdown(result, args):
    meta = result["meta"]
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; load {meta['load_start']} -> "
        f"{meta['load_end']}; this run {meta['sweep_wall_s'] / 60:.1f} min (cached rows not "
        f"re-run); in the rows (all runs): feature extraction {_feature_min(meta):.1f} min, "
        f"detector fit + scoring {_detector_min(result):.1f} min (metrics not counted). "
        "EfficientNet-Lite0 (offline ImageNet weights), "
        f"{args.n_train} training images per set (seeded), maps smoothed with sigma {SIGMA:g}.",
        "",
        "Sets: MTD (Magnetic-Tile defects, 582 test tiles); ELPV mono / poly (solar cells, "
        "CC BY-NC-SA 4.0, Buerhop-Lutz et al. 2018, Deitsch et al. 2019; normal = p 0, "
        "defective = p >= 2/3, p = 1/3 left out). "
        + "; ".join(
            f"{k}: {v['n_test']} test ({v['n_defective']} defective), A {v['n_a']} / B {v['n_b']}"
            for k, v in meta["features"].items()
        )
        + ".",
        "",
        meta["protocol"] + " Pixel AUROC over all test tiles, AUPRO over the defective tiles "
        "(as run.py). PatchCore: coreset 'auto', 1 neighbour; PaDiM: reg 0.01, random channel "
        "subset (ch152 = all channels of b4+b10); DFKDE: Gaussian projection, bandwidth rule "
        "or factor (kernel sd in units of the feature sd).",
        "",
    ]
    for det, c in result["choice"].items():
        entries = [("current default", c["current"]), ("proposal (best mean A)", c["proposal"])]
        entries += [(f"best on {s} A", cfg) for s, cfg in c["best_per_set_on_a"].items()]
        entries += [(f"top-5 #{i + 1}", cfg) for i, cfg in enumerate(c["top"][1:], 1)]
        lines += [f"### {det} ({c['n_candidates']} candidates)", ""]
        lines += _config_table(result, args, det, [(w, e) for w, e in entries if e])
        lines.append("")
    for which in ("current", "proposal"):
        lines += [
            f"Largest gap between detectors' image AUROC ({which} defaults), all (A / B):",
            "",
            "| set | " + " | ".join(result["choice"]) + " | gap all (A / B) |",
            "|---|" + "---|" * (len(result["choice"]) + 1),
        ]
        for s, g in result[f"gap_{which}"].items():
            vals = [_m(g["auroc"].get(d)) for d in result["choice"]]
            gap = g["gap"]
            lines.append(
                f"| {s} | "
                + " | ".join(vals)
                + (f" | {gap['all']:.3f} ({gap['a']:.3f} / {gap['b']:.3f}) |" if gap else " | - |")
            )
        lines.append("")
    if "timing" in result:
        lines += [
            f"Time on MTD, a real DetectorPipeline (with calibration), fit on {args.n_train} "
            f"tiles, score_samples of {args.timing_images} tiles (features + detector):",
            "",
            "| detector | defaults | setting | fit s | score ms/image | load |",
            "|---|---|---|---|---|---|",
        ]
        for key, t in result["timing"].items():
            det, which = key.split("|")
            lines.append(
                f"| {det} | {which} | {_cfg_name(t)} | {t['fit_s']:.1f} | "
                f"{t['score_ms_per_image']:.1f} | {t['load']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    out = HERE / "results"
    if args.report_only:  # re-render the table of a saved run (its command stays)
        result = json.loads((out / f"{args.name}.json").read_text())
        (out / f"{args.name}.md").write_text(markdown(result, args))
        return
    load_start = load_average()
    cache = TMP / "sweep_rows.json"
    rows = {} if args.fresh or not cache.exists() else json.loads(cache.read_text())
    started = time.perf_counter()
    features_info = sweep(args, rows)
    rows = {key: rows[key] for key in requested_keys(args) if key in rows}
    choice = choose(rows, args)
    result = {
        "meta": {
            **run_meta("defaults_sweep", argv, load_start),
            "sweep_wall_s": time.perf_counter() - started,
            "backbone": BACKBONE,
            "n_train": args.n_train,
            "sigma": SIGMA,
            "features": features_info,
            "protocol": "halves A/B: each kind of the test split halved at random "
            "(RandomState(0)); choose on A, confirm on B. Proposal: max over candidates of "
            "the mean over sets of image AUROC on A.",
        },
        "choice": choice,
        "gap_current": gap_check(rows, choice, args.sets, "current"),
        "gap_proposal": gap_check(rows, choice, args.sets, "proposal"),
        "rows": list(rows.values()),
    }
    if args.timing_images:
        result["timing"] = timing(args, choice)
    save_results(args.name, result, markdown(result, args))


if __name__ == "__main__":
    main()
