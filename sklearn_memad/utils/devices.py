"""Where the numerical work runs: the torch device an estimator names, and its fitted arrays
moved there once.

Every estimator of a pipeline takes a ``device`` parameter: ``"cpu"``, ``"cuda"``,
``"cuda:<index>"``, or ``"auto"`` (CUDA when torch sees it). Fitted attributes stay NumPy
arrays on the host, so a model saved on a GPU machine loads anywhere; the tensors an
estimator computes with on another device are copies, made on first use and kept beside the
fitted state (never pickled, never saved) until the arrays they copy are replaced.
"""

import numpy as np
import torch

from .tensors import read_tensor

__all__ = ["DeviceArrays", "is_accelerator", "resolve_device", "to_host", "to_device"]


def resolve_device(device, name="device"):
    """The ``torch.device`` that ``device`` names, checked to exist here.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``, another torch device name, or ``"auto"``.
    name : str, default="device"
        Name of the parameter, for the error message.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If ``device`` is not a torch device name, or names CUDA where there is none.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"{name}={device!r} is not a torch device; expected 'cpu', 'cuda', "
                "'cuda:<index>' or 'auto'."
            ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}={device!r} but CUDA is not available here; use {name}='cpu' or "
                f"'auto' (set_params({name}='cpu') also works on a fitted or reloaded "
                "estimator)."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name}={device!r} but this machine has {torch.cuda.device_count()} CUDA "
                "device(s)."
            )
        if resolved.index is None:  # so that tensors' devices compare equal to it
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def is_accelerator(device):
    """Whether work on ``device`` should take the accelerator's algorithms (fewer, larger
    operations with no round trip to the host) rather than the CPU's (cache-sized blocks,
    pruned work). Tests patch this to run the accelerator's code on the CPU."""
    return device.type != "cpu"


def to_device(array, device):
    """A NumPy array as a tensor on ``device``: shared, not copied, on the CPU."""
    tensor = read_tensor(np.asarray(array))
    return tensor if device.type == "cpu" else tensor.to(device)


def to_host(tensor):
    """A tensor's values as a NumPy array (a view of it when it already is on the CPU)."""
    return tensor.detach().cpu().numpy()


class DeviceArrays:
    """Fitted NumPy arrays as tensors on a device, moved once and reused.

    A tensor is reused while the array it was made from is the same object (refitting,
    growing or merging replaces fitted arrays rather than writing into them) and the device
    is the same; otherwise it is made again. On the CPU the tensor shares the array's memory.
    """

    def __init__(self):
        self._held = {}

    def get(self, name, array, device):
        """The tensor of ``array`` (held under ``name``) on ``device``."""
        held = self._held.get(name)
        if held is not None and held[0] is array and held[1].device == device:
            return held[1]
        tensor = to_device(array, device)
        self._held[name] = (array, tensor)
        return tensor
