"""Where ``memad score`` writes: the output folder, one name per input, the scores table.

The output folder is kept apart from the images: never inside (or equal to) a folder being
scanned, whose next scan would score the overlays, and never holding an input, which an
overlay could overwrite. Each input gets its own overlay name, even when two inputs share a
stem (``img0.jpg``, ``img0.png``). ``scores.csv`` gets a row per image as soon as the image is
scored or refused, flushed, so an interrupted run keeps every verdict it reached.
"""

import csv
import os
from collections import Counter
from pathlib import Path

from ..datasets import mask_name
from ..persistence import ModelFileError, load_model
from .exit_codes import EXIT_MODEL, CommandError, OptionError

__all__ = [
    "COLUMNS",
    "DEFAULT_OUT",
    "ScoresTable",
    "choose_output_folder",
    "output_names",
    "relative_source",
]

#: Output folder when --out is not given, in the current folder.
DEFAULT_OUT = "memad_scores"
#: The columns of scores.csv.
COLUMNS = (
    "path",
    "score",
    "decision",
    "label",
    "anomaly_percentile",
    "overlay",
    "mask",
    "error",
)


# --------------------------------------------------------------------------- output folder
def _within(path, folder):
    return path == folder or folder in path.parents


def _conflict(out, inputs):
    """Why ``out`` cannot hold the outputs of ``inputs``, or None."""
    for item in inputs:
        source = Path(item).resolve()
        if source.is_dir() and _within(out, source):
            where = "is" if out == source else "is inside"
            return source, f"{where} the folder '{item}' being scanned"
        if _within(source, out):
            return None, f"holds the input '{item}', which an output could overwrite"
    return None


def choose_output_folder(out, inputs):
    """The output folder: ``out`` (--out), or the default, kept apart from the inputs.

    Parameters
    ----------
    out : str or None
        The folder given with --out; None picks :data:`DEFAULT_OUT` in the current folder or,
        when a scanned folder holds the current folder, ``FOLDER_memad_scores`` beside it.
    inputs : list of str
        The files and folders named on the command line.

    Returns
    -------
    folder : pathlib.Path

    Raises
    ------
    OptionError
        If ``out`` is inside or equal to a scanned folder, or holds an input.
    """
    candidate = Path(DEFAULT_OUT if out is None else out)
    found = _conflict(candidate.resolve(), inputs)
    if found is not None and out is None and found[0] is not None:
        # The current folder is being scanned: write beside the scanned folder instead.
        source = found[0]
        if source.parent != source:
            candidate = source.parent / f"{source.name}_{DEFAULT_OUT}"
            found = _conflict(candidate.resolve(), inputs)
    if found is None:
        return candidate
    given = f"--out '{out}'" if out is not None else f"the default output folder '{candidate}'"
    raise OptionError(
        f"{given} {found[1]}: overlays there would overwrite the images or be scored by the "
        "next run; choose --out DIR outside every folder being scanned"
    )


# --------------------------------------------------------------------------- output names
def _key(name):
    # Case-insensitive file systems take a.PNG and a.png for one file.
    return name.as_posix().lower()


def relative_source(path, root):
    """``path`` relative to the folder ``root`` that holds the inputs (its name if outside)."""
    try:
        return Path(path).resolve().relative_to(root)
    except ValueError:
        return Path(Path(path).name)


def _free(name, taken):
    """``name``, or ``stem~2.png``, ``stem~3.png``... whose overlay and mask are both free."""
    candidate, i = name, 1
    while _key(candidate) in taken or _key(mask_name(candidate)) in taken:
        i += 1
        candidate = name.with_name(f"{name.stem}~{i}.png")
    return candidate


def output_names(files, root):
    """The overlay name of each input, relative to the output folder, unique among them.

    An image's overlay is its path relative to ``root`` with the ending ``.png``; inputs
    that would share that name (``img0.jpg`` and ``img0.png``) keep their own ending in it
    (``img0.jpg.png``, ``img0.png.png``). Defect masks are named from the overlay
    (``NAME_mask.png``) and are kept unique too.

    Parameters
    ----------
    files : list of path-like
        The inputs, without duplicates.
    root : pathlib.Path
        The resolved folder that holds all the inputs.

    Returns
    -------
    names : dict
        ``os.path.abspath`` of each input -> its overlay name, a relative ``pathlib.Path``.
    """
    relative = [relative_source(path, root) for path in files]
    counts = Counter(_key(r.with_suffix(".png")) for r in relative)
    names, taken = {}, set()
    for path, rel in zip(files, relative):
        name = rel.with_suffix(".png")
        if counts[_key(name)] > 1:
            name = rel.with_name(rel.name + ".png")
        name = _free(name, taken)
        taken |= {_key(name), _key(mask_name(name))}
        names[os.path.abspath(os.fspath(path))] = name
    return names


# --------------------------------------------------------------------------- scores.csv
class ScoresTable:
    """scores.csv, written a row at a time and flushed, so that every row written stays.

    Parameters
    ----------
    path : pathlib.Path
        The file, overwritten.
    """

    def __init__(self, path):
        self.path = path
        self.scored = []  # (path, score, label) of the images with a verdict
        self.failed = []  # (path, reason) of those without
        self._handle = open(path, "w", newline="")
        self._writer = csv.writer(self._handle, lineterminator="\n")
        self._write(COLUMNS)

    def _write(self, row):
        self._writer.writerow(row)
        self._handle.flush()

    def add(self, path, result, i, overlay="", mask=""):
        """The row of image ``i`` of a scored chunk (``predict_anomaly_maps``'s ``result``)."""
        label = int(result.labels[i])
        self._write(
            [
                os.fspath(path),
                f"{result.scores[i]:.6g}",
                f"{result.decision[i]:.6g}",
                label,
                f"{result.percentiles[i]:.4g}",
                overlay,
                mask,
                "",
            ]
        )
        self.scored.append((path, float(result.scores[i]), label))

    def add_failure(self, path, reason):
        """The row of an image that got no verdict, with the reason."""
        self._write([os.fspath(path), "", "", "", "", "", "", reason])
        self.failed.append((path, reason))

    def close(self):
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_model_option(path):
    """The model and metadata of ``--model``; a folder is a usage error, a missing or
    refused file a model error."""
    if Path(path).is_dir():
        raise OptionError(
            f"--model '{path}' is a folder; expected a model file written by memad fit "
            "(e.g. model.safetensors)"
        )
    try:
        return load_model(path, return_info=True)
    except (FileNotFoundError, ModelFileError) as exc:
        raise CommandError(str(exc), EXIT_MODEL) from exc
