"""What the command line says on standard error besides errors: warnings, skipped files."""

import sys

__all__ = ["report_skipped", "warn"]


def warn(message):
    print(f"memad: warning: {message}", file=sys.stderr)


def report_skipped(skipped):
    """One warning naming the first few unreadable files and why they were skipped."""
    if not skipped:
        return
    shown = "; ".join(f"'{path}' ({reason})" for path, reason in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    plural = "s" if len(skipped) > 1 else ""
    warn(f"skipped {len(skipped)} unreadable image{plural}: {shown}{more}")
