"""A progress bar on standard error for long loops, silent unless asked for."""

import sys
import time

__all__ = ["progress"]


def progress(iterable, verbose, label, total=None):
    """Yield from ``iterable``, drawing a one-line bar on stderr when ``verbose`` is true."""
    if not verbose:
        yield from iterable
        return
    total = len(iterable) if total is None else total
    # A terminal redraws one line; a log file gets a line per 10 % instead of per 1 %.
    granularity = 1 if sys.stderr.isatty() else 10
    start = time.perf_counter()
    shown = -1
    for done, item in enumerate(iterable, 1):
        yield item
        percent = 100 * done // max(total, 1)
        if percent // granularity != shown // granularity or done == total:
            if percent == shown:
                continue
            shown = percent
            elapsed = time.perf_counter() - start
            bar = "#" * (percent // 4)
            sys.stderr.write(f"\r{label}: [{bar:<25}] {done}/{total} {elapsed:5.1f}s")
            sys.stderr.flush()
    sys.stderr.write("\n")
