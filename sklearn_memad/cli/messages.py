"""What the command line says on standard error besides errors: warnings, skipped files."""

import sys

__all__ = ["report_skipped", "report_unscored", "warn"]

# Pillow's message and ours both say this of an image refused for its pixel count.
_TOO_LARGE = "decompression bomb"


def warn(message):
    print(f"memad: warning: {message}", file=sys.stderr)


def _listed(failed):
    shown = "; ".join(f"'{path}' ({reason})" for path, reason in failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    hint = (
        "; --max-image-pixels N raises the limit on pixels"
        if any(_TOO_LARGE in reason for _, reason in failed)
        else ""
    )
    return f"{shown}{more}{hint}"


def report_skipped(skipped):
    """One warning naming the first few unreadable files and why they were skipped."""
    if not skipped:
        return
    plural = "s" if len(skipped) > 1 else ""
    warn(f"skipped {len(skipped)} unreadable image{plural}: {_listed(skipped)}")


def report_unscored(failed, table):
    """One warning: the images that got no verdict, and where their reasons are."""
    if not failed:
        return
    plural = "s" if len(failed) > 1 else ""
    warn(
        f"{len(failed)} image{plural} got no verdict (rows of {table} with the reason in "
        f"'error'): {_listed(failed)}"
    )
