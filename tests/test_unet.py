"""The ConvNeXt U-Net: shapes, conditioning inputs and clear errors."""

import math

import pytest
import torch

from depthdif.models.unet import (
    ConvNeXtUNet,
    NetworkConfigError,
    coords_to_unit_sphere,
    date_to_day_of_year,
    sinusoidal_embedding,
)


def _net(**kwargs) -> ConvNeXtUNet:
    torch.manual_seed(0)
    defaults = {"in_channels": 6, "out_channels": 2, "dim": 8, "dim_mults": (1, 2, 2)}
    net = ConvNeXtUNet(**{**defaults, **kwargs})
    # the output conv and the FiLM layers are zero at init (prediction = mean, no conditioning);
    # give them weights so that outputs can differ
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    for block in net.modules():
        if hasattr(block, "film"):
            torch.nn.init.normal_(block.film[-1].weight, std=0.1)
    return net


@pytest.mark.parametrize("dim_mults", [(1,), (1, 2), (1, 2, 2, 4)])
def test_output_shape_matches_target_bands(dim_mults):
    net = _net(dim_mults=dim_mults)
    out = net(torch.randn(3, 6, 16, 24), torch.tensor([0, 10, 999]))
    assert out.shape == (3, 2, 16, 24)


def test_zero_initialised_output_predicts_the_mean():
    net = ConvNeXtUNet(in_channels=4, out_channels=1, dim=8, dim_mults=(1, 2))
    out = net(torch.randn(2, 4, 8, 8), torch.tensor([5, 500]))
    assert torch.count_nonzero(out) == 0


def test_timestep_changes_the_output():
    net = _net()
    x = torch.randn(1, 6, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([10])), net(x, torch.tensor([900])))


def test_film_inputs_change_the_output():
    net = _net(coords_features=3, doy_features=2)
    x, t = torch.randn(1, 6, 16, 16), torch.tensor([100])
    coords_a, coords_b = torch.tensor([[0.1, 0.2, 0.97]]), torch.tensor([[0.9, 0.1, 0.4]])
    doy = torch.tensor([[0.0, 1.0]])
    assert not torch.allclose(net(x, t, coords_a, doy), net(x, t, coords_b, doy))
    assert not torch.allclose(net(x, t, coords_a, doy), net(x, t, coords_a, torch.tensor([[1.0, 0.0]])))


def test_missing_conditioning_is_a_clear_error():
    net = _net(coords_features=3)
    with pytest.raises(NetworkConfigError, match="coords"):
        net(torch.randn(1, 6, 16, 16), torch.tensor([1]))


def test_patch_size_not_divisible_names_the_keys():
    net = _net(dim_mults=(1, 2, 2))
    with pytest.raises(NetworkConfigError, match="patch_size"):
        net(torch.randn(1, 6, 18, 16), torch.tensor([1]))


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(NetworkConfigError, match="input channels"):
        _net()(torch.randn(1, 5, 16, 16), torch.tensor([1]))


def test_sinusoidal_embedding_separates_timesteps():
    emb = sinusoidal_embedding(torch.tensor([0, 1, 500, 999]), 16)
    assert emb.shape == (4, 16)
    distances = torch.cdist(emb, emb)
    assert (distances + torch.eye(4) * 10).min() > 0.1
    assert sinusoidal_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_unit_sphere_encoding():
    xyz = coords_to_unit_sphere(torch.tensor([[0.0, 0.0], [90.0, 45.0], [10.0, 180.0], [10.0, -180.0]]))
    assert torch.allclose(xyz.norm(dim=1), torch.ones(4), atol=1e-6)
    assert torch.allclose(xyz[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(xyz[1, 2], torch.tensor(1.0), atol=1e-6)
    assert torch.allclose(xyz[2], xyz[3], atol=1e-6)  # the date line is not a discontinuity


def test_day_of_year_phase():
    doy = date_to_day_of_year(torch.tensor([20100101, 20100702, 20121231]))
    assert torch.allclose(doy[0], torch.tensor([0.0, 1.0]), atol=1e-6)
    # 2 July is day 182, half a year after 1 January
    assert doy[1, 1] < -0.99
    phase_end = 2 * math.pi * 364 / 365.25
    assert torch.allclose(doy[2], torch.tensor([math.sin(phase_end), math.cos(phase_end)]), atol=1e-5)
