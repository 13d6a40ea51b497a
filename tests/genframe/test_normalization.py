"""calibrate_batch_norm: running statistics measured exactly on given inputs, along the sampling path."""

import copy

import pytest
import torch
from torch import nn

from genframe import calibrate_batch_norm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_statistics_are_the_average_of_the_batches_statistics():
    net = _net().train()
    inputs = torch.randn(4, 50, 3, generator=torch.Generator().manual_seed(1)) * 3 + 1
    assert calibrate_batch_norm(net, inputs) == 1
    with torch.no_grad():
        features = net[0](inputs)  # 4 batches x 50 rows x 4 features entering the batch norm
    torch.testing.assert_close(net[1].running_mean, features.mean(dim=(0, 1)))
    torch.testing.assert_close(net[1].running_var, features.var(dim=1).mean(0))  # unbiased, per batch
    assert int(net[1].num_batches_tracked) == 4


def test_modes_and_momentum_are_restored():
    net = _net()
    net.train()
    net[3].eval()  # a mixed state survives too
    calibrate_batch_norm(net, [torch.randn(8, 3)])
    assert [m.training for m in net] == [True, True, True, False]
    assert net[1].momentum == 0.1
    net.eval()
    calibrate_batch_norm(net, [torch.randn(8, 3)])
    assert not any(m.training for m in net.modules())


class _TwoPaths(nn.Module):
    """Training runs ``live``, evaluation ``average``, as an EMA generator does."""

    def __init__(self) -> None:
        super().__init__()
        self.live, self.average = _net(), _net()

    def forward(self, x):
        return (self.live if self.training else self.average)(x)


def test_only_the_evaluation_path_is_measured():
    model = _TwoPaths().train()
    model.live[1].running_mean.fill_(7.0)
    live_before = copy.deepcopy(model.live.state_dict())
    inputs = [torch.randn(64, 3, generator=torch.Generator().manual_seed(2))]
    assert calibrate_batch_norm(model, inputs) == 1
    for key, value in model.live.state_dict().items():  # untouched, though it was reset along the way
        assert torch.equal(value, live_before[key]), key
    with torch.no_grad():
        expected = model.average[0](inputs[0]).mean(0)
    torch.testing.assert_close(model.average[1].running_mean, expected)
    assert model.training


def test_a_model_without_batch_norm_is_left_alone():
    net = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    before = copy.deepcopy(net.state_dict())
    assert calibrate_batch_norm(net, [torch.randn(5, 3)]) == 0
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_failing_forward_restores_statistics_modes_and_momentum():
    net = _net().train()
    net[1].running_mean.fill_(3.0)
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(RuntimeError):
        calibrate_batch_norm(net, [torch.randn(5, 3), torch.randn(5, 7)])  # the second has the wrong width
    assert net.training and net[1].momentum == 0.1
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
