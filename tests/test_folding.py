"""Tests of folding eval-mode batch normalisations into convolutions."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_memad.features import FeatureTransformer
from sklearn_memad.features._backbones import build_backbone
from sklearn_memad.features._folding import fold_batch_norms


def _randomised_norms(model):
    # Fresh BatchNorm2d layers are the identity (mean 0, var 1, weight 1, bias 0), which would
    # make a wrong fold invisible; random statistics make every fold change the weights.
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.fixture(scope="module")
def resnet18():
    model, _, _ = build_backbone("resnet18", None, seed=0)
    return _randomised_norms(model)


def test_folded_resnet18_gives_the_same_output(resnet18):
    folded = copy.deepcopy(resnet18)
    assert fold_batch_norms(folded) == _count(resnet18, nn.BatchNorm2d) == 20
    assert _count(folded, nn.BatchNorm2d) == 0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = resnet18(x), folded(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_a_kept_convolution_keeps_its_own_output(resnet18):
    folded = copy.deepcopy(resnet18)
    n = fold_batch_norms(folded, keep=["layer1.0.conv1"])
    assert n == 19 and isinstance(folded.layer1[0].bn1, nn.BatchNorm2d)
    torch.testing.assert_close(folded.layer1[0].conv1.weight, resnet18.layer1[0].conv1.weight)


def test_requested_layers_are_unchanged_by_folding_or_later_in_place_ops():
    images = np.random.RandomState(0).randint(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    params = {"backbone": "resnet18", "weights": None, "image_size": None, "random_state": 0}
    # A convolution (its pre-normalisation output) and a normalisation (replaced by Identity).
    # layer2.0.bn2's output is later overwritten in place (``out += identity``), so it must be
    # recorded before that; layer3 makes the forward pass run on past it.
    layers = ("layer1.0.conv1", "layer2.0.bn2", "layer3")
    got = FeatureTransformer(layers=layers, **params).fit_transform(images)

    ft = FeatureTransformer(layers=layers, **params).fit(images)
    model, mean, std = build_backbone("resnet18", None, seed=ft.init_seed_)
    outputs = {}

    def record(module, args, out):
        outputs[names[module]] = out.clone()  # returns None: the forward pass is not altered

    names = {model.get_submodule(name): name for name in layers}
    for module in names:
        module.register_forward_hook(record)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        model(x)
    conv = outputs["layer1.0.conv1"].permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got[..., :64], conv, rtol=1e-4, atol=1e-5)
    norm = torch.nn.functional.interpolate(
        outputs["layer2.0.bn2"], size=conv.shape[1:3], mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(got[..., 64:192], norm.permute(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    assert got.shape[-1] == 64 + 128 + 256


class _SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.norm(self.conv(x)) + self.conv(x)


class _Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) * y


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow cannot be traced symbolically
            x = -x
        return self.norm(self.conv(x))


@pytest.mark.parametrize("kind", [_SharedConv, _Branching, _Untraceable])
def test_unsafe_or_untraceable_pairs_are_left_alone(kind):
    model = _randomised_norms(kind())
    before = copy.deepcopy(model)
    assert fold_batch_norms(model) == 0
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), before(x))


def test_a_model_in_training_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(model)
