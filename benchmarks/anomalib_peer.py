"""Drive anomalib 2.7's torch models (Padim, Patchcore, Dfkde) as a measured PEER of
sklearn_memad.

Runs inside ``benchmarks/.venv-anomalib`` (see ``benchmarks/setup_anomalib.sh``); sklearn_memad
never imports anomalib. One model per process, so the peak-RSS numbers are clean. No Lightning
engine and no anomalib dataset classes: the torch model is called the way the Lightning module
would call it (``training_step`` -> ``model(batch)`` in train mode collects embeddings, ``fit()``
builds the memory, ``validation_step`` -> ``model(batch)`` in eval mode scores).

Two modes:

* images (``--train X.npy --test Y.npy``): uint8 ``(n, H, W, 3)`` arrays, already at the benchmark
  size. Pre-processing is anomalib's default minus the resize: ``x / 255`` then ImageNet mean/std.
* features (``--train-features A.npy --test-features B.npy``): float32 patch grids
  ``(n, h, w, d)``, channels-last, fed straight into anomalib's memory components (no backbone):
  PaDiM -> ``MultiVariateGaussian`` + PaDiM ``AnomalyMapGenerator``;
  PatchCore -> ``PatchcoreModel.subsample_embedding`` (``KCenterGreedy``), ``nearest_neighbors``,
  ``compute_anomaly_score``, PatchCore ``AnomalyMapGenerator``;
  DFKDE -> global average pool (as ``DfkdeModel.get_features`` does) + ``KDEClassifier``.

Example::

    benchmarks/.venv-anomalib/bin/python benchmarks/anomalib_peer.py --model patchcore \\
        --train train.npy --test test.npy --out patchcore.json --save-scores patchcore.npz
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import os
import platform
import random
import resource
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYER_STRIDE = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


# ----------------------------------------------------------------------------- memory accounting
def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write "5" to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> bool:
    """Hand freed heap back to the OS (glibc), so a phase's peak does not carry the last one's
    garbage."""
    gc.collect()
    if not TRIM:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) >= 0)
    except OSError:
        return False


TRIM = True


class Phase:
    """Wall time and peak RSS (VmHWM, reset at the start) of one phase."""

    def __init__(self):
        self.seconds = 0.0
        self.peak_rss = -1
        self.hwm_reset = False

    def __enter__(self):
        _malloc_trim()
        self.hwm_reset = _reset_hwm()
        self.rss_start = _status_bytes("VmRSS")
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        self.peak_rss = _status_bytes("VmHWM")
        self.rss_end = _status_bytes("VmRSS")
        return False


class Timer:
    """Accumulating timer driven by forward pre/post hooks (backbone share of a pass)."""

    def __init__(self, module=None):
        self.seconds = 0.0
        self.calls = 0
        self._t0 = None
        if module is not None:
            module.register_forward_pre_hook(self._pre)
            module.register_forward_hook(self._post)

    def _pre(self, *args):
        self._t0 = time.perf_counter()

    def _post(self, *args):
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1


def tensor_table(
    module: torch.nn.Module,
    skip_prefix=("feature_extractor.", "anomaly_map_generator.", "feature_pooler."),
) -> dict:
    """Buffers (and parameters) of ``module`` outside the backbone and the map smoothing: the
    fitted memory."""
    table = {}
    items = list(module.named_buffers()) + list(module.named_parameters())
    for name, t in items:
        if name.startswith(tuple(skip_prefix)) or not isinstance(t, torch.Tensor):
            continue
        table[name] = {
            "shape": list(t.shape),
            "dtype": str(t.dtype).replace("torch.", ""),
            "bytes": int(t.numel() * t.element_size()),
        }
    return table


# ----------------------------------------------------------------------------- inputs
def load_images(path: str) -> np.ndarray:
    x = np.load(path, mmap_mode=None)
    if x.ndim == 3:  # greyscale (n, H, W)
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{path}: expected images (n, H, W, 3), got shape {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 images, got {x.dtype}")
    return x


def to_tensor(batch: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1], ImageNet-normalised (anomalib's default PreProcessor,
    no resize)."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


def load_features(path: str) -> np.ndarray:
    f = np.load(path)
    if f.ndim == 2:
        f = f[:, None, None, :]
    if f.ndim != 4:
        raise ValueError(f"{path}: expected feature grids (n, h, w, d), got shape {f.shape}")
    return np.ascontiguousarray(f, dtype=np.float32)


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    # KCenterGreedy's SparseRandomProjection draws via sklearn with random_state=None
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)


# ----------------------------------------------------------------------------- model builders
def import_models():
    """Import anomalib's torch models (and what they pull in) outside any clock."""
    from anomalib.models.image.dfkde.torch_model import DfkdeModel
    from anomalib.models.image.padim.torch_model import PadimModel
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    return DfkdeModel, PadimModel, PatchcoreModel


def build_model(args):
    DfkdeModel, PadimModel, PatchcoreModel = import_models()
    if args.model == "padim":
        return PadimModel(
            backbone=args.backbone,
            layers=list(args.layers),
            pre_trained=args.pretrained,
            n_features=args.n_features,
        )
    if args.model == "patchcore":
        return PatchcoreModel(
            layers=list(args.layers),
            backbone=args.backbone,
            pre_trained=args.pretrained,
            num_neighbors=args.n_neighbors,
        )
    model = DfkdeModel(
        backbone=args.backbone,
        layers=list(args.layers),
        pre_trained=args.pretrained,
        n_pca_components=args.n_pca_components,
        max_training_points=args.max_training_points,
    )
    return model


def dfkde_channel_concat(model):
    """anomalib 2.7 ``DfkdeModel.get_features`` concatenates the pooled layers along dim 0 (the
    batch), which raises for layers of different widths (layer2: 128, layer3: 256). Same code,
    ``dim=1``."""

    def get_features(batch: torch.Tensor) -> torch.Tensor:
        model.feature_extractor.eval()
        layer_outputs = model.feature_extractor(batch)
        pooled = [
            F.adaptive_avg_pool2d(v, output_size=(1, 1)).flatten(1) for v in layer_outputs.values()
        ]
        return torch.cat(pooled, dim=1).detach()

    model.get_features = get_features


class CoresetProbe:
    """Time KCenterGreedy.sample_coreset and its random projection (patches anomalib's module
    global)."""

    def __init__(self):
        import anomalib.models.components.sampling.k_center_greedy as kcg
        import anomalib.models.image.patchcore.torch_model as pc

        if not getattr(kcg.tqdm, "_peer_quiet", False):  # no progress bar on stderr
            quiet = functools.partial(kcg.tqdm, disable=True)
            quiet._peer_quiet = True
            kcg.tqdm = quiet
        self.seconds = 0.0
        self.projection_seconds = 0.0
        self.projection_dim = None
        self.n_input = None
        base = pc.KCenterGreedy
        probe = self

        class TimedKCenterGreedy(base):
            def sample_coreset(self):
                probe.n_input = int(self.embedding.shape[0])
                fit, transform = self.model.fit, self.model.transform

                def timed(fn):
                    def inner(*a, **k):
                        t0 = time.perf_counter()
                        out = fn(*a, **k)
                        probe.projection_seconds += time.perf_counter() - t0
                        return out

                    return inner

                self.model.fit, self.model.transform = timed(fit), timed(transform)
                t0 = time.perf_counter()
                out = super().sample_coreset()
                probe.seconds += time.perf_counter() - t0
                probe.projection_dim = int(getattr(self.model, "n_components", -1))
                return out

        pc.KCenterGreedy = TimedKCenterGreedy


class Capture:
    """Collect per-batch intermediate outputs without extra computation."""

    def __init__(self, enabled: bool = True):
        self.parts = []
        self.enabled = enabled

    def add(self, t):
        if self.enabled:
            self.parts.append(t.detach().float().cpu())

    def array(self):
        return torch.cat(self.parts).numpy() if self.parts else None


# ----------------------------------------------------------------------------- image mode
def run_images(args, res: dict) -> dict:
    seed_everything(args.seed)
    train = load_images(args.train)
    test = load_images(args.test)
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(
            f"train images {train.shape[1:]} and test images {test.shape[1:]} differ in size"
        )
    H, W = train.shape[1:3]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    import_models()
    # Construction only (timm's network, random init); sklearn_memad builds its backbone inside
    # fit, so run.py adds this to anomalib's fit time for the like-for-like "whole fit".
    t0 = time.perf_counter()
    model = build_model(args)
    res["model_build_seconds"] = time.perf_counter() - t0
    notes = res["notes"]
    if args.model == "dfkde" and len(args.layers) > 1:
        dfkde_channel_concat(model)
        notes.append(
            "dfkde: pooled layers concatenated along channels (peer fix); anomalib 2.7 "
            "DfkdeModel.get_features uses torch.cat(dim=0), which fails for layers of different "
            "widths"
        )
    probe = CoresetProbe() if args.model == "patchcore" else None
    backbone_timer = Timer(model.feature_extractor)

    # maps are only kept when they are to be saved, so scoring memory is not inflated by them
    keep = bool(args.save_scores)
    patch_maps, anomaly_maps, loglik = Capture(keep), Capture(keep), Capture()
    if args.model == "padim":
        gen = model.anomaly_map_generator
        orig = gen.compute_distance

        def compute_distance(embedding, stats):
            d = orig(embedding, stats)
            patch_maps.add(d[:, 0])
            return d

        gen.compute_distance = compute_distance
    elif args.model == "patchcore":
        model.anomaly_map_generator.register_forward_pre_hook(
            lambda m, a: patch_maps.add(a[0][:, 0])
        )
    else:
        clf = model.classifier
        orig_prob = clf.compute_probabilities
        clf.compute_probabilities = lambda scores: (loglik.add(scores), orig_prob(scores))[1]

    res["rss_baseline_bytes"] = _status_bytes("VmRSS")
    # --- fit: training_step over all batches (model in train mode collects embeddings), then fit()
    with Phase() as fit_phase:
        model.train()
        t0 = time.perf_counter()
        for sl in batches(len(train), args.batch_size):
            model(to_tensor(train[sl], mean, std))
        res["fit_feature_seconds"] = time.perf_counter() - t0
        res["fit_backbone_only_seconds"] = backbone_timer.seconds
        if args.model == "patchcore":
            res["n_train_patches"] = int(sum(e.shape[0] for e in model.embedding_store))
            res["embedding_dim"] = int(model.embedding_store[0].shape[1])
        elif args.model == "padim":
            e0 = model.memory_bank[0]
            res["grid_shape"] = [int(e0.shape[2]), int(e0.shape[3])]
            res["embedding_dim"] = int(e0.shape[1])
            res["n_train_patches"] = int(
                sum(e.shape[0] for e in model.memory_bank) * e0.shape[2] * e0.shape[3]
            )
        else:
            res["n_train_patches"] = int(
                sum(e.shape[0] for e in model.memory_bank)
            )  # one vector per image
            res["embedding_dim"] = int(model.memory_bank[0].shape[1])
        t0 = time.perf_counter()
        if args.model == "patchcore":
            model.subsample_embedding(args.coreset_ratio)
        else:
            model.fit()
        res["fit_memory_seconds"] = time.perf_counter() - t0
    res["fit_seconds"] = fit_phase.seconds
    res["peak_rss_fit_bytes"] = fit_phase.peak_rss
    res["rss_after_fit_bytes"] = fit_phase.rss_end
    if probe is not None:
        res["coreset_seconds"] = probe.seconds
        res["coreset_projection_seconds"] = probe.projection_seconds
        res["coreset_projection_dim"] = probe.projection_dim
        res["n_coreset"] = int(model.memory_bank.shape[0])
        res["grid_shape"] = None  # filled from the score pass

    table = tensor_table(model)
    res["memory_tensors"] = table
    res["memory_bytes"] = int(sum(v["bytes"] for v in table.values()))

    # --- score: validation_step over all batches (eval mode)
    model.eval()
    backbone_timer.seconds = 0.0
    scores = []
    with Phase() as score_phase:
        for sl in batches(len(test), args.batch_size):
            out = model(to_tensor(test[sl], mean, std))
            scores.append(out.pred_score.detach().reshape(-1).float())
            if out.anomaly_map is not None:
                anomaly_maps.add(out.anomaly_map[:, 0])
    res["score_seconds"] = score_phase.seconds
    res["score_backbone_seconds"] = backbone_timer.seconds
    # Timing-only passes (this machine's speed drifts by 10-30 % between runs): the scoring
    # time is the median pass, and run.py does the same on its side.
    passes = [score_phase.seconds]
    for capture in (patch_maps, anomaly_maps, loglik):
        capture.enabled = False  # the results are those of the first pass
    for _ in range(args.score_repeats - 1):
        t0 = time.perf_counter()
        for sl in batches(len(test), args.batch_size):
            model(to_tensor(test[sl], mean, std))
        passes.append(time.perf_counter() - t0)
    res["score_pass_seconds"] = passes
    res["score_ms_per_image"] = 1000.0 * float(np.median(passes)) / len(test)
    res["peak_rss_score_bytes"] = score_phase.peak_rss
    res["rss_fit_start_bytes"] = fit_phase.rss_start
    res["rss_score_start_bytes"] = score_phase.rss_start
    res["peak_rss_reset_ok"] = bool(fit_phase.hwm_reset and score_phase.hwm_reset)
    pm = patch_maps.array()
    if pm is not None:
        res["grid_shape"] = [int(pm.shape[1]), int(pm.shape[2])]
    elif args.model == "patchcore":
        stride = LAYER_STRIDE.get(args.layers[0], 8)
        res["grid_shape"] = [int(H) // stride, int(W) // stride]
    res.update(n_train=int(len(train)), n_test=int(len(test)), image_shape=[int(H), int(W)])

    image_scores = torch.cat(scores).numpy().astype(np.float64)
    return {
        "image_scores": image_scores,
        "patch_maps": pm,
        "anomaly_maps": anomaly_maps.array(),
        "log_likelihood": loglik.array(),
    }


# ----------------------------------------------------------------------------- features mode
def run_features(args, res: dict) -> dict:
    from anomalib.models.components import MultiVariateGaussian
    from anomalib.models.components.classification import KDEClassifier
    from anomalib.models.image.padim.anomaly_map import AnomalyMapGenerator as PadimMap
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    seed_everything(args.seed)
    train = load_features(args.train_features)
    test = load_features(args.test_features)
    n, h, w, d = train.shape
    if test.shape[-1] != d:
        raise ValueError(f"train features d={d} and test features d={test.shape[-1]} differ")
    if args.model in ("padim",) and test.shape[1:3] != (h, w):
        raise ValueError(
            f"padim needs the same grid for train {train.shape[1:3]} and test {test.shape[1:3]}"
        )
    map_size = (
        tuple(args.map_size)
        if args.map_size
        else (h * LAYER_STRIDE.get(args.layers[0], 8), w * LAYER_STRIDE.get(args.layers[0], 8))
    )
    res.update(
        n_train=int(n),
        n_test=int(len(test)),
        grid_shape=[int(h), int(w)],
        embedding_dim=int(d),
        map_size=list(map_size),
    )
    notes = res["notes"]

    def nchw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()

    out = {"patch_maps": None, "anomaly_maps": None, "log_likelihood": None}
    probe = CoresetProbe() if args.model == "patchcore" else None
    if args.model == "padim":
        gaussian, gen = MultiVariateGaussian(), PadimMap()
        res["rss_baseline_bytes"] = _status_bytes("VmRSS")
        with Phase() as fit_phase:
            # PadimModel.fit(): torch.vstack(memory_bank) then gaussian.fit -- the whole grid at
            # once
            gaussian.fit(torch.vstack([nchw(train[sl]) for sl in batches(n, args.batch_size)]))
        res["n_train_patches"] = int(n * h * w)
        table = {k: v for k, v in tensor_table(gaussian).items()}
        patch, amap, img = [], [], []
        with Phase() as score_phase:
            for sl in batches(len(test), args.batch_size):
                emb = nchw(test[sl])
                dist = gen.compute_distance(emb, [gaussian.mean, gaussian.inv_covariance])
                a = gen.smooth_anomaly_map(gen.up_sample(dist, map_size))
                patch.append(dist[:, 0])
                amap.append(a[:, 0])
                img.append(torch.amax(a, dim=(-2, -1)).reshape(-1))
        out.update(
            patch_maps=torch.cat(patch).numpy(),
            anomaly_maps=torch.cat(amap).numpy(),
            image_scores=torch.cat(img).numpy(),
        )
        notes.append(
            "features mode padim: all d channels used (no random channel pick); image score = "
            "max of the "
            "bilinear-upsampled, sigma-4 blurred map at map_size, as PadimModel.forward does"
        )
    elif args.model == "patchcore":
        model = PatchcoreModel(
            layers=list(args.layers),
            backbone=args.backbone,
            pre_trained=False,
            num_neighbors=args.n_neighbors,
        )
        del model.feature_extractor  # not used in this mode
        res["rss_baseline_bytes"] = _status_bytes("VmRSS")
        with Phase() as fit_phase:
            model.train()
            for sl in batches(n, args.batch_size):
                emb = nchw(train[sl])
                if args.pool:
                    emb = model.feature_pooler(emb)
                model.embedding_store.append(model.reshape_embedding(emb))
            res["n_train_patches"] = int(sum(e.shape[0] for e in model.embedding_store))
            model.subsample_embedding(args.coreset_ratio)
        res["coreset_seconds"] = probe.seconds
        res["coreset_projection_seconds"] = probe.projection_seconds
        res["coreset_projection_dim"] = probe.projection_dim
        res["n_coreset"] = int(model.memory_bank.shape[0])
        table = tensor_table(model)
        model.eval()
        patch, amap, img = [], [], []
        with Phase() as score_phase:
            for sl in batches(len(test), args.batch_size):
                emb = nchw(test[sl])
                if args.pool:
                    emb = model.feature_pooler(emb)
                b, _, gh, gw = emb.shape
                flat = model.reshape_embedding(emb)
                # the post-backbone half of PatchcoreModel.forward, verbatim
                ps, loc = model.nearest_neighbors(embedding=flat, n_neighbors=1)
                ps, loc = ps.reshape((b, -1)), loc.reshape((b, -1))
                img.append(model.compute_anomaly_score(ps, loc, flat))
                ps = ps.reshape((b, 1, gh, gw))
                patch.append(ps[:, 0])
                amap.append(model.anomaly_map_generator(ps, map_size)[:, 0])
        out.update(
            patch_maps=torch.cat(patch).numpy(),
            anomaly_maps=torch.cat(amap).numpy(),
            image_scores=torch.cat(img).numpy(),
        )
        notes.append(
            "features mode patchcore: grids fed as given"
            + (
                " after anomalib's AvgPool2d(3,1,1)"
                if args.pool
                else " (no 3x3 pooling; pass --pool for anomalib's)"
            )
        )
    else:
        clf = KDEClassifier(
            n_pca_components=args.n_pca_components, max_training_points=args.max_training_points
        )
        res["rss_baseline_bytes"] = _status_bytes("VmRSS")
        with Phase() as fit_phase:
            # DfkdeModel.get_features: adaptive_avg_pool2d(1) per image -> one d-vector per image
            vecs = torch.from_numpy(train.mean(axis=(1, 2)))
            res["n_train_patches"] = int(vecs.shape[0])
            clf.fit(vecs)
        table = tensor_table(clf)
        cap = Capture()
        orig_prob = clf.compute_probabilities
        clf.compute_probabilities = lambda scores: (cap.add(scores), orig_prob(scores))[1]
        img = []
        with Phase() as score_phase:
            for sl in batches(len(test), args.batch_size):
                img.append(clf(torch.from_numpy(test[sl].mean(axis=(1, 2)))))
        out.update(image_scores=torch.cat(img).numpy(), log_likelihood=cap.array())
        notes.append(
            "features mode dfkde: grids averaged over (h, w) per image (anomalib's DFKDE is "
            "image-level, no maps)"
        )

    res["fit_feature_seconds"] = 0.0
    res["fit_memory_seconds"] = fit_phase.seconds
    res["fit_seconds"] = fit_phase.seconds
    res["peak_rss_fit_bytes"] = fit_phase.peak_rss
    res["rss_after_fit_bytes"] = fit_phase.rss_end
    res["score_seconds"] = score_phase.seconds
    res["score_ms_per_image"] = 1000.0 * score_phase.seconds / len(test)
    res["score_backbone_seconds"] = 0.0
    res["peak_rss_score_bytes"] = score_phase.peak_rss
    res["rss_fit_start_bytes"] = fit_phase.rss_start
    res["rss_score_start_bytes"] = score_phase.rss_start
    res["peak_rss_reset_ok"] = bool(fit_phase.hwm_reset and score_phase.hwm_reset)
    res["memory_tensors"] = table
    res["memory_bytes"] = int(sum(v["bytes"] for v in table.values()))
    out["image_scores"] = np.asarray(out["image_scores"], dtype=np.float64)
    return out


# ----------------------------------------------------------------------------- main
def parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "y"):
        return True
    if s.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, choices=("padim", "patchcore", "dfkde"))
    p.add_argument("--train", help="uint8 images (n, H, W, 3) .npy, already at the benchmark size")
    p.add_argument("--test", help="uint8 images (n, H, W, 3) .npy")
    p.add_argument(
        "--train-features", help="float32 grids (n, h, w, d) .npy: features mode, no backbone"
    )
    p.add_argument("--test-features", help="float32 grids (n, h, w, d) .npy")
    p.add_argument(
        "--test-labels",
        help="optional .npy of test labels (+1 normal, -1 anomaly; or 0/1 with 1 = anomaly) "
        "for image AUROC",
    )
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--layers", nargs="+", default=["layer2", "layer3"])
    p.add_argument(
        "--pretrained",
        type=parse_bool,
        default=False,
        help="timm weights (cannot be downloaded here)",
    )
    p.add_argument("--coreset-ratio", type=float, default=0.01)
    p.add_argument(
        "--n-neighbors",
        type=int,
        default=9,
        help="PatchCore num_neighbors (support set of the re-weighting)",
    )
    p.add_argument(
        "--n-features",
        type=int,
        default=None,
        help="PaDiM random channel pick (anomalib default: 100 for resnet18)",
    )
    p.add_argument("--n-pca-components", type=int, default=16, help="DFKDE")
    p.add_argument("--max-training-points", type=int, default=40000, help="DFKDE")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--score-repeats",
        type=int,
        default=3,
        help="scoring passes timed (median); the first also gives the results",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pool",
        action="store_true",
        help="features mode, patchcore: apply anomalib's AvgPool2d(3, 1, 1) first",
    )
    p.add_argument(
        "--map-size",
        type=int,
        nargs=2,
        default=None,
        help="features mode: anomaly-map size (default: grid * stride of the first layer)",
    )
    p.add_argument(
        "--no-trim",
        action="store_true",
        help="do not call glibc malloc_trim(0) before the fit and score phases",
    )
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument(
        "--save-scores",
        help=".npz with image_scores, patch_maps, anomaly_maps (and DFKDE log_likelihood)",
    )
    args = p.parse_args(argv)
    # process-wide settings only when run as the peer (run.py imports Phase from this module)
    warnings.filterwarnings("ignore")

    features_mode = bool(args.train_features or args.test_features)
    if features_mode and not (args.train_features and args.test_features):
        p.error("features mode needs both --train-features and --test-features")
    if not features_mode and not (args.train and args.test):
        p.error("give --train and --test (images) or --train-features and --test-features")
    if args.threads:
        torch.set_num_threads(args.threads)
    global TRIM
    TRIM = not args.no_trim

    import anomalib
    import timm

    res = {
        "peer": "anomalib",
        "anomalib_version": anomalib.__version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "model": args.model,
        "mode": "features" if features_mode else "images",
        "config": {
            "backbone": args.backbone,
            "layers": list(args.layers),
            "pretrained": args.pretrained,
            "coreset_ratio": args.coreset_ratio,
            "n_neighbors": args.n_neighbors,
            "n_features": args.n_features,
            "n_pca_components": args.n_pca_components,
            "max_training_points": args.max_training_points,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "pool": args.pool,
            "train": args.train_features if features_mode else args.train,
            "test": args.test_features if features_mode else args.test,
        },
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": "cpu",
        "loadavg_start": list(os.getloadavg()),
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("MALLOC_", "OMP_", "MKL_", "OPENBLAS_"))
        },
        "rss_after_import_bytes": _status_bytes("VmRSS"),
        "notes": [],
    }
    with torch.no_grad():
        out = run_features(args, res) if features_mode else run_images(args, res)
    if args.model == "patchcore" and res.get("n_coreset") is not None:
        res["coreset_fraction"] = res["n_coreset"] / max(res["n_train_patches"], 1)
    res["loadavg_end"] = list(os.getloadavg())
    for phase in ("fit", "score"):  # growth of each phase over the RSS it started from
        res[f"peak_rss_{phase}_delta_bytes"] = (
            res[f"peak_rss_{phase}_bytes"] - res[f"rss_{phase}_start_bytes"]
        )
    res["malloc_trim_between_phases"] = TRIM
    res["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res["peak_rss_method"] = (
        "VmHWM from /proc/self/status, reset via /proc/self/clear_refs=5 at the start of fit "
        "and of score"
    )
    res["image_score_direction"] = "higher = more abnormal" + (
        " (probability 1/(1+exp(0.05*(loglik-12))))" if args.model == "dfkde" else ""
    )

    if args.test_labels:
        from sklearn.metrics import roc_auc_score

        y = np.load(args.test_labels).reshape(-1)
        y_anom = (y == -1) if (y == -1).any() else (y == 1)

        def auroc(
            s,
        ):  # -inf / +inf are legal ranks here (DFKDE's log-likelihood underflows to -inf)
            s = np.nan_to_num(
                np.asarray(s, dtype=np.float64),
                posinf=np.finfo(np.float64).max,
                neginf=np.finfo(np.float64).min,
            )
            return (
                float(roc_auc_score(y_anom.astype(int), s))
                if 0 < y_anom.sum() < len(y_anom)
                else None
            )

        res["image_auroc"] = auroc(out["image_scores"])
        if out.get("log_likelihood") is not None:
            ll = out["log_likelihood"]
            res["image_auroc_loglik"] = auroc(-ll)

    if out.get("log_likelihood") is not None:
        ll = np.asarray(out["log_likelihood"])
        res["n_test_loglik_neg_inf"] = int(np.isneginf(ll).sum())
        res["n_test_score_saturated"] = int((np.asarray(out["image_scores"]) >= 1.0).sum())

    if args.save_scores:
        arrays = {k: np.asarray(v) for k, v in out.items() if v is not None}
        np.savez_compressed(args.save_scores, **arrays)
        res["saved_scores"] = {k: list(v.shape) for k, v in arrays.items()}

    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, sort_keys=False)
    summary = {
        k: res.get(k)
        for k in (
            "model",
            "mode",
            "fit_feature_seconds",
            "fit_memory_seconds",
            "coreset_seconds",
            "fit_seconds",
            "score_seconds",
            "score_ms_per_image",
            "score_backbone_seconds",
            "peak_rss_fit_bytes",
            "peak_rss_score_bytes",
            "memory_bytes",
            "n_train_patches",
            "n_coreset",
            "image_auroc",
        )
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
