"""One set of defaults: the detectors, the standard pipelines, the command line and the
docstrings all agree with sklearn_memad.defaults. Renamed or moved names still work, with a
FutureWarning."""

import ast
import inspect
import re
import warnings

import numpy as np
import pytest

from sklearn_memad import (
    DFKDEDetector,
    FeatureTransformer,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
    defaults,
)
from sklearn_memad.cli import build_parser
from sklearn_memad.pipelines import DetectorPipeline, make_detector_pipeline

ESTIMATORS = [
    DFKDEDetector,
    FeatureTransformer,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
]


def test_detectors_take_their_defaults_from_one_place():
    patchcore = PatchCoreDetector()
    assert patchcore.coreset_ratio == defaults.CORESET_RATIO
    assert patchcore.n_neighbors == defaults.N_NEIGHBORS
    assert PaDiMDetector().reg == defaults.PADIM_REG
    assert DFKDEDetector().bandwidth == defaults.DFKDE_BANDWIDTH
    for method, detector in zip(
        ("padim", "patchcore", "dfkde"), (PaDiMDetector(), patchcore, DFKDEDetector())
    ):
        assert detector.contamination == defaults.CONTAMINATION
        assert detector.top_k == defaults.TOP_K
        assert detector.border == defaults.BORDER[method]
    assert LocalAggregation().size == defaults.AGGREGATION_SIZE
    features = FeatureTransformer()
    assert features.layers is None  # the backbone's recommended layers
    assert features.image_size == defaults.IMAGE_SIZE
    assert features.batch_size == defaults.BATCH_SIZE


@pytest.mark.parametrize("method", ["patchcore", "padim", "dfkde"])
def test_standard_pipelines_use_the_detectors_defaults(method):
    pipe = make_detector_pipeline(method)
    features, detector = pipe[0], pipe[-1]
    assert features.backbone == defaults.BACKBONE
    assert features.layers is None
    assert features.image_size == defaults.IMAGE_SIZE
    assert features.batch_size == defaults.BATCH_SIZE
    assert pipe.chunk_size == DetectorPipeline([("d", detector)]).chunk_size
    assert pipe.chunk_size == defaults.SCORE_CHUNK
    bare = type(detector)()
    names = ("contamination", "top_k", "border", "reg", "bandwidth", "coreset_ratio")
    for name in names + ("n_neighbors",):
        if hasattr(bare, name):
            assert getattr(detector, name) == getattr(bare, name), name
    if method == "patchcore":
        assert pipe[1].size == defaults.AGGREGATION_SIZE
    elif method == "padim":
        assert features.max_features == defaults.N_COMPONENTS["padim"]
    else:
        assert pipe[1].n_components == defaults.N_COMPONENTS["dfkde"]


def test_command_line_uses_the_same_defaults():
    parser = build_parser()
    fit = parser.parse_args(["fit", "--train", "folder"])
    assert fit.method == defaults.METHOD
    assert fit.backbone == defaults.BACKBONE
    assert fit.layers is None
    assert fit.image_size == defaults.IMAGE_SIZE
    assert fit.coreset_ratio == defaults.CORESET_RATIO
    assert fit.n_neighbors == defaults.N_NEIGHBORS
    assert fit.contamination == defaults.CONTAMINATION
    assert fit.batch_size == defaults.BATCH_SIZE
    score = parser.parse_args(["score", "--model", "m", "folder"])
    assert score.sigma == defaults.SIGMA


def test_auto_coreset_is_the_documented_rule():
    rng = np.random.default_rng(0)
    small = PatchCoreDetector(random_state=0).fit(rng.normal(size=(10, 4, 4, 3)))
    assert len(small.coreset_) == 16  # 10 % of 160 patches
    ratio = defaults.AUTO_CORESET_SIZE / 40_000
    large = PatchCoreDetector(random_state=0, projection_dim=None)
    large.fit(rng.normal(size=(2500, 4, 4, 2)).astype(np.float32))
    assert len(large.coreset_) == int(np.ceil(ratio * 40_000))


def _documented_defaults(obj):
    """``{parameter: default text}`` from a numpydoc Parameters section."""
    doc = inspect.getdoc(obj) or ""
    found = {}
    for line in doc.splitlines():
        match = re.match(r"^(\w+) : .*default=(.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


@pytest.mark.parametrize(
    "obj", ESTIMATORS + [DetectorPipeline, make_detector_pipeline], ids=lambda obj: obj.__name__
)
def test_docstrings_state_the_real_defaults(obj):
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    documented = _documented_defaults(obj)
    assert documented, "no 'default=' found in the docstring"
    for name, text in documented.items():
        assert name in signature.parameters, name
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue  # prose, such as "default=None (all)"; checked by reading
        assert value == signature.parameters[name].default, (name, text)


@pytest.mark.parametrize(
    "module, name, new_home",
    [
        ("sklearn_memad.demo", "make_texture_anomalies", "sklearn_memad.datasets"),
        ("sklearn_memad.demo", "run_demo", "sklearn_memad.cli.demo"),
        ("sklearn_memad.pipelines", "save_model", "sklearn_memad.persistence"),
        ("sklearn_memad.pipelines", "load_model", "sklearn_memad.persistence"),
        ("sklearn_memad.display", "predict_anomaly_maps", "sklearn_memad.maps"),
        ("sklearn_memad.display", "anomaly_map_range", "sklearn_memad.maps"),
    ],
)
def test_moved_names_still_work_with_a_warning(module, name, new_home):
    old = __import__(module, fromlist=["_"])
    new = __import__(new_home, fromlist=["_"])
    with pytest.warns(FutureWarning, match=f"moved to {new_home}.{name}"):
        assert getattr(old, name) is getattr(new, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        old.nothing  # noqa: B018


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_parameters_are_keyword_only_and_positional_use_warns(estimator):
    parameters = list(inspect.signature(estimator.__init__).parameters.values())[1:]
    assert all(p.kind == p.KEYWORD_ONLY for p in parameters)
    first = parameters[0]
    with pytest.warns(FutureWarning, match=f"Pass {first.name}=.* as keyword"):
        made = estimator(first.default)
    assert getattr(made, first.name) == first.default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimator(**{first.name: first.default})


def _fitted(estimator):
    rng = np.random.default_rng(0)
    if estimator is FeatureTransformer:
        images = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
        return estimator(backbone="resnet18", weights=None, image_size=32).fit(images)
    grids = rng.normal(size=(12, 4, 4, 6)).astype(np.float32)
    if estimator is RandomProjection:
        return estimator(n_components=3, random_state=0).fit(grids)
    return estimator().fit(grids)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_fitted_attributes_are_documented(estimator):
    fitted = _fitted(estimator)
    doc = inspect.getdoc(estimator)
    attributes = doc.split("Attributes\n----------", 1)[1].split("\n\n\n")[0]
    documented = set(re.findall(r"^(\w+_) :", attributes, flags=re.M))
    public = {name for name in vars(fitted) if name.endswith("_") and not name.startswith("_")}
    assert public <= documented, sorted(public - documented)
