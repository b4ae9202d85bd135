"""``memad score``: score images with a model file; write scores.csv, overlays and masks."""

import copy
import os
import signal
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .. import defaults
from ..categories import MultiCategoryDetector
from ..datasets import READ_ERRORS, find_images, folder_labels, mask_name, read_images, read_rgb
from ..display import compose_panels, score_caption, write_report
from ..distributed import score_samples as score_on_cluster
from ..features import FeatureTransformer
from ..maps import predict_anomaly_maps
from ..persistence import inner_pipeline
from ..pipelines import set_device
from ..utils.chunking import chunked
from ..utils.pipeline import decision_threshold, model_parts
from ..utils.progress import progress
from ..utils.scores import percentiles, reference_scores
from .decisions import describe_decision, describe_masks, pixel_threshold, write_mask
from .exit_codes import (
    EXIT_DATA,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_SETUP,
    EXIT_USAGE,
    CommandError,
    OptionError,
)
from .explanations import Explainer, explanation_name
from .fit import NAMES, cluster_client
from .messages import report_unscored, warn
from .outputs import (
    ScoresTable,
    choose_output_folder,
    output_names,
    read_model_option,
    relative_source,
)

__all__ = ["run"]

# Images read and scored per chunk: bounds memory on large folders.
SCORE_CHUNK = defaults.SCORE_CHUNK
# The HTML report of a labelled folder, in the output folder.
REPORT = "report.html"
# Overlays keep the image's aspect ratio, at most this many pixels on the longer side.
OVERLAY_MAX_SIDE = 1024


def _load(path, device):
    pipe, header = read_model_option(path)
    if isinstance(pipe, MultiCategoryDetector):
        raise CommandError(
            f"'{path}' holds a MultiCategoryDetector of {len(pipe.categories_)} categories; "
            "memad score scores one part number: save one category's pipeline "
            "(save_model(model.category_pipeline(name), ...)) and score with that file.",
            EXIT_MODEL,
        )
    pipeline = inner_pipeline(pipe)
    if pipeline is None or not isinstance(pipeline.steps[0][1], FeatureTransformer):
        raise CommandError(
            f"'{path}' holds a {header.get('method', 'model')} that scores feature grids, not "
            "images; memad score needs a model from images (written by memad fit, or by "
            "save_model of a pipeline that starts with a FeatureTransformer).",
            EXIT_MODEL,
        )
    if device is not None:
        try:
            set_device(pipe, device)
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from exc
    return pipe, header


def _output_folder(out):
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot create the output folder '{out}': {exc.strerror}"
        raise CommandError(message, EXIT_DATA) from exc
    return out


def _overlay_base(path, fallback, max_pixels):
    """The image at its own aspect ratio (at most OVERLAY_MAX_SIDE px), or what the model saw."""
    try:
        im = read_rgb(path, max_pixels)
    except READ_ERRORS:
        return fallback
    im.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(im)


def _predict(pipe, images, sigma):
    try:
        return predict_anomaly_maps(pipe, images, sigma=sigma)
    except RuntimeError as exc:
        raise CommandError(str(exc), EXIT_SETUP) from exc
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc


def _write_outputs(job, path, image, result, i):
    """The defect mask and the overlay PNG of image ``i`` of a scored chunk.

    Returns the names, relative to the output folder, of the overlay and the mask written
    (empty when not written).
    """
    name = job.names[os.path.abspath(os.fspath(path))]
    target = job.out / name
    written = ["", ""]
    if job.pixel is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        flagged = result.labels[i] == -1
        write_mask(mask_name(target), result.maps[i], job.pixel, flagged, path, job.max_pixels)
        written[1] = mask_name(name).as_posix()
    if job.no_overlays:
        return written
    target.parent.mkdir(parents=True, exist_ok=True)
    panel = {
        "map": result.maps[i],
        "vmin": result.vmin,
        "vmax": result.vmax,
        "caption": score_caption(result.scores[i], result.threshold, job.name),
        "anomaly": bool(result.labels[i] == -1),
    }
    title = os.fspath(relative_source(path, job.root))
    base = _overlay_base(path, image, job.max_pixels)
    compose_panels(base, [panel], title=title).save(target)
    written[0] = name.as_posix()
    return written


def _score_chunk(job, pipe, chunk, size, table):
    """Score one chunk of files; each gets its row in ``table`` once its PNGs are written."""
    images, kept, skipped = read_images(chunk, size, max_pixels=job.max_pixels)
    reasons = dict(skipped)
    result = _predict(pipe, images, job.sigma) if kept else None
    if job.explainer is not None and kept:
        _explain(job, pipe, images, kept, result)
    index = {path: i for i, path in enumerate(kept)}
    pending = list(chunk)
    try:
        while pending:
            path = pending[0]
            if path in reasons:
                table.add_failure(path, reasons[path])
            else:
                i = index[path]
                table.add(path, result, i, *_write_outputs(job, path, images[i], result, i))
            pending.pop(0)
    except KeyboardInterrupt:
        # The chunk is scored: its verdicts are kept even where the PNGs were not drawn.
        for path in pending:
            if path in index:
                table.add(path, result, index[path])
        raise
    return images.shape[1:3] if kept else size


def _explain(job, pipe, images, kept, result):
    flagged = np.flatnonzero(result.labels == -1)
    names = [job.names[os.path.abspath(os.fspath(kept[i]))] for i in flagged]
    job.explainer.write(
        images,
        flagged,
        [job.out / explanation_name(name) for name in names],
        [_overlay_base(kept[i], images[i], job.max_pixels) for i in flagged],
        [os.fspath(relative_source(kept[i], job.root)) for i in flagged],
    )


def _score_all(job, pipe, files, size, verbose, table):
    for chunk in progress(chunked(files, SCORE_CHUNK), verbose, "scoring"):
        size = _score_chunk(job, pipe, chunk, size, table)


def _score_on_cluster(args, job, pipe, files, table):
    """``_score_all`` on the cluster at --scheduler: the workers read, score and write."""
    remote = copy.copy(job)
    remote.out = job.out.absolute()  # the workers' working folder may be another
    with cluster_client(args.scheduler) as client:
        try:
            result = score_on_cluster(
                pipe,
                files,
                client=client,
                chunk_size=SCORE_CHUNK,
                sigma=job.sigma,
                writer=partial(_write_outputs, remote),
            )
        except RuntimeError as exc:
            raise CommandError(str(exc), EXIT_SETUP) from exc
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from exc
    reasons = dict(result.skipped)
    scored = dict(zip(result.paths, range(len(result.paths))))
    for path in files:
        if path in scored:
            name = job.names[os.path.abspath(os.fspath(path))]
            mask = mask_name(name).as_posix() if job.pixel is not None else ""
            overlay = "" if job.no_overlays else name.as_posix()
            table.add(path, result, scored[path], overlay, mask)
        else:
            table.add_failure(path, reasons.get(path, "not scored"))


def _report(job, pipe, detector, rows, truth):
    """Print what the decision did on the labelled folder; write report.html."""
    paths = [path for path, _, _ in rows]
    scores = np.array([score for _, score, _ in rows])
    kinds = [Path(path).parent.name for path in paths]
    threshold = -decision_threshold(pipe)
    reference = reference_scores(detector)
    names = [os.fspath(relative_source(path, job.root)) for path in paths]
    overlays = None
    if not job.no_overlays:
        overlays = [job.out / job.names[os.path.abspath(os.fspath(path))] for path in paths]
    path = job.out / REPORT
    summary = write_report(
        path,
        truth,
        scores,
        threshold,
        names=names,
        kinds=kinds,
        overlays=overlays,
        percentiles=percentiles(reference, scores),
        threshold_percentile=float(percentiles(reference, np.array([threshold]))[0]),
        title=f"memad score: {job.name} on {job.root}",
        notes=[describe_decision(pipe, detector)],
    )
    print(
        f"From the folder names (good = normal, other folders = defective): image AUROC "
        f"{summary['auroc']:.3f}; recall {summary['recall']:.3f} ({summary['caught']} of "
        f"{summary['n_defective']} defective caught), false-positive rate "
        f"{summary['false_positive_rate']:.3f} ({summary['false_alarms']} of "
        f"{summary['n_good']} good flagged)."
    )
    width = max(len(kind) for kind, _, _ in summary["kinds"])
    for kind, caught, total in summary["kinds"]:
        print(f"  {kind:<{width}}  caught {caught:>4} / {total:<4}")
    return path


def _summarise(job, pipe, detector, table):
    rows = table.scored
    flagged = int(sum(label == -1 for _, _, label in rows))
    print(
        f"Scored {len(rows)} image{'s' if len(rows) > 1 else ''} with {job.name}: {flagged} "
        f"flagged as anomalies ({describe_decision(pipe, detector)})."
    )
    if job.pixel is not None:
        print(describe_masks(job.pixel))
    truth = folder_labels([path for path, _, _ in rows])
    if truth is not None:
        report = _report(job, pipe, detector, rows, truth)
    else:
        report = None
    n_failed = len(table.failed)
    table_line = os.fspath(table.path) + (
        f" ({n_failed} row{'s' if n_failed > 1 else ''} without a verdict)" if n_failed else ""
    )
    written = [table_line] + ([] if job.no_overlays else [f"{len(rows)} overlay PNGs"])
    written += [os.fspath(report.name)] if report is not None else []
    written += [f"{len(rows)} defect mask PNGs"] if job.pixel is not None else []
    if job.explainer is not None:
        written += [f"{job.explainer.written} explanation PNGs"]
    print(
        f"Wrote {', '.join(written[:-1])} and {written[-1]}"
        if len(written) > 1
        else f"Wrote {written[0]}",
        f"in {job.out}/",
    )


class _Job:
    """What every scored image's outputs depend on."""

    def __init__(self, args, files, pipe, header):
        detector = model_parts(pipe).detector
        self.out = _output_folder(choose_output_folder(args.out, args.inputs))
        self.root = Path(os.path.commonpath([Path(p).resolve().parent for p in files]))
        self.names = output_names(files, self.root)
        self.name = NAMES.get(type(detector).__name__, type(detector).__name__)
        self.sigma = args.sigma
        self.no_overlays = args.no_overlays
        self.max_pixels = args.max_image_pixels
        pixel, warning = pixel_threshold(header, args.sigma)
        if warning is not None:
            warn(warning)
        self.pixel = None if args.no_masks else pixel
        self.explainer = None
        if args.explain:
            size = header.get("image_size")
            self.explainer = Explainer(pipe, header, size, args.max_image_pixels)


@contextmanager
def _terminate_as_interrupt():
    """Let SIGTERM end the run as Ctrl-C does, so that it says what it kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args):
    """Score every image named on the command line, a chunk of images at a time."""
    if args.explain and args.scheduler is not None:
        raise OptionError("--explain draws its panels on this machine: drop --scheduler")
    pipe, header = _load(args.model, args.device)
    files = find_images(args.inputs)
    detector = model_parts(pipe).detector
    job = _Job(args, files, pipe, header)
    # One bar for the whole run instead of one per chunk.
    inner_pipeline(pipe).steps[0][1].set_params(verbose=False)
    with ScoresTable(job.out / "scores.csv") as table, _terminate_as_interrupt():
        try:
            if args.scheduler is None:
                _score_all(job, pipe, files, header.get("image_size"), not args.quiet, table)
            else:
                _score_on_cluster(args, job, pipe, files, table)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"{len(table.scored) + len(table.failed)} of {len(files)} images done; their "
                f"rows are in {table.path}"
            ) from None
    report_unscored(table.failed, table.path)
    if not table.scored:
        raise CommandError(
            f"no readable image among the {len(files)} given (reasons in {table.path})",
            EXIT_DATA,
        )
    _summarise(job, pipe, detector, table)
    return EXIT_DATA if table.failed else EXIT_OK
