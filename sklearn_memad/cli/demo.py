"""``memad demo``: the three detectors on texture photographs with pasted defects, offline."""

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from .. import defaults
from ..datasets import DEFECTS, GOOD, TEXTURES, make_texture_anomalies, save_mvtec_layout
from ..detectors import image_scores_from_patches
from ..display import compose_panels, score_caption
from ..maps import anomaly_map_range, patch_to_pixel_maps
from ..metrics import image_auroc, pixel_auroc
from ..pipelines import METHODS, make_detector_pipeline
from ..transformers import RandomProjection
from .exit_codes import EXIT_OK, EXIT_SETUP, EXIT_USAGE, CommandError

__all__ = ["IMAGE_SIZE", "run", "run_demo"]

#: The demo's image side: its texture crops are small.
IMAGE_SIZE = 128

_NAMES = {"padim": "PaDiM", "patchcore": "PatchCore", "dfkde": "DFKDE"}


def _megabytes(n_bytes):
    return f"{n_bytes / 1e6:.1f} MB"


def _fit_and_score(method, features, grids_train, grids_test, data, options):
    """Fit the detector part of one standard pipeline on shared grids; time and measure it."""
    pipe = make_detector_pipeline(method, **options)
    steps = pipe.steps[1:]
    if pipe[0].max_features is not None:
        # PaDiM's channel pick, made here on the grids that the detectors share.
        pick = RandomProjection(
            n_components=pipe[0].max_features,
            method="channels",
            random_state=options.get("random_state"),
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
    scores = image_scores_from_patches(patch_scores, pipe[-1].top_k, pipe[-1].border)
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
    for kind in (GOOD,) + DEFECTS:
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
                        "caption": score_caption(score, threshold, _NAMES[result["method"]]),
                        "anomaly": bool(score > threshold),
                    }
                )
            title = f"{texture}, test image {i}: {kind}"
            path = folder / f"{texture}_{kind}_{i:03d}.png"
            compose_panels(data.X_test[i], panels, mask=data.masks_test[i], title=title).save(path)
            written.append(path)
    return written


def _check_choices(textures, methods):
    for name, given, valid in (("textures", textures, TEXTURES), ("methods", methods, METHODS)):
        unknown = [value for value in given if value not in valid]
        if unknown or not given:
            raise ValueError(f"{name} must be a non-empty subset of {valid}; got {given!r}.")


def _run_texture(texture, data, methods, options, say):
    """Extract the features once, then fit and score every detector on them."""
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
    say(
        f"  {'detector':<10} {'image AUROC':>11} {'pixel AUROC':>11} "
        f"{'fit s':>7} {'score s':>7} {'memory':>9}"
    )
    results = []
    for method in methods:
        result = _fit_and_score(method, features, grids_train, grids_test, data, options)
        result.update(texture=texture, features_s=features_s)
        results.append(result)
        say(
            f"  {_NAMES[method]:<10} {result['image_auroc']:>11.3f} "
            f"{result['pixel_auroc']:>11.3f} {result['fit_s']:>7.2f} "
            f"{result['score_s']:>7.2f} {_megabytes(result['memory_bytes']):>9}"
        )
    return results


def _say_summary(say, textures, methods, results, written, overlay_dir, out_dir, write_data):
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
        say(f"  memad fit --train {example} --method patchcore --out {textures[0]}.safetensors")
        say(
            f"  memad score --model {textures[0]}.safetensors {example / 'test'} "
            f"--out {textures[0]}_scores"
        )


def run_demo(
    out_dir="memad_demo",
    *,
    textures=TEXTURES,
    methods=METHODS,
    backbone=defaults.BACKBONE,
    weights="DEFAULT",
    layers=None,
    image_size=IMAGE_SIZE,
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
        Which photographs (see :func:`~sklearn_memad.datasets.make_texture_anomalies`).
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
    _check_choices(textures, methods)
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
    sizes = dict(n_train=n_train, n_test_normal=n_test_normal, n_test_per_defect=n_test_per_defect)

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
            texture, image_size=image_size, random_state=random_state, **sizes
        )
        if write_data:
            save_mvtec_layout(data, out_dir / "data" / texture)
        texture_results = _run_texture(texture, data, methods, options, say)
        written += _write_overlays(
            overlay_dir, texture, data, texture_results, n_overlays_per_kind
        )
        results += texture_results
    _say_summary(say, textures, methods, results, written, overlay_dir, out_dir, write_data)
    for result in results:
        for key in ("pipeline", "maps", "scores"):
            result.pop(key)
    return results


def run(args):
    """The ``memad demo`` command: :func:`run_demo` with the command line's options."""
    small = dict(n_train=24, n_test_normal=8, n_test_per_defect=4) if args.small else {}
    textures = args.textures or (("brick",) if args.small else None)
    options = dict(
        backbone=args.backbone,
        weights=args.weights,
        layers=args.layers,
        image_size=args.image_size,
        random_state=args.seed,
        verbose=not args.quiet,
        **small,
    )
    if textures:
        options["textures"] = textures
    if args.methods:
        options["methods"] = args.methods
    if args.n_train:
        options["n_train"] = args.n_train
    start = time.perf_counter()
    try:
        run_demo(args.out, **options)
    except (ImportError, RuntimeError) as exc:  # packages or weights missing
        raise CommandError(str(exc), EXIT_SETUP) from exc
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc
    print(f"Demo finished in {time.perf_counter() - start:.0f} s.")
    return EXIT_OK
