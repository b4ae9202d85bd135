"""``memad fit``: fit a standard pipeline on a folder of defect-free images and save it."""

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from .. import defaults
from ..datasets import read_images, read_labelled, training_files
from ..distributed import connect
from ..distributed import fit as fit_on_cluster
from ..persistence import save_model
from ..pipelines import make_detector_pipeline, partial_fit
from ..utils.progress import progress
from .decisions import check_decision_options, choose_thresholds, validation_files
from .exit_codes import EXIT_DATA, EXIT_OK, EXIT_SETUP, EXIT_USAGE, CommandError, OptionError
from .messages import report_skipped, warn

__all__ = ["cluster_client", "run"]

#: Images in the first chunk at least, whatever --chunk-size says.
FIRST_CHUNK = 2

NAMES = {"PaDiMDetector": "PaDiM", "PatchCoreDetector": "PatchCore", "DFKDEDetector": "DFKDE"}


def square(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def _build_backbone(features, size):
    """Build the backbone now, so setup problems surface before any image is read."""
    try:
        features.fit(np.zeros((1,) + size + (3,), dtype=np.uint8))
    except (RuntimeError, ImportError) as exc:  # weights or packages not available offline
        raise CommandError(str(exc), EXIT_SETUP) from exc
    except ValueError as exc:  # unknown backbone, layer, weights file or device
        raise CommandError(str(exc), EXIT_USAGE) from exc
    return features.feature_shape_


def _n_components(args, n_features):
    """PaDiM's channel pick cannot keep more than the backbone's features, and DFKDE's
    projection gains nothing from more (its memory grows with them)."""
    if args.method == "patchcore":
        return args.n_components
    if args.n_components is None:
        return min(defaults.N_COMPONENTS[args.method], n_features)
    if args.n_components > n_features:
        why = {
            "padim": "PaDiM keeps a subset of them",
            "dfkde": "a projection to more dimensions adds none, only memory",
        }[args.method]
        raise CommandError(
            f"--n-components {args.n_components} is more than the {n_features} features of "
            f"backbone {args.backbone!r}; expected 1 to {n_features} ({why})",
            EXIT_USAGE,
        )
    return args.n_components


def _pipeline_options(args):
    return dict(
        backbone=args.backbone,
        layers=args.layers,
        weights=args.weights,
        image_size=square(args.image_size),
        coreset_ratio=args.coreset_ratio,
        n_neighbors=args.n_neighbors,
        contamination=args.contamination,
        batch_size=args.batch_size,
        tile_size=args.tile,
        tile_overlap=args.overlap,
        device=args.device,
        random_state=args.seed,
        verbose=not args.quiet,
    )


def _stream_fit(args, pipe, files, size):
    """Read the training images a chunk at a time and add each chunk to the pipeline.

    Returns the paths that were read; unreadable ones are reported and skipped.
    """
    chunk, kept, skipped = [], [], []
    for i, path in enumerate(progress(files, not args.quiet, "fitting")):
        image, read, unreadable = read_images([path], size, max_pixels=args.max_image_pixels)
        chunk += list(image)
        kept += read
        skipped += unreadable
        # A memory's first chunk needs two images (PaDiM and DFKDE model their spread), so
        # --chunk-size 1 starts with two.
        need = max(args.chunk_size, FIRST_CHUNK) if len(kept) == len(chunk) else args.chunk_size
        if chunk and (len(chunk) >= need or i == len(files) - 1):
            try:
                partial_fit(pipe, np.stack(chunk))
            except ValueError as exc:  # too few images, too many components...
                raise CommandError(str(exc), EXIT_DATA) from exc
            chunk = []
    report_skipped(skipped)
    if not kept:
        raise CommandError(
            f"no readable image among the {len(files)} in '{args.train}'", EXIT_DATA
        )
    return kept


def cluster_client(address):
    """A client of the Dask cluster at ``address`` (--scheduler), or a CommandError."""
    try:
        return connect(address)
    except (ImportError, ConnectionError) as exc:  # dask not installed, no scheduler there
        raise CommandError(str(exc), EXIT_SETUP) from exc


def _cluster_fit(args, pipe, files):
    """Fit on the cluster at --scheduler, a partition per worker; return the paths read."""
    with cluster_client(args.scheduler) as client:
        try:
            _, skipped = fit_on_cluster(
                pipe, files, client=client, chunk_size=args.chunk_size, return_skipped=True
            )
        except ValueError as exc:  # no readable image, too few images...
            raise CommandError(str(exc), EXIT_DATA) from exc
    report_skipped(skipped)
    # The partitions are contiguous and merged in order: the model numbers the images read
    # in the order of the files.
    unread = {os.fspath(path) for path, _ in skipped}
    return [path for path in files if os.fspath(path) not in unread]


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def training_record(paths):
    """The training files in the order the model numbers its images: their folder, and
    each file's path in it and SHA-256, so that a model can be traced to its data and its
    explanations can show the training images."""
    resolved = [Path(path).resolve() for path in paths]
    folder = Path(os.path.commonpath([path.parent for path in resolved]))
    return {
        "train_folder": os.fspath(folder),
        "train_files": [[path.relative_to(folder).as_posix(), _sha256(path)] for path in resolved],
    }


def _decide(args, pipe, validation, objective, target):
    """The model to save, the header's extra entries, and lines to report."""
    if validation is None:
        return pipe, {}, []
    try:
        chosen = choose_thresholds(pipe, validation, objective, target)
    except ValueError as exc:
        raise CommandError(f"--validation: {exc}", EXIT_DATA) from exc
    for message in chosen.warnings:
        warn(message)
    metadata = dict(validation=os.fspath(Path(args.validation).resolve()), **chosen.metadata)
    return chosen.model, metadata, chosen.report


def _save(args, model, kept, metadata):
    try:
        save_model(
            model,
            args.out,
            train=os.fspath(Path(args.train).resolve()),
            n_train=len(kept),
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            **training_record(kept),
            **metadata,
        )
    except OSError as exc:
        message = f"cannot write the model file '{args.out}': {exc.strerror}"
        raise CommandError(message, EXIT_DATA) from exc


def run(args):
    """Fit, choose thresholds if asked, save; print what was built."""
    # Cheap checks first: the backbone takes seconds.
    objective, target = check_decision_options(args.validation, args.objective, args.target)
    if Path(args.train).is_file():
        raise OptionError(
            f"--train '{args.train}' is a file; expected a folder of defect-free images (or "
            "an MVTec-layout category holding train/good)"
        )
    files = training_files(args.train)
    found = None
    if args.validation is not None:
        found = validation_files(args.validation, files)
        for message in found.warnings:
            warn(message)
    options = _pipeline_options(args)
    size = options["image_size"]
    # All the backbone's features, before PaDiM's channel pick, to check --n-components.
    features = make_detector_pipeline(args.method, **options)[0].set_params(max_features=None)
    grid_h, grid_w, n_features = _build_backbone(features, size)
    n_components = _n_components(args, n_features)
    validation = None
    if found is not None:
        validation, skipped = read_labelled(found, size, not args.quiet, args.max_image_pixels)
        report_skipped(skipped)

    # One progress bar for the stream instead of one per chunk and step.
    quiet = dict(options, verbose=False)
    pipe = make_detector_pipeline(args.method, n_components=n_components, **quiet)
    # The backbone is built already: the pipeline's feature step takes it over.
    pipe.steps[0] = (pipe.steps[0][0], features.set_params(**pipe[0].get_params()))
    start = time.perf_counter()
    if args.scheduler is None:
        kept = _stream_fit(args, pipe, files, size)
    else:
        kept = _cluster_fit(args, pipe, files)
    n_train = len(kept)
    elapsed = time.perf_counter() - start

    model, metadata, report = _decide(args, pipe, validation, objective, target)
    _save(args, model, kept, metadata)
    detector = pipe[-1]
    print(
        f"Fitted {NAMES[type(detector).__name__]} on {n_train} images ({size[0]} x "
        f"{size[1]} px, grid {grid_h} x {grid_w}, {n_features} features per patch) in "
        f"{elapsed:.1f} s; memory {detector.memory_bytes_ / 1e6:.1f} MB; image threshold "
        f"{-detector.offset_:.4g} (contamination {args.contamination})."
    )
    for line in report:
        print(line)
    print(f"Wrote {args.out}")
    return EXIT_OK
