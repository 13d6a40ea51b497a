"""Flow and diffusion models sample through their path and solver: with the exact network for
Gaussian data, every path and solver produces that Gaussian; guidance mixes the outputs as written."""

from __future__ import annotations

import pytest
import torch

import genframe
from genframe_plugins.networks.flows import FlowGenerator, FlowMapper
from genframe_plugins.networks.solvers import DPMSolverPP, Euler, Heun, Stochastic
from genframe_plugins.networks.time_mlp import TimeMLP
from genframe_plugins.objectives.paths import EDM, Linear, VPCosine

MEAN, SPREAD = torch.tensor([0.6, -0.3, 0.2, 0.9]), 0.5  # data ~ N(MEAN, SPREAD^2 I)


class Oracle(genframe.TimeNetwork):
    """The exact network for Gaussian data: the expected target given x_t, in closed form.

    With x_t = a x1 + s x0, E[x1 | x_t] and E[x0 | x_t] are linear in x_t, and every path's target is
    linear in (x1, x0), so the best network outputs the target of those expectations."""

    def __init__(self, path):
        torch.nn.Module.__init__(self)
        self.path = path

    def forward(self, x, t, labels=None):
        # invert network_input: for EDM the input is c_in x and the feature log(sigma) / 4
        if isinstance(self.path, EDM):
            sigma = (4 * t).exp()
            x = x * (sigma ** 2 + self.path._scale() ** 2).sqrt()
            t = (sigma ** (1 / self.path.rho) - self.path._ends()[0]) / (self.path._ends()[1] - self.path._ends()[0])
        a, s = self.path.scales(t)
        variance = a ** 2 * SPREAD ** 2 + s ** 2
        data = MEAN + a * SPREAD ** 2 / variance * (x - a * MEAN)
        noise = s / variance * (x - a * MEAN)
        return self.path.target(data, noise, x, t)


@pytest.mark.parametrize("path", [Linear(), VPCosine(), EDM(sigma_data=0.5)], ids=["linear", "vp_cosine", "edm"])
@pytest.mark.parametrize("solver", [Euler, Heun, Stochastic, DPMSolverPP],
                         ids=["euler", "heun", "stochastic", "dpm_solver_pp"])
def test_the_exact_network_carries_noise_to_the_data(path, solver):
    """Through the flow, the network's preconditioning included (the solvers' own accuracy at few
    steps is tested in test_solvers), at steps where every solver is within 4% of the spread: the
    stochastic one adds noise back at every level and needs more (5% wide at 32 steps, 1% at 128)."""
    solver = solver(steps={Euler: 128, Heun: 32, Stochastic: 128, DPMSolverPP: 64}[solver])
    flow = FlowMapper(dim=4, network={"type": "time_mlp"}, path=path, solver=solver)
    flow.network = Oracle(path)
    torch.manual_seed(0)
    samples = flow(torch.randn(20_000, 4))
    torch.testing.assert_close(samples.mean(0), MEAN, atol=0.02, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.full((4,), SPREAD), atol=0.02, rtol=0)


def test_guidance_extrapolates_from_the_unconditional_output():
    seen = []

    class Labelled(genframe.TimeNetwork):
        num_classes = 3

        def __init__(self):
            torch.nn.Module.__init__(self)

        def forward(self, x, t, labels=None):
            seen.append(labels.clone())
            return torch.where((labels == 3).view(-1, 1, 1, 1), torch.zeros_like(x), torch.ones_like(x))

    flow = FlowGenerator(channels=1, image_size=2, network={"type": "time_mlp"}, path=Linear(),
                         solver=Euler(steps=1), guidance=3.0)
    flow.network = Labelled()
    out = flow(torch.zeros(2, 4), torch.tensor([0, 2]))
    # one batched call with the labels, then "no class" (3); velocity = 0 + 3 (1 - 0) over t in [0, 1]
    assert seen[0].tolist() == [0, 2, 3, 3]
    torch.testing.assert_close(out, torch.ones(2, 1, 2, 2))  # 3, clamped to the image range


def test_the_time_mlp_starts_at_zero_and_depends_on_time():
    net = TimeMLP(dim=4, hidden=16, layers=2)
    net.setup(genframe.BuildContext(num_examples=1, channels=1, image_size=1, device=torch.device("cpu")))
    x = torch.randn(3, 4)
    assert net(x, torch.rand(3)).abs().max() == 0  # an untrained flow leaves its noise where it is
    torch.nn.init.normal_(net.out.weight)
    assert not torch.allclose(net(x, torch.zeros(3)), net(x, torch.ones(3)))
