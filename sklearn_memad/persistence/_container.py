"""The container of a model file: one safetensors file, whose header also holds the JSON.

Files that are not safetensors are refused before anything reads them as data; pickles and
compressed files (such as joblib writes) are named as such, so that their owners know why.
"""

import contextlib
import errno
import os
import stat
import uuid

from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ._codec import ModelFileError

__all__ = ["open_model_file", "write_model_file"]

# The opening bytes of a pickle (protocols 2 to 5, what joblib and pickle write).
_PICKLE = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))
_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"x\x01", "zlib"),
    (b"x\x5e", "zlib"),
    (b"x\x9c", "zlib"),
    (b"x\xda", "zlib"),
)
_ADVICE = (
    "A sklearn_memad model file is a safetensors file written by save_model or `memad fit`: "
    "refit the model, or, only if you trust this file, load it in Python with joblib.load "
    "and write it again with sklearn_memad.persistence.save_model."
)


def _refuse_other_formats(path):
    """Name what the file is when it cannot be a safetensors file, before parsing it."""
    with open(path, "rb") as handle:
        start = handle.read(9)
    # A safetensors file opens with the header's length (8 bytes) and the header's '{'. The
    # length's bytes can look like a pickle's or a compressor's opening, so this comes first;
    # a file that only looks like one is then parsed as JSON, which runs nothing.
    if start[8:9] == b"{":
        return
    if start.startswith(_PICKLE):
        raise ModelFileError(
            f"'{path}' is a pickle (such as a model file of an earlier sklearn_memad, written "
            "with joblib), not a sklearn_memad model file; it was not loaded, because "
            f"loading a pickle can run any code it holds. {_ADVICE}"
        )
    for magic, name in _COMPRESSED:
        if start.startswith(magic):
            raise ModelFileError(
                f"'{path}' is a {name}-compressed file (such as a compressed joblib pickle), "
                f"not a sklearn_memad model file; it was not opened. {_ADVICE}"
            )
    raise ModelFileError(
        f"'{path}' is not a sklearn_memad model file (it is not a safetensors file). {_ADVICE}"
    )


@contextlib.contextmanager
def open_model_file(path):
    """Open ``path`` as a safetensors file (NumPy arrays); yield the handle.

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` for any
    file that is not a readable safetensors file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The model file '{path}' does not exist.")
    _refuse_other_formats(path)
    try:
        handle = safe_open(path, framework="numpy")
    except SafetensorError as exc:
        raise ModelFileError(
            f"'{path}' is a damaged model file: it cannot be read as a safetensors file "
            f"({exc}); it may have been cut short. Copy it again, or refit the model."
        ) from None
    with handle:
        try:
            yield handle
        except SafetensorError as exc:
            raise ModelFileError(f"'{path}' is a damaged model file ({exc}).") from None


def write_model_file(path, tensors, metadata):
    """Write ``tensors`` and the ``metadata`` strings to ``path`` in one step.

    The file appears complete or not at all: it is written beside ``path`` and then moved
    over it. It gets the permissions of any new file (safetensors alone writes owner-only
    files, which a service reading the model under another user could not open).
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    partial = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
    # Created here first, so that a missing folder or a read-only one is a plain OSError.
    with open(partial, "xb"):
        pass
    try:
        mode = stat.S_IMODE(os.stat(partial).st_mode)
        try:
            save_file(tensors, partial, metadata=metadata)
        except SafetensorError as exc:
            raise OSError(errno.EIO, str(exc), path) from None
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
