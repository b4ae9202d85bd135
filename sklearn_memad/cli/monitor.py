"""``memad monitor``: is the line still producing what the model was trained on?

Reads the anomaly scores of production images (the ``score`` column of the scores.csv that
``memad score`` writes, in the order the images were taken), feeds them to a
:class:`~sklearn_memad.monitoring.DriftMonitor` fitted on the model's out-of-sample training
scores, prints where it stands and exits non-zero on an alarm, so a cron job or a line
controller can act on it.
"""

import csv

import numpy as np

from ..monitoring import DriftMonitor
from .exit_codes import EXIT_ALARM, EXIT_DATA, EXIT_MODEL, EXIT_OK, CommandError
from .outputs import read_model_option

__all__ = ["run"]


def _read_scores(path):
    """The non-empty ``score`` column of a CSV file, and the ``path`` column if it has one."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise CommandError(f"the scores file '{path}' does not exist", EXIT_DATA) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CommandError(f"cannot read '{path}' as a CSV file: {exc}", EXIT_DATA) from None
    if not rows or "score" not in rows[0]:
        raise CommandError(
            f"'{path}' has no 'score' column; expected the scores.csv of memad score (or any "
            "CSV with a 'score' column of image anomaly scores)",
            EXIT_DATA,
        )
    kept = [row for row in rows if (row.get("score") or "").strip()]
    try:
        scores = np.array([float(row["score"]) for row in kept])
    except ValueError as exc:
        raise CommandError(f"'{path}': a score is not a number ({exc})", EXIT_DATA) from None
    if not np.isfinite(scores).all():
        raise CommandError(f"'{path}': a score is not finite", EXIT_DATA)
    return scores, [row.get("path", "") for row in kept]


def _monitor(args):
    model, _ = read_model_option(args.model)
    params = {"window": args.window, "alpha": args.alpha, "run_length": args.run_length}
    try:
        return DriftMonitor.from_model(model, **params)
    except ValueError as exc:  # too few training scores to compare with
        raise CommandError(f"'{args.model}': {exc}", EXIT_MODEL) from exc


def _report(state, monitor, paths, source):
    print(f"memad monitor: {state.n_seen} images from {source}")
    if state.share is not None:
        recent = min(monitor.window, state.n_seen)
        print(
            f"  beyond the threshold: {state.share:.1%} of the last {recent} images; "
            f"{state.expected_share:.1%} expected"
        )
    n_blocks = state.n_seen // monitor.window
    ks = [alarm for alarm in state.alarms if alarm["test"] == "ks"]
    print(
        f"  distribution (KS test per block of {monitor.window}): {n_blocks} blocks, "
        f"{len(ks)} alarm{'' if len(ks) == 1 else 's'} at alpha={monitor.alpha:g}"
    )
    upper, lower = state.cusum
    print(
        f"  median (CUSUM of percentiles): up {upper:.2f}, down {lower:.2f}, limit "
        f"{state.limit:.2f} (one false alarm per {monitor.run_length:g} normal images)"
    )
    if not state.alarm:
        print("  state: OK")
        return
    first = state.alarms[0]
    where = paths[first["image"]] if paths[first["image"]] else f"image {first['image'] + 1}"
    test = "the score distribution changed" if first["test"] == "ks" else "the scores shifted"
    print(f"  state: ALARM ({len(state.alarms)} alarms), first at {where}: {test}")


def run(args):
    """Feed the scores file to a monitor of the model; exit non-zero on an alarm."""
    monitor = _monitor(args)
    scores, paths = _read_scores(args.scores)
    if scores.size == 0:
        raise CommandError(f"'{args.scores}' holds no score", EXIT_DATA)
    state = monitor.update(scores)
    _report(state, monitor, paths, args.scores)
    return EXIT_ALARM if state.alarm else EXIT_OK
