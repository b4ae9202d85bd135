"""``python -m sklearn_memad demo``: the three detectors on texture photographs, offline."""

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from .._overlay import _score_caption, compose_panels
from ..detectors._base import image_scores_from_patches
from ..display import anomaly_map_range
from ..maps import patch_to_pixel_maps
from ..metrics import image_auroc, pixel_auroc
from ..pipelines import METHODS, auto_coreset_ratio, make_detector_pipeline
from ..transformers import RandomProjection
from ._textures import DEFECTS, TEXTURES, make_texture_anomalies, save_mvtec_layout

__all__ = ["run_demo"]

_NAMES = {"padim": "PaDiM", "patchcore": "PatchCore", "dfkde": "DFKDE"}


def _megabytes(n_bytes):
    return f"{n_bytes / 1e6:.1f} MB"


def _fit_and_score(method, features, grids_train, grids_test, data, options):
    """Fit the detector part of one standard pipeline on shared grids; time and measure it."""
    h, w = grids_train.shape[1:3]
    pipe = make_detector_pipeline(
        method,
        coreset_ratio=auto_coreset_ratio(len(grids_train) * h * w),
        **options,
    )
    steps = pipe.steps[1:]
    if pipe[0].max_features is not None:
        # PaDiM's channel pick, made here on the grids that the detectors share.
        pick = RandomProjection(
            pipe[0].max_features, method="channels", random_state=options.get("random_state")
        )
        steps = [("randomprojection", pick)] + steps
    # The feature step is already fitted and shared by the detectors.
    pipe = Pipeline([(pipe.steps[0][0], features)] + steps)
    head = pipe[1:]
    start = time.perf_counter()
    head.fit(grids_train)
    fit_s = time.perf_counter() - start

    start = time.perf_counter()
    middle = pipe[1:-1] if len(pipe) > 2 else None
    patch_scores = pipe[-1].score_patches(
        middle.transform(grids_test) if middle is not None else grids_test
    )
    maps = patch_to_pixel_maps(patch_scores, data.X_test.shape[1:3])
    scores = image_scores_from_patches(patch_scores, pipe[-1].top_k)
    score_s = time.perf_counter() - start
    return {
        "method": method,
        "pipeline": pipe,
        "image_auroc": image_auroc(data.y_test, scores),
        "pixel_auroc": pixel_auroc(data.masks_test, maps),
        "fit_s": fit_s,
        "score_s": score_s,
        "memory_bytes": int(pipe[-1].memory_bytes_),
        "maps": maps,
        "scores": scores,
    }


def _write_overlays(folder, texture, data, results, n_per_kind):
    """One PNG per chosen test image: the image, then each detector's map side by side."""
    written = []
    for kind in ("good",) + DEFECTS:
        for i in np.flatnonzero(data.kinds_test == kind)[:n_per_kind]:
            panels = []
            for result in results:
                detector = result["pipeline"][-1]
                vmin, vmax = anomaly_map_range(detector)
                score, threshold = result["scores"][i], -detector.offset_
                panels.append(
                    {
                        "map": result["maps"][i],
                        "vmin": vmin,
                        "vmax": vmax,
                        "caption": _score_caption(score, threshold, _NAMES[result["method"]]),
                        "anomaly": bool(score > threshold),
                    }
                )
            title = f"{texture}, test image {i}: {kind}"
            path = folder / f"{texture}_{kind}_{i:03d}.png"
            compose_panels(data.X_test[i], panels, mask=data.masks_test[i], title=title).save(
                path
            )
            written.append(path)
    return written


def run_demo(
    out_dir="memad_demo",
    *,
    textures=TEXTURES,
    methods=METHODS,
    backbone="efficientnet_lite0",
    weights="DEFAULT",
    layers=None,
    image_size=128,
    n_train=64,
    n_test_normal=16,
    n_test_per_defect=8,
    n_overlays_per_kind=1,
    write_data=True,
    random_state=0,
    verbose=True,
    stream=None,
):
    """Fit the three detectors on texture photographs with pasted defects, and report.

    For each texture, a :class:`~sklearn_memad.FeatureTransformer` extracts the patch features
    of the training and test images once; each detector's standard pipeline
    (:func:`~sklearn_memad.pipelines.make_detector_pipeline`) is then fitted on the training
    features and scores the test features. Prints image AUROC, pixel AUROC, fit and score time
    (detector only; the shared feature extraction is timed apart) and memory, and writes
    overlay PNGs (and, with ``write_data``, the images as MVTec-layout folders) under
    ``out_dir``.

    Parameters
    ----------
    out_dir : str or path-like, default="memad_demo"
        Output folder, created if needed.
    textures : sequence of str, default=("brick", "grass", "gravel")
        Which photographs (see :func:`make_texture_anomalies`).
    methods : sequence of str, default=("patchcore", "padim", "dfkde")
    backbone, weights, layers : see :func:`~sklearn_memad.pipelines.make_detector_pipeline`
    image_size : int, default=128
    n_train, n_test_normal, n_test_per_defect : int
        Sizes of each texture's data set.
    n_overlays_per_kind : int, default=1
        Overlay PNGs written per texture and image kind (normal, and each defect type).
    write_data : bool, default=True
        Also write the images as ``out_dir/data/<texture>`` in the MVTec layout.
    random_state : int, default=0
        Seed of the data, the projections and the coresets.
    verbose : bool, default=True
        Progress bars on standard error.
    stream : file-like, default=None
        Where the report goes (default: standard output).

    Returns
    -------
    results : list of dict
        One per texture and detector: ``texture``, ``method``, ``image_auroc``,
        ``pixel_auroc``, ``fit_s``, ``score_s``, ``memory_bytes``, ``features_s``.
    """
    for name, given, valid in (("textures", textures, TEXTURES), ("methods", methods, METHODS)):
        unknown = [value for value in given if value not in valid]
        if unknown or not given:
            raise ValueError(f"{name} must be a non-empty subset of {valid}; got {given!r}.")
    stream = sys.stdout if stream is None else stream
    out_dir = Path(out_dir)
    overlay_dir = out_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    options = dict(
        backbone=backbone,
        weights=weights,
        layers=layers,
        image_size=image_size,
        random_state=random_state,
        verbose=verbose,
    )

    def say(text=""):
        print(text, file=stream, flush=True)

    say(
        f"sklearn_memad demo: {', '.join(_NAMES[m] for m in methods)} on CC0 texture "
        f"photographs with pasted defects ({', '.join(DEFECTS)}); backbone {backbone}, "
        f"{image_size} x {image_size} px."
    )
    results, written = [], []
    for texture in textures:
        data = make_texture_anomalies(
            texture,
            n_train=n_train,
            n_test_normal=n_test_normal,
            n_test_per_defect=n_test_per_defect,
            image_size=image_size,
            random_state=random_state,
        )
        if write_data:
            save_mvtec_layout(data, out_dir / "data" / texture)
        features = make_detector_pipeline(methods[0], **options)[0].set_params(max_features=None)
        start = time.perf_counter()
        features.fit(data.X_train)
        grids_train = features.transform(data.X_train)
        grids_test = features.transform(data.X_test)
        features_s = time.perf_counter() - start
        n_images = len(data.X_train) + len(data.X_test)
        say()
        say(
            f"{texture}: {len(data.X_train)} normal training images; test: "
            f"{int((data.y_test == 1).sum())} normal, {int((data.y_test == -1).sum())} "
            f"defective. Features of {n_images} images: {features_s:.1f} s."
        )
        say(f"  {'detector':<10} {'image AUROC':>11} {'pixel AUROC':>11} "
            f"{'fit s':>7} {'score s':>7} {'memory':>9}")
        texture_results = []
        for method in methods:
            result = _fit_and_score(method, features, grids_train, grids_test, data, options)
            result.update(texture=texture, features_s=features_s)
            texture_results.append(result)
            say(
                f"  {_NAMES[method]:<10} {result['image_auroc']:>11.3f} "
                f"{result['pixel_auroc']:>11.3f} {result['fit_s']:>7.2f} "
                f"{result['score_s']:>7.2f} {_megabytes(result['memory_bytes']):>9}"
            )
        written += _write_overlays(
            overlay_dir, texture, data, texture_results, n_overlays_per_kind
        )
        results += texture_results

    if len(textures) > 1:
        say()
        say(f"Mean over {len(textures)} textures:")
        for method in methods:
            rows = [r for r in results if r["method"] == method]
            image = np.mean([r["image_auroc"] for r in rows])
            pixel = np.mean([r["pixel_auroc"] for r in rows])
            say(f"  {_NAMES[method]:<10} image AUROC {image:.3f}  pixel AUROC {pixel:.3f}")
    say()
    say(f"Wrote {len(written)} overlay PNGs to {overlay_dir}/ (defects outlined in green).")
    if write_data:
        example = out_dir / "data" / textures[0]
        say(f"The images are in {out_dir / 'data'}/ (MVTec layout). Try the command line:")
        say(f"  memad fit --train {example} --method patchcore --out {textures[0]}.joblib")
        say(
            f"  memad score --model {textures[0]}.joblib {example / 'test'} "
            f"--out {textures[0]}_scores"
        )
    for result in results:
        for key in ("pipeline", "maps", "scores"):
            result.pop(key)
    return results
