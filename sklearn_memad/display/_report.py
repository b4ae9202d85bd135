"""A report an engineer reads: one HTML page of how a model did on a labelled folder.

The page stands alone (inline SVG charts and CSS, no script, nothing fetched), so it opens
from a shared folder or an e-mail attachment: the numbers at the threshold, ROC and
precision-recall curves, the score histogram of good and defective images with the
threshold, a table per defect kind, and the worst false positives and false negatives as
thumbnails linking their overlays.
"""

import html
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

__all__ = ["decision_summary", "write_report"]

_WIDTH, _HEIGHT, _PAD = 360, 260, 40
_GOOD, _BAD, _LINE = "#2b7a2b", "#c0392b", "#1f4e9c"


def decision_summary(labels, scores, threshold, kinds=None):
    """What a threshold does on labelled images: recall, false-positive rate, per kind.

    Parameters
    ----------
    labels : array-like of shape (n,)
        +1 normal, -1 defective.
    scores : array-like of shape (n,)
        Image anomaly scores (higher = more abnormal).
    threshold : float
        Images scoring above it are flagged.
    kinds : array-like of shape (n,), default=None
        Defect kind of each image (e.g. its folder; "good" for normal ones).

    Returns
    -------
    summary : dict
        ``recall``, ``false_positive_rate``, ``precision``, ``n_good``, ``n_defective``,
        ``caught``, ``false_alarms``, ``auroc``, ``average_precision``, and ``kinds``: a list
        of ``(kind, caught, total)`` for the defective kinds.

    Examples
    --------
    >>> from sklearn_memad.display import decision_summary
    >>> kinds = ["good", "good", "crack", "crack"]
    >>> s = decision_summary([1, 1, -1, -1], [0.1, 0.6, 0.7, 0.4], 0.5, kinds)
    >>> s["recall"], s["false_positive_rate"], s["kinds"]
    (0.5, 0.5, [('crack', 1, 2)])
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    defective, flagged = labels == -1, scores > threshold
    n_bad, n_good = int(defective.sum()), int((~defective).sum())
    caught, false_alarms = int((flagged & defective).sum()), int((flagged & ~defective).sum())
    summary = {
        "n_good": n_good,
        "n_defective": n_bad,
        "caught": caught,
        "false_alarms": false_alarms,
        "recall": caught / n_bad if n_bad else float("nan"),
        "false_positive_rate": false_alarms / n_good if n_good else float("nan"),
        "precision": caught / (caught + false_alarms) if caught + false_alarms else float("nan"),
        "auroc": float("nan"),
        "average_precision": float("nan"),
        "kinds": [],
    }
    if n_bad and n_good:
        false_rate, true_rate, _ = roc_curve(defective, scores)
        summary["auroc"] = float(np.trapezoid(true_rate, false_rate))
        summary["average_precision"] = float(average_precision_score(defective, scores))
    if kinds is not None:
        kinds = np.asarray(kinds, dtype=object)
        for kind in sorted(set(kinds[defective])):
            mine = defective & (kinds == kind)
            summary["kinds"].append((str(kind), int((flagged & mine).sum()), int(mine.sum())))
    return summary


def _axes(x_label, y_label):
    x0, y0, x1, y1 = _PAD, _PAD // 2, _WIDTH - _PAD // 2, _HEIGHT - _PAD
    parts = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" class="frame"/>']
    for tick in np.linspace(0, 1, 6):
        x, y = x0 + tick * (x1 - x0), y1 - tick * (y1 - y0)
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" class="grid"/>')
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{y1 + 14}" class="tick">{tick:.1f}</text>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" class="tick end">{tick:.1f}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{_HEIGHT - 6}" class="label">{x_label}</text>')
    parts.append(
        f'<text x="12" y="{(y0 + y1) / 2}" class="label" '
        f'transform="rotate(-90 12 {(y0 + y1) / 2})">{y_label}</text>'
    )
    return parts, (x0, y0, x1, y1)


def _curve_svg(xs, ys, point, x_label, y_label, title):
    parts, (x0, y0, x1, y1) = _axes(x_label, y_label)
    xy = " ".join(f"{x0 + x * (x1 - x0):.1f},{y1 - y * (y1 - y0):.1f}" for x, y in zip(xs, ys))
    parts.append(f'<polyline points="{xy}" fill="none" stroke="{_LINE}" stroke-width="2"/>')
    px, py = x0 + point[0] * (x1 - x0), y1 - point[1] * (y1 - y0)
    parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{_BAD}"/>')
    return _svg(parts, title)


def _svg(parts, title):
    body = "\n".join(parts)
    return (
        f'<svg width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>{body}</svg>'
    )


def _histogram_svg(scores, defective, threshold):
    low, high = float(min(scores.min(), threshold)), float(max(scores.max(), threshold))
    edges = np.linspace(low, high + 1e-12 * max(abs(high), 1.0), 31)
    good = np.histogram(scores[~defective], edges)[0]
    bad = np.histogram(scores[defective], edges)[0]
    top = max(int(good.max(initial=0)), int(bad.max(initial=0)), 1)
    parts, (x0, y0, x1, y1) = _axes("image anomaly score", "images")
    parts = [p for p in parts if "tick" not in p]  # the 0-1 ticks do not apply here
    width = (x1 - x0) / (len(edges) - 1)
    for counts, colour, shift in ((good, _GOOD, 0.0), (bad, _BAD, 0.5)):
        for i, count in enumerate(counts):
            if count:
                height = count / top * (y1 - y0)
                x = x0 + (i + shift) * width
                parts.append(
                    f'<rect x="{x:.1f}" y="{y1 - height:.1f}" width="{width / 2:.1f}" '
                    f'height="{height:.1f}" fill="{colour}"/>'
                )
    tx = x0 + (threshold - low) / max(high - low, 1e-12) * (x1 - x0)
    parts.append(f'<line x1="{tx:.1f}" y1="{y0}" x2="{tx:.1f}" y2="{y1}" class="threshold"/>')
    parts += [
        f'<text x="{x0}" y="{y1 + 14}" class="tick">{low:.4g}</text>',
        f'<text x="{x1}" y="{y1 + 14}" class="tick end">{high:.4g}</text>',
        f'<text x="{x0 - 6}" y="{y0 + 8}" class="tick end">{top}</text>',
        f'<text x="{tx + 4:.1f}" y="{y0 + 12}" class="tick">threshold</text>',
    ]
    return _svg(parts, "score histogram: good (green) and defective (red) images")


_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1180px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f0f0f0; text-align: left; } td.n { text-align: right; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.frame { fill: white; stroke: #888; } .grid { stroke: #eee; }
.tick { font-size: 10px; fill: #555; } .end { text-anchor: end; }
.label { font-size: 11px; text-anchor: middle; fill: #333; }
.threshold { stroke: #222; stroke-dasharray: 4 3; stroke-width: 1.5; }
.thumbs { display: flex; flex-wrap: wrap; gap: 12px; }
.thumbs figure { margin: 0; width: 240px; font-size: 12px; }
.thumbs img { width: 240px; border: 1px solid #ccc; }
"""


def _table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header) if header else ""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{html.escape(str(v))}</td>'
            if isinstance(v, (int, float))
            else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _thumbnails(indices, names, overlays, shown, base):
    figures = []
    for i in indices:
        caption = f"{html.escape(str(names[i]))}<br>score {html.escape(shown[i])}"
        if overlays is not None and overlays[i]:
            link = html.escape(Path(os.path.relpath(overlays[i], base)).as_posix())
            figures.append(
                f'<figure><a href="{link}"><img src="{link}" alt="{caption}"></a>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        else:
            figures.append(f"<figure><figcaption>{caption}</figcaption></figure>")
    return f'<div class="thumbs">{"".join(figures)}</div>' if figures else "<p>None.</p>"


def _numbers(summary, n_images, threshold, threshold_percentile):
    unit = (
        f" (anomaly percentile {threshold_percentile:.1f})"
        if threshold_percentile is not None
        else ""
    )
    counts = f"{summary['n_good']} good, {summary['n_defective']} defective"
    return [
        ("images", f"{n_images} ({counts})"),
        ("threshold", f"{threshold:.4g}{unit}"),
        ("recall", f"{summary['recall']:.3f} ({summary['caught']} of {summary['n_defective']})"),
        (
            "false-positive rate",
            f"{summary['false_positive_rate']:.3f} "
            f"({summary['false_alarms']} of {summary['n_good']} good images flagged)",
        ),
        ("precision", f"{summary['precision']:.3f}"),
        ("image AUROC", f"{summary['auroc']:.3f}"),
        ("average precision", f"{summary['average_precision']:.3f}"),
    ]


def _charts(summary, defective, scores, threshold):
    if not (summary["n_defective"] and summary["n_good"]):
        return []
    false_rate, true_rate, _ = roc_curve(defective, scores)
    precision, recall, _ = precision_recall_curve(defective, scores)
    return [
        "<h2>Curves</h2>",
        '<div class="charts">',
        _curve_svg(
            false_rate,
            true_rate,
            (summary["false_positive_rate"], summary["recall"]),
            "false-positive rate",
            "recall",
            "ROC curve, the threshold as a red dot",
        ),
        _curve_svg(
            recall,
            precision,
            (summary["recall"], summary["precision"]),
            "recall",
            "precision",
            "precision-recall curve, the threshold as a red dot",
        ),
        _histogram_svg(scores, defective, threshold),
        "</div>",
    ]


def _mistakes(labels, scores, threshold, names, overlays, percentiles, path, n_worst):
    """The thumbnails of the worst false positives and false negatives."""
    defective, flagged = labels == -1, scores > threshold
    shown = [
        f"{s:.4g}" + (f" (percentile {p:.1f})" if percentiles is not None else "")
        for s, p in zip(scores, percentiles if percentiles is not None else scores)
    ]
    false_positives = np.flatnonzero(flagged & ~defective)
    false_negatives = np.flatnonzero(~flagged & defective)
    worst_fp = false_positives[np.argsort(-scores[false_positives], kind="stable")][:n_worst]
    worst_fn = false_negatives[np.argsort(scores[false_negatives], kind="stable")][:n_worst]
    return [
        "<h2>Worst false positives (good images flagged, highest scores first)</h2>",
        _thumbnails(worst_fp, names, overlays, shown, path.parent),
        "<h2>Worst false negatives (defective images passed, lowest scores first)</h2>",
        _thumbnails(worst_fn, names, overlays, shown, path.parent),
    ]


def write_report(
    path,
    labels,
    scores,
    threshold,
    *,
    names,
    kinds=None,
    overlays=None,
    percentiles=None,
    threshold_percentile=None,
    title="Inspection report",
    notes=(),
    n_worst=6,
):
    """Write the HTML report of a model's verdicts on labelled images.

    Parameters
    ----------
    path : path-like
        The HTML file.
    labels : array-like of shape (n,)
        +1 normal, -1 defective.
    scores : array-like of shape (n,)
        Image anomaly scores (higher = more abnormal).
    threshold : float
        Images scoring above it are flagged.
    names : sequence of str
        Each image's name (e.g. its path relative to the scored folder).
    kinds : sequence of str, default=None
        Each image's defect kind ("good" for normal ones).
    overlays : sequence of path-like, default=None
        Each image's overlay PNG (or an empty string), linked from the thumbnails.
    percentiles : array-like of shape (n,), default=None
        Each score as an anomaly percentile (0-100), shown beside it.
    threshold_percentile : float, default=None
        The threshold as an anomaly percentile.
    title : str, default="Inspection report"
    notes : sequence of str, default=()
        Lines under the title (the model, the data).
    n_worst : int, default=6
        Thumbnails of false positives and of false negatives.

    Returns
    -------
    summary : dict
        :func:`decision_summary` of the images.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn_memad.display import write_report
    >>> path = os.path.join(tempfile.mkdtemp(), "report.html")
    >>> summary = write_report(path, [1, 1, -1, -1], [0.1, 0.6, 0.7, 0.4], 0.5,
    ...                        names=["a", "b", "c", "d"])
    >>> summary["caught"], open(path).read().startswith("<!DOCTYPE html>")
    (1, True)
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    summary = decision_summary(labels, scores, threshold, kinds)
    path = Path(path)
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(note)}</p>" for note in notes),
        "<h2>At the threshold</h2>",
        _table(None, _numbers(summary, len(scores), threshold, threshold_percentile)),
        *_charts(summary, labels == -1, scores, threshold),
    ]
    if summary["kinds"]:
        rows = [(k, f"{c} / {t}", round(c / t, 3)) for k, c, t in summary["kinds"]]
        sections += ["<h2>Per defect kind</h2>", _table(["kind", "caught", "recall"], rows)]
    sections += _mistakes(labels, scores, threshold, names, overlays, percentiles, path, n_worst)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return summary
