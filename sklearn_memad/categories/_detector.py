"""MultiCategoryDetector: one FeatureTransformer, one fitted head per category."""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from .. import defaults
from ..maps import check_sigma, patch_to_pixel_maps
from ..pipelines import DetectorPipeline
from ..utils.chunking import check_chunk_size, chunked
from ..utils.pipeline import model_parts
from ..utils.validation import check_image_layout, check_image_size, check_image_values
from ._joining import check_same_features, split_pipeline
from ._names import SHOWN, category_labels, is_category_name

__all__ = ["MultiCategoryDetector"]


class MultiCategoryDetector(OutlierMixin, BaseEstimator):
    """One feature extractor shared by many categories, each scored by its own memory.

    ``fit`` computes the features of every image once with one
    :class:`~sklearn_memad.FeatureTransformer` and fits a clone of ``head`` (a detector, or a
    Pipeline from grids to one) on the grids of each category's images. Scoring runs the
    backbone once per image, whatever its category, and gives each image's grid to the head
    of its category: the images are put in category order, taken ``chunk_size`` at a time,
    and each head scores the run of its images in a chunk in one call; the results come back
    in the order of ``X``. The backbone and its weights are held once, however many
    categories there are.

    Every method takes ``categories``: one category per image of ``X`` (str or int names,
    all of one kind), or a single name for all of them. Each category is scored exactly as
    a Pipeline of ``features`` and its head fitted on the category's images alone would
    score it (to float rounding: the backbone sees other batches).

    Parameters
    ----------
    features : FeatureTransformer
        Unfitted; turns images into patch-feature grids for every category.
    head : estimator, Pipeline or dict
        Unfitted, from grids to a sklearn_memad detector, e.g. ``PatchCoreDetector()`` or
        ``make_pipeline(LocalAggregation(), PatchCoreDetector())``; every category is fitted
        with a clone of it. A dict ``{category: head}`` gives each category its own.
    chunk_size : int, default=64
        Images whose grids exist at once when scoring; bounds the memory of scoring.

    Attributes
    ----------
    features_ : FeatureTransformer
        The fitted feature extractor, shared by all categories.
    categories_ : ndarray of shape (n_categories,)
        The category names seen in ``fit``, sorted (str or int64).
    heads_ : dict
        ``{category: fitted head}``, in the order of ``categories_``.

    See Also
    --------
    sklearn_memad.distributed.fit_categories : Fit one pipeline per category on a cluster;
        :meth:`from_pipelines` then joins them.

    Notes
    -----
    ``fit`` holds the grids of one category at a time, so its memory follows the largest
    category, not all of them. ``n_features_in_`` is not set: the input is a batch of
    images (see :class:`~sklearn_memad.FeatureTransformer`); each head records the feature
    count of its grids.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_memad import (FeatureTransformer, LocalAggregation,
    ...                            MultiCategoryDetector, PatchCoreDetector)
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    >>> parts = ["bolt"] * 6 + ["nut"] * 6
    >>> detector = MultiCategoryDetector(
    ...     FeatureTransformer(backbone="resnet18", weights=None, layers=("layer1",),
    ...                        image_size=32, random_state=0),
    ...     make_pipeline(LocalAggregation(), PatchCoreDetector(random_state=0)),
    ... ).fit(X, categories=parts)
    >>> detector.categories_
    array(['bolt', 'nut'], dtype='<U4')
    >>> detector.score_samples(X[:3], categories=["nut", "bolt", "nut"]).shape
    (3,)
    >>> detector.anomaly_maps(X[:2], categories="bolt").shape
    (2, 32, 32)
    """

    _parameter_constraints: dict = {
        "features": [HasMethods(["fit", "transform"])],
        "head": [HasMethods(["fit", "score_samples"]), dict],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, features, head, *, chunk_size=defaults.SCORE_CHUNK):
        self.features = features
        self.head = head
        self.chunk_size = chunk_size

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, categories):
        """Fit the feature extractor once and one head per category on its images.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Defect-free images, uint8 in [0, 255] or float in [0, 1].
        y : array-like of shape (n,), default=None
            Optional labels, given to each head with its images.
        categories : array-like of shape (n,), str or int
            The category of each image (or one name for all of them).

        Returns
        -------
        self : MultiCategoryDetector
            Fitted. When a head refuses its category's images, the error names the
            category and a fitted detector is left as it was.
        """
        self._fit(X, y, categories, "fit")
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_predict(self, X, y=None, *, categories):
        """Fit, and label the training images +1 (normal) or -1 (anomaly) as the heads do.

        Each category's labels are its head's ``fit_predict``: a sklearn_memad detector
        labels its training images by their out-of-sample scores, as a Pipeline of the
        category alone would.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Defect-free images.
        y : array-like of shape (n,), default=None
            Optional labels, given to each head with its images.
        categories : array-like of shape (n,), str or int
            The category of each image (or one name for all of them).

        Returns
        -------
        labels : ndarray of shape (n,)
        """
        return self._fit(X, y, categories, "fit_predict")

    def _fit(self, X, y, categories, method):
        """Fit with each head's ``method`` ("fit" or "fit_predict"); its labels, or None."""
        check_chunk_size(self.chunk_size)
        images = _checked_images(X)
        labels = category_labels(categories, len(images))
        if y is not None:
            y = np.asarray(y)
            if y.shape != (len(images),):
                raise ValueError(
                    f"y must have shape ({len(images)},), one label per image of X; got "
                    f"shape {y.shape}."
                )
        names, codes = np.unique(labels, return_inverse=True)
        heads = self._unfitted_heads(names.tolist())
        features = clone(self.features).fit(images)
        predicted = np.ones(len(images), dtype=int) if method == "fit_predict" else None
        for code, name in enumerate(names.tolist()):
            rows = np.flatnonzero(codes == code)
            grids = features.transform(images[rows])
            result = _fit_head(heads[name], method, grids, None if y is None else y[rows], name)
            if predicted is not None:
                predicted[rows] = result
            # Dropped before the next category's grids are made, so only one set exists.
            del grids
        self.features_ = features
        self.categories_ = names
        self.heads_ = heads
        return predicted

    def _unfitted_heads(self, names):
        """``{category: unfitted clone of its head}`` for the categories ``names``."""
        if not isinstance(self.head, dict):
            return {name: clone(self.head) for name in names}
        missing = [name for name in names if name not in self.head]
        if missing:
            raise ValueError(
                f"categories holds {SHOWN.repr(missing)}, for which the dict head has no "
                f"entry; it has heads for {SHOWN.repr(list(self.head))}."
            )
        for name in names:
            head = self.head[name]
            if not (hasattr(head, "fit") and hasattr(head, "score_samples")):
                raise TypeError(
                    f"head[{name!r}] must be an estimator with fit and score_samples (a "
                    f"detector, or a Pipeline ending in one); got {type(head).__name__}."
                )
        return {name: clone(self.head[name]) for name in names}

    def score_samples(self, X, *, categories):
        """Image normality scores (lower = more abnormal), each from its category's head.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images.
        categories : array-like of shape (n,), str or int
            The category of each image (or one name for all of them), among ``categories_``.

        Returns
        -------
        scores : ndarray of shape (n,)
        """
        return self._per_category(_head_method("score_samples"), X, categories)

    def decision_function(self, X, *, categories):
        """``score_samples`` minus the threshold of each image's head: negative for anomalies.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images.
        categories : array-like of shape (n,), str or int
            The category of each image (or one name for all of them), among ``categories_``.

        Returns
        -------
        decision : ndarray of shape (n,)
        """
        return self._per_category(_head_method("decision_function"), X, categories)

    def predict(self, X, *, categories):
        """+1 (normal) or -1 (anomaly), as each image's head decides.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images.
        categories : array-like of shape (n,), str or int
            The category of each image (or one name for all of them), among ``categories_``.

        Returns
        -------
        labels : ndarray of shape (n,)
        """
        return self._per_category(_head_method("predict"), X, categories)

    def score_patches(self, X, *, categories):
        """Patch anomaly scores (higher = more abnormal), each from its category's detector.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images.
        categories : array-like of shape (n,), str or int
            The category of each image (or one name for all of them), among ``categories_``.

        Returns
        -------
        patch_scores : ndarray of shape (n, h, w)
        """
        return self._per_category(_patch_scores, X, categories)

    def anomaly_maps(self, X, *, categories, sigma=4.0, output_size=None):
        """Pixel anomaly maps (higher = more abnormal), each from its category's detector.

        The maps of :func:`sklearn_memad.anomaly_maps` for the pipeline of each image's
        category (see :meth:`category_pipeline`): patch scores upsampled and smoothed.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images.
        categories : array-like of shape (n,), str or int
            The category of each image (or one name for all of them), among ``categories_``.
        sigma : float in [0, 1000], default=4.0
            Gaussian smoothing (pixels of the output) after bilinear upsampling; 0 disables it.
        output_size : int, (int, int) or None, default=None
            ``(H, W)`` of the maps; default: the size of the images ``X``.

        Returns
        -------
        maps : ndarray of shape (n, H, W), float32
        """
        sigma = check_sigma(sigma)  # both checked before the backbone runs
        size = check_image_size(output_size, "output_size")
        patch_scores = self.score_patches(X, categories=categories)
        return patch_to_pixel_maps(patch_scores, size or np.shape(X)[1:3], sigma)

    def category_pipeline(self, category):
        """The Pipeline from images to scores of one category: ``features_``, then its head.

        It holds this detector's fitted estimators themselves, not copies, so it costs no
        memory; use it where one pipeline is expected (``predict_anomaly_maps``, an ONNX
        export, a model file of one category).

        Parameters
        ----------
        category : str or int
            One of ``categories_``.

        Returns
        -------
        pipeline : DetectorPipeline
            Fitted; it scores as this detector does for images of ``category``.
        """
        check_is_fitted(self)
        if not is_category_name(category):
            raise TypeError(
                f"category must be one category name (str or int); got {SHOWN.repr(category)}."
            )
        code = self._category_codes(category, 1)[0]
        head = self.heads_[self.categories_[code].item()]
        steps = head.steps if isinstance(head, Pipeline) else [(type(head).__name__.lower(), head)]
        return DetectorPipeline(
            [("featuretransformer", self.features_), *steps], chunk_size=self.chunk_size
        )

    @classmethod
    def from_pipelines(cls, pipelines, *, chunk_size=defaults.SCORE_CHUNK):
        """Join fitted pipelines of several categories into one detector with one backbone.

        Each pipeline starts with a :class:`~sklearn_memad.FeatureTransformer`, and they
        must compute the same features: same ``backbone``, ``layers``, ``weights``,
        ``image_size``, ``max_features`` and kept channels, and with ``weights=None`` the
        same random initialisation (fit them with the same int ``random_state``). The first
        pipeline's transformer is kept; the others are dropped with their backbones. The
        steps after it become the category's head, not copied: the result shares them with
        the pipelines. The heads may differ (another detector, other settings); ``head`` is
        then a dict of unfitted clones, so that refitting gives each category its own again.

        Parameters
        ----------
        pipelines : dict of {str or int: Pipeline}
            Each category's fitted Pipeline from images to a detector, as
            :func:`~sklearn_memad.distributed.fit_categories` returns them.
        chunk_size : int, default=64
            As the class parameter.

        Returns
        -------
        detector : MultiCategoryDetector
            Fitted; scores each category as its pipeline does.

        Raises
        ------
        TypeError
            If ``pipelines`` is not a non-empty dict of Pipelines starting with a
            FeatureTransformer and ending in a detector, or its keys are not all str or all
            int.
        ValueError
            If a pipeline is not fitted, or computes other features than the first (the
            message names the category and the parameter).
        """
        if not isinstance(pipelines, dict) or not pipelines:
            raise TypeError(
                "pipelines must be a non-empty dict {category: fitted Pipeline}; got "
                f"{SHOWN.repr(pipelines)}."
            )
        names = category_labels(list(pipelines), len(pipelines), "the keys of pipelines")
        features, heads = None, {}
        # Plain str or int keys (not NumPy scalars), as fit makes them.
        for name, pipeline in zip(names.tolist(), pipelines.values()):
            transformer, heads[name] = split_pipeline(pipeline, name)
            if features is None:
                features, first = transformer, name
            else:
                check_same_features(features, first, transformer, name)
        unfitted = {name: clone(head) for name, head in heads.items()}
        model = cls(clone(features), unfitted, chunk_size=chunk_size)
        model.features_ = features
        model.categories_ = np.unique(names)
        model.heads_ = {name: heads[name] for name in model.categories_.tolist()}
        return model

    def _category_codes(self, categories, n_samples):
        """The index into ``categories_`` of each image's category; unknown ones refused."""
        labels = category_labels(categories, n_samples)
        known = self.categories_
        if labels.dtype.kind == known.dtype.kind:
            codes = np.minimum(np.searchsorted(known, labels), len(known) - 1)
            found = known[codes] == labels
        else:
            codes, found = None, np.zeros(len(labels), dtype=bool)
        if not found.all():
            unknown = np.unique(labels[~found]).tolist()
            raise ValueError(
                f"categories holds {len(unknown)} category(ies) this detector was not fitted "
                f"on: {SHOWN.repr(unknown)}; it knows {SHOWN.repr(known.tolist())}."
            )
        return codes

    def _per_category(self, method, X, categories):
        """``method(head, grids)`` for the images of ``X``, each with its category's head.

        The images go in category order, ``chunk_size`` at a time through the backbone;
        each head takes the run of its own images in a chunk at once. Results are put back
        in the order of ``X``.
        """
        check_is_fitted(self)
        chunk_size = check_chunk_size(self.chunk_size)  # set_params may have changed it
        images = _checked_images(X)
        codes = self._category_codes(categories, len(images))
        order = np.argsort(codes, kind="stable")
        out = None
        for rows in chunked(order, chunk_size):
            grids = self.features_.transform(images[rows])
            chunk_codes = codes[rows]
            starts = np.flatnonzero(np.r_[True, chunk_codes[1:] != chunk_codes[:-1]])
            for start, stop in zip(starts, np.r_[starts[1:], len(rows)]):
                head = self.heads_[self.categories_[chunk_codes[start]].item()]
                result = np.asarray(method(head, grids[start:stop]))
                if out is None:
                    out = np.empty((len(images),) + result.shape[1:], dtype=result.dtype)
                out[rows[start:stop]] = result
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # A batch of images, never a 2-D table (see FeatureTransformer).
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


def _checked_images(X):
    """``X`` as an image array, its layout and values checked as a whole, before any work."""
    images = check_image_layout(X)
    check_image_values(images)
    return images


def _fit_head(head, method, grids, y, name):
    """``head.fit`` or ``head.fit_predict`` on one category's grids; a refusal names it."""
    try:
        return getattr(head, method)(grids) if y is None else getattr(head, method)(grids, y)
    except ValueError as exc:
        raise ValueError(
            f"categories: the head of category {name!r} cannot be fitted on its "
            f"{len(grids)} image(s): {exc}"
        ) from exc


def _head_method(name):
    """A function calling the head's method ``name`` on grids."""

    def call(head, grids):
        return getattr(head, name)(grids)

    return call


def _patch_scores(head, grids):
    """``score_patches`` of the detector at the end of ``head``, after its transforms."""
    parts = model_parts(head)
    if parts.head is not None:
        grids = parts.head.transform(grids)
    return parts.detector.score_patches(grids)
