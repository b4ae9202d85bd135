"""Fitted pipelines of several categories, checked to share one feature extractor."""

import os

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ..features import FeatureTransformer
from ..utils.pipeline import model_parts
from ..utils.validation import check_image_size
from ._names import SHOWN

__all__ = ["check_same_features", "split_pipeline"]

# The FeatureTransformer parameters that decide which features it computes; the others
# (batch_size, device, verbose) only change how fast and where.
_FEATURE_PARAMS = ("backbone", "layers", "weights", "image_size", "max_features")


def split_pipeline(pipeline, name):
    """(FeatureTransformer, head) of a fitted category pipeline, checked."""
    steps = pipeline.steps if isinstance(pipeline, Pipeline) else None
    if not steps or len(steps) < 2 or not isinstance(steps[0][1], FeatureTransformer):
        raise TypeError(
            f"pipelines[{name!r}] must be a Pipeline whose first step is a FeatureTransformer "
            f"and whose last is a detector; got {SHOWN.repr(pipeline)}."
        )
    head = pipeline[1:] if len(steps) > 2 else steps[-1][1]
    try:
        check_is_fitted(steps[0][1])
        detector = model_parts(head).detector
        check_is_fitted(detector)
    except NotFittedError:
        raise ValueError(f"pipelines[{name!r}] is not fitted; fit it first.") from None
    except TypeError as exc:
        raise TypeError(f"pipelines[{name!r}]: {exc}") from None
    return steps[0][1], head


def _feature_spec(transformer):
    """What decides the features a fitted FeatureTransformer computes."""
    params = transformer.get_params(deep=False)
    spec = {key: params[key] for key in _FEATURE_PARAMS}
    layers = spec["layers"]
    spec["layers"] = (layers,) if isinstance(layers, str) else layers and tuple(layers)
    spec["weights"] = None if spec["weights"] is None else os.fspath(spec["weights"])
    spec["image_size"] = check_image_size(spec["image_size"])
    kept = transformer.features_kept_
    spec["features_kept_"] = None if kept is None else tuple(np.asarray(kept).tolist())
    if spec["weights"] is None:
        spec["init_seed_"] = int(transformer.init_seed_)
    return spec


def check_same_features(first, first_name, other, name):
    """Refuse ``other`` unless it computes the same features as ``first``."""
    expected, found = _feature_spec(first), _feature_spec(other)
    for key, value in expected.items():
        if found[key] != value:
            hint = " (its random weights: fit both with one int random_state)"
            raise ValueError(
                f"pipelines[{name!r}] computes other features than pipelines[{first_name!r}]: "
                f"its FeatureTransformer has {key}={SHOWN.repr(found[key])} where the other "
                f"has {SHOWN.repr(value)}{hint if key == 'init_seed_' else ''}. One backbone "
                "serves only categories whose features agree: same backbone, layers, weights, "
                "image_size and max_features, and the same seed for random weights."
            )
