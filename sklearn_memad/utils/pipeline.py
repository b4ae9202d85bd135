"""The one walk from a fitted model to its parts.

A model is a sklearn_memad detector, a ``Pipeline`` ending in one, or a fitted meta-estimator
(such as :class:`~sklearn_memad.thresholds.ThresholdedDetector`) wrapping either. Maps come
from the detector at the end; the decision comes from the outermost estimator that sets a
threshold of its own. Every module that needs one of these parts asks :func:`model_parts`.
"""

from collections import namedtuple
from contextlib import contextmanager

from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "ModelParts",
    "decision_threshold",
    "is_detector",
    "model_parts",
    "restore_steps_on_error",
]

ModelParts = namedtuple("ModelParts", "pipeline head detector decider")
ModelParts.__doc__ = """The parts of a model.

pipeline : the outermost Pipeline (from images, usually), or None for a bare detector
head : the transform steps before the detector, as one Pipeline, or None
detector : the detector at the end
decider : the outermost fitted wrapper with a ``threshold_`` of its own, else the detector
"""


def is_detector(estimator):
    """True for a sklearn_memad detector: it scores patches, not only images."""
    return hasattr(estimator, "score_patches") and hasattr(estimator, "top_k")


def model_parts(model):
    """Split ``model`` into :class:`ModelParts`; raise a ``TypeError`` if no detector ends it.

    A wrapper is a fitted meta-estimator that decides with a ``threshold_`` of its own and
    scores with its ``estimator_``; an unfitted one raises ``NotFittedError``.
    """
    pipeline, decider, heads = None, None, []
    estimator = model
    while not is_detector(estimator):
        if isinstance(estimator, Pipeline):
            pipeline = estimator if pipeline is None else pipeline
            if len(estimator.steps) > 1:
                heads.append(estimator[:-1])
            estimator = estimator.steps[-1][1]
        elif hasattr(estimator, "threshold_") and hasattr(estimator, "estimator_"):
            decider = estimator if decider is None else decider
            estimator = estimator.estimator_
        else:
            if hasattr(estimator, "estimator") and not hasattr(estimator, "estimator_"):
                check_is_fitted(estimator)  # an unfitted wrapper: NotFittedError says so
            raise TypeError(
                "estimator must be a fitted sklearn_memad detector, or a Pipeline or "
                "ThresholdedDetector ending in one; got "
                f"{type(estimator).__name__} as the final step."
            )
    head = None
    if len(heads) == 1:
        head = heads[0]
    elif heads:
        head = Pipeline([(f"step{i}", step) for i, step in enumerate(heads)])
    return ModelParts(pipeline, head, estimator, decider if decider is not None else estimator)


def decision_threshold(model):
    """The threshold on ``score_samples`` that ``model.predict`` applies.

    The outermost fitted wrapper's ``threshold_`` when there is one, else the detector's
    ``offset_``.
    """
    parts = model_parts(model)
    if parts.decider is parts.detector:
        check_is_fitted(parts.detector)
        return float(parts.detector.offset_)
    return float(parts.decider.threshold_)


# Attributes that hold the estimators of a meta-estimator (one, or a dict of them): a
# wrapper's estimator, a MultiCategoryDetector's features and per-category heads.
_INNER_ESTIMATORS = ("estimator", "estimator_", "features", "features_", "head", "heads_")


def every_estimator(model):
    """``model`` and every estimator inside it: pipeline steps, nested pipelines, the
    ``estimator`` and fitted ``estimator_`` of wrappers, and the ``features`` and ``head``
    (and fitted ``features_`` and ``heads_``) of a MultiCategoryDetector."""
    found = [model]
    for _, step in getattr(model, "steps", None) or []:
        if step is not None and not isinstance(step, str):
            found += every_estimator(step)
    for name in _INNER_ESTIMATORS:
        inner = vars(model).get(name) if hasattr(model, "__dict__") else None
        for item in inner.values() if isinstance(inner, dict) else [inner]:
            if item is not None and hasattr(item, "get_params"):
                found += every_estimator(item)
    return found


@contextmanager
def restore_steps_on_error(pipeline):
    """Put back ``pipeline`` and all its steps if the block raises.

    Pipeline.fit fits the steps one after the other: when a late step fails, the earlier
    ones have already been refitted (with new random draws when ``random_state=None``) and
    no longer match the fitted last step. Fitting code replaces attributes instead of
    mutating arrays, so shallow copies of each ``__dict__`` (and of the step list, which
    ``Pipeline(memory=...)`` edits in place) are a complete snapshot.
    """
    snapshots = []
    for estimator in every_estimator(pipeline):
        state = dict(estimator.__dict__)
        if isinstance(state.get("steps"), list):
            state["steps"] = list(state["steps"])
        snapshots.append((estimator, state))
    try:
        yield
    except BaseException:
        for estimator, state in snapshots:
            estimator.__dict__.clear()
            estimator.__dict__.update(state)
        raise
