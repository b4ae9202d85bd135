"""Work split into chunks, so peak memory stays bounded on large banks and large test sets."""

__all__ = ["WORK_BYTES", "chunk_rows", "chunked"]

#: Rows of intermediate work arrays are sized to stay near this many bytes.
WORK_BYTES = 128 << 20


def chunk_rows(bytes_per_row, budget=WORK_BYTES):
    """How many rows of ``bytes_per_row`` fit in the work budget (at least one)."""
    return int(max(1, budget // max(int(bytes_per_row), 1)))


def chunked(items, size):
    """Consecutive slices of ``items`` with at most ``size`` elements each."""
    return [items[start : start + size] for start in range(0, len(items), size)]
