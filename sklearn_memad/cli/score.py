"""``memad score``: score images with a model file; write scores.csv, overlays and masks."""

import copy
import csv
import os
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..datasets import READ_ERRORS, find_images, folder_labels, mask_name, read_images, read_rgb
from ..display import compose_panels, score_caption
from ..distributed import score_samples as score_on_cluster
from ..maps import predict_anomaly_maps
from ..metrics import image_auroc
from ..persistence import ModelFileError, inner_pipeline, load_model
from ..utils.chunking import chunked
from ..utils.pipeline import model_parts
from ..utils.progress import progress
from .decisions import describe_decision, describe_masks, pixel_threshold, write_mask
from .exit_codes import EXIT_DATA, EXIT_MODEL, EXIT_OK, EXIT_SETUP, EXIT_USAGE, CommandError
from .fit import NAMES, cluster_client
from .messages import report_skipped, warn

__all__ = ["run"]

# Images scored per chunk: bounds memory on large folders.
SCORE_CHUNK = 64
# Overlays keep the image's aspect ratio, at most this many pixels on the longer side.
OVERLAY_MAX_SIDE = 1024


def _load(path, device):
    try:
        pipe, header = load_model(path)
    except (FileNotFoundError, ModelFileError) as exc:
        raise CommandError(str(exc), EXIT_MODEL) from exc
    if device is not None:
        inner_pipeline(pipe).steps[0][1].set_params(device=device)
    return pipe, header


def _output_folder(out):
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot create the output folder '{out}': {exc.strerror}"
        raise CommandError(message, EXIT_DATA) from exc
    return out


def _overlay_name(path, root):
    try:
        relative = Path(path).resolve().relative_to(root)
    except ValueError:
        relative = Path(Path(path).name)
    return relative.with_suffix(".png")


def _overlay_base(path, fallback):
    """The image at its own aspect ratio (at most OVERLAY_MAX_SIDE px), or what the model saw."""
    try:
        im = read_rgb(path)
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
    """The defect mask and the overlay PNG of image ``i`` of a scored chunk."""
    target = job.out / _overlay_name(path, job.root)
    if job.pixel is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_mask(mask_name(target), result.maps[i], job.pixel, result.labels[i] == -1, path)
    if job.no_overlays:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    panel = {
        "map": result.maps[i],
        "vmin": result.vmin,
        "vmax": result.vmax,
        "caption": score_caption(result.scores[i], result.threshold, job.name),
        "anomaly": bool(result.labels[i] == -1),
    }
    title = os.fspath(_overlay_name(path, job.root).with_suffix(Path(path).suffix))
    compose_panels(_overlay_base(path, image), [panel], title=title).save(target)


def _score_all(job, pipe, files, size, verbose):
    rows, skipped = [], []
    for chunk in progress(chunked(files, SCORE_CHUNK), verbose, "scoring"):
        images, kept, chunk_skipped = read_images(chunk, size)
        skipped += chunk_skipped
        if not kept:
            continue
        size = images.shape[1:3]
        result = _predict(pipe, images, job.sigma)
        for i, path in enumerate(kept):
            rows.append(
                (
                    path,
                    result.scores[i],
                    result.decision[i],
                    result.labels[i],
                    result.percentiles[i],
                )
            )
            _write_outputs(job, path, images[i], result, i)
    return rows, skipped


def _score_on_cluster(args, job, pipe, files):
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
    columns = (result.paths, result.scores, result.decision, result.labels, result.percentiles)
    return list(zip(*columns)), result.skipped


def _write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "score", "decision", "label", "anomaly_percentile"])
        for image, score, decision, label, percentile in rows:
            writer.writerow(
                [
                    os.fspath(image),
                    f"{score:.6g}",
                    f"{decision:.6g}",
                    int(label),
                    f"{percentile:.4g}",
                ]
            )


def _summarise(job, pipe, detector, rows, csv_path):
    flagged = int(sum(row[3] == -1 for row in rows))
    print(
        f"Scored {len(rows)} image{'s' if len(rows) > 1 else ''} with {job.name}: {flagged} "
        f"flagged as anomalies ({describe_decision(pipe, detector)})."
    )
    if job.pixel is not None:
        print(describe_masks(job.pixel))
    truth = folder_labels([row[0] for row in rows])
    if truth is not None:
        scores = np.array([row[1] for row in rows])
        print(
            "Image AUROC from the folder names (good = normal, other folders = defective): "
            f"{image_auroc(truth, scores):.3f}"
        )
    written = [os.fspath(csv_path)] + ([] if job.no_overlays else [f"{len(rows)} overlay PNGs"])
    written += [f"{len(rows)} defect mask PNGs"] if job.pixel is not None else []
    print(
        f"Wrote {', '.join(written[:-1])} and {written[-1]}"
        if len(written) > 1
        else f"Wrote {written[0]}",
        f"in {job.out}/",
    )


class _Job:
    """What every scored image's outputs depend on."""

    def __init__(self, args, files, detector, header):
        self.out = _output_folder(args.out)
        self.root = Path(os.path.commonpath([Path(p).resolve().parent for p in files]))
        self.name = NAMES.get(type(detector).__name__, type(detector).__name__)
        self.sigma = args.sigma
        self.no_overlays = args.no_overlays
        pixel, warning = pixel_threshold(header, args.sigma)
        if warning is not None:
            warn(warning)
        self.pixel = None if args.no_masks else pixel


def run(args):
    """Score every image named on the command line, a chunk of images at a time."""
    pipe, header = _load(args.model, args.device)
    files = find_images(args.inputs)
    detector = model_parts(pipe).detector
    job = _Job(args, files, detector, header)
    # One bar for the whole run instead of one per chunk.
    inner_pipeline(pipe).steps[0][1].set_params(verbose=False)
    if args.scheduler is None:
        rows, skipped = _score_all(job, pipe, files, header.get("image_size"), not args.quiet)
    else:
        rows, skipped = _score_on_cluster(args, job, pipe, files)
    report_skipped(skipped)
    if not rows:
        raise CommandError(f"no readable image among the {len(files)} given", EXIT_DATA)
    csv_path = job.out / "scores.csv"
    _write_csv(csv_path, rows)
    _summarise(job, pipe, detector, rows, csv_path)
    return EXIT_OK
