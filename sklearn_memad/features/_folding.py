"""Fold inference-mode batch normalisations into the convolutions that feed them.

In eval mode a ``BatchNorm2d`` is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a shifted bias. Folding removes a full pass over every
normalised feature map, so the forward pass is faster, with outputs equal up to float32
rounding.
"""

import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["fold_batch_norms"]


def fold_batch_norms(model, keep=()):
    """Fold, in place, each ``BatchNorm2d`` that only ever normalises one ``Conv2d``'s output.

    The model's data flow is read with ``torch.fx``; a model that cannot be traced is left
    unchanged. A pair is folded only when the convolution's output goes nowhere else, both
    modules are called exactly once and the convolution is not in ``keep`` (a layer whose own
    output is requested would otherwise change). The normalisation is replaced by
    ``nn.Identity`` under the same name, so hooks registered afterwards by name still fire.

    Parameters
    ----------
    model : torch.nn.Module
        A network in eval mode.
    keep : iterable of str, default=()
        Module names whose outputs must stay as they are.

    Returns
    -------
    n_folded : int
        Number of normalisations folded.
    """
    if model.training:
        raise ValueError("fold_batch_norms needs a model in eval mode; call model.eval() first.")
    try:
        graph = _ConvNormTracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure just means "run unfolded"
        return 0
    modules = dict(model.named_modules())
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    keep = set(keep)
    n_folded = 0
    for node in graph.nodes:
        if not _is_call_to(node, modules, nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if not (
            isinstance(source, torch.fx.Node)
            and _is_call_to(source, modules, nn.Conv2d)
            and len(source.users) == 1
            and calls[source.target] == 1
            and calls[node.target] == 1
            and source.target not in keep
        ):
            continue
        conv, norm = modules[source.target], modules[node.target]
        if not norm.track_running_stats or norm.running_mean is None:
            continue
        with torch.no_grad():
            weight, bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                norm.running_mean,
                norm.running_var,
                norm.eps,
                norm.weight,
                norm.bias,
            )
            conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
            conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
        _replace_module(model, node.target, nn.Identity())
        n_folded += 1
    return n_folded


class _ConvNormTracer(torch.fx.Tracer):
    # Convolution subclasses (e.g. TensorFlow-style "same" padding) compute their padding from
    # the input size, which symbolic tracing cannot; as leaves they are recorded, not traced.
    def is_leaf_module(self, module, qualified_name):
        return isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(
            module, qualified_name
        )


def _is_call_to(node, modules, kind):
    return node.op == "call_module" and isinstance(modules.get(node.target), kind)


def _replace_module(model, name, module):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
