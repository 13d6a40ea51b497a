"""Flow-matching and diffusion models as sampler-chain links: a latent mapper (noise -> codes, GLANN's
second stage as in latent diffusion) and a generator (noise of the image's shape -> image).

Each is a time-conditioned network, a probability path and a solver, all named in the spec, so
flow versus diffusion, Euler versus Heun and the number of steps are one line each. Sampling
integrates the path's velocity from noise (t = 0) to data (t = 1); with a class-conditional
network, ``guidance`` mixes conditional and unconditional outputs (classifier-free guidance, Ho &
Salimans 2022).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

import torch

from genframe import (BuildContext, GenframeError, Generator, LatentMapper, ProbabilityPath, Solver, TimeNetwork,
                      component, hookimpl, param)
from genframe_plugins.networks.ema import average_into

#: Updates over which the weight average's decay warms up: min(average, (1 + n) / (WARMUP + n)) after
#: n updates, so that the average does not keep the initial weights for thousands of steps.
WARMUP = 10


class _Field:
    """A network on its path, as solvers see it: the velocity dx/dt, and the denoised estimate."""

    def __init__(self, output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], path: ProbabilityPath,
                 clip: bool):
        self._output, self._path, self._clip = output, path, clip

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._path.velocity(self._output(x, t), x, t)

    def denoised(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        denoised = self._path.denoised(self._output(x, t), x, t)
        return denoised.clamp(-1.0, 1.0) if self._clip else denoised


class _Flow:
    """What both flows share: integrating the path with the solver."""

    network: TimeNetwork
    path: ProbabilityPath
    solver: Solver
    guidance: float
    average: float | None
    clip_denoised = False  # a generator's images lie in [-1, 1]; codes have no such range

    def __attrs_post_init__(self) -> None:
        self.averaged: torch.nn.Module | None = None  # made by setup when ``average`` is set

    def _setup_average(self) -> None:
        """An exponential moving average of the network's weights, which sampling uses when set:
        flow and diffusion samples are much better from averaged weights (Karras et al. 2024)."""
        self.averaged = None
        if self.average is not None:
            self.averaged = copy.deepcopy(self.network).requires_grad_(False)

    @torch.no_grad()
    def update_average(self, step: int) -> None:
        """After optimiser step ``step`` (from 0): averaged <- d averaged + (1 - d) network, in place,
        with the decay d = min(average, (1 + step) / (WARMUP + step))."""
        if self.averaged is not None:
            decay = min(self.average, (1.0 + step) / (WARMUP + step))
            average_into(self.averaged, self.network, 1.0 - decay)

    def integrate(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        times = self.path.sampling_times(self.solver.steps, noise.device)
        guided = labels is not None and self.guidance != 1.0
        network = self.averaged if self.averaged is not None and not self.training else self.network
        if guided:  # one batched pass for the conditional and the unconditional ("no class") outputs
            both_labels = torch.cat([labels, torch.full_like(labels, network.num_classes)])

        def output(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            inputs, feature = self.path.network_input(x, t)
            if not guided:
                return network(inputs, feature, labels)
            conditional, free = network(torch.cat([inputs, inputs]), feature, both_labels).chunk(2)
            return free + self.guidance * (conditional - free)

        field = _Field(output, self.path, self.clip_denoised)
        return self.solver.solve(field, self.path.start(noise), times, self.path)

    def sampling_protocol(self) -> dict:
        return {"path": self.path.config(), "solver": self.solver.config(), "evaluations": self.evaluations(),
                "guidance": self.guidance, "average": self.average}

    def evaluations(self) -> int:
        """NFE per sample; solvers written for API 1.3 and before count without the path."""
        takes_path = len(inspect.signature(self.solver.evaluations).parameters) > 0
        return self.solver.evaluations(self.path) if takes_path else self.solver.evaluations()


def _guidance_param():
    return param(1.0, ge=0, help="classifier-free guidance scale w: output = uncond + w (cond - uncond); "
                                 "1 uses the conditional output alone")


def _average_param():
    return param(None, ge=0, lt=1, help="decay of an exponential moving average of the network's weights, "
                                        "which sampling uses (e.g. 0.999); null samples the trained weights")


@component("latent_mapper", "flow_mapper")
class FlowMapper(_Flow, LatentMapper):
    """A flow or diffusion model of codes: noise of the codes' size -> codes (GLANN with a flow instead of IMLE)."""

    dim: int = param(64, ge=1, help="size of the codes, and of the noise it starts from")
    network: TimeNetwork = param(factory=lambda: {"type": "time_mlp"}, help="the time-conditioned network")
    path: ProbabilityPath = param(factory=lambda: {"type": "linear"}, help="flow matching or diffusion")
    solver: Solver = param(factory=lambda: {"type": "heun"}, help="how samples are integrated")
    guidance: float = _guidance_param()
    average: float | None = _average_param()
    standardize: bool = param(
        True, help="fit the flow to the codes shifted and scaled to zero mean and unit variance per dimension "
                   "(fitted when its stage starts, as latent diffusion rescales its latents); sampling undoes it. "
                   "Codes on GLO's unit sphere vary by 1/sqrt(dim) per dimension, far less than the noise")

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.standardize:  # buffers, so that checkpoints hold them and sampling needs no codes
            self.register_buffer("code_mean", torch.zeros(self.dim))
            self.register_buffer("code_std", torch.ones(self.dim))

    @property
    def in_dim(self) -> int:
        return self.dim

    @property
    def out_dim(self) -> int:
        return self.dim

    def setup(self, ctx: BuildContext) -> None:
        wanted = getattr(self.network, "dim", self.dim)
        if wanted is None:
            self.network.dim = self.dim
        elif wanted != self.dim:
            raise GenframeError(f"flow_mapper: network.dim is {wanted} but the mapper's dim is {self.dim}; "
                                "leave network.dim out to take the mapper's")
        self.network.setup(ctx)
        self._setup_average()

    @torch.no_grad()
    def fit_codes(self, codes: torch.Tensor) -> None:
        """Take the mean and standard deviation of the codes the flow will be fitted to (N x dim)."""
        if self.standardize:
            self.code_mean.copy_(codes.mean(0))
            self.code_std.copy_(codes.std(0).clamp(min=1e-6))

    def to_flow(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes as the flow models them: standardized when ``standardize`` is set."""
        return (codes - self.code_mean) / self.code_std if self.standardize else codes

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        # differentiable (through every solver step), so latent searches (reconstruct, restore) work;
        # sampling runs under no_grad
        x = self.integrate(noise)
        return x * self.code_std + self.code_mean if self.standardize else x


@component("generator", "flow")
class FlowGenerator(_Flow, Generator):
    """A flow or diffusion model of images: standard normal noise of the image's size -> image in [-1, 1].

    Its prior is a Gaussian of dim channels x image_size^2: leave the prior's dim out (null) and the
    sampler chain sizes it, so that another data set is one spec line.
    """

    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    network: TimeNetwork = param(factory=lambda: {"type": "unet"}, help="the time-conditioned network")
    path: ProbabilityPath = param(factory=lambda: {"type": "linear"}, help="flow matching or diffusion")
    solver: Solver = param(factory=lambda: {"type": "heun"}, help="how samples are integrated")
    guidance: float = _guidance_param()
    average: float | None = _average_param()
    clip_denoised: bool = param(
        True, help="clamp the denoised estimate to [-1, 1], the images' range, at every solver step (as DDPM "
                   "samples): the exact one lies there, so only a network's errors are cut; false integrates the "
                   "model as it is")

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.shape: tuple[int, int, int] | None = None  # (C, H, W) of the images, once known
        if self.channels is not None and self.image_size is not None:
            self.shape = (self.channels, self.image_size, self.image_size)

    @property
    def latent_dim(self) -> int | None:
        """C x H x W; None until setup when the image shape is the data's."""
        return None if self.shape is None else self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def num_classes(self) -> int | None:
        return self.network.num_classes

    def setup(self, ctx: BuildContext) -> None:
        size = ctx.image_size if self.image_size is None else self.image_size
        self.shape = (ctx.channels if self.channels is None else self.channels, size, size)
        for name, value in (("channels", self.shape[0]), ("image_size", size)):
            wanted = getattr(self.network, name, value)
            if wanted is None:
                setattr(self.network, name, value)
            elif wanted != value:
                raise GenframeError(f"flow: network.{name} is {wanted} but the generator's images have {value}; "
                                    f"leave network.{name} out to take the generator's")
        self.network.setup(ctx)
        self._setup_average()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        noise = z.reshape(-1, *self.shape)
        return self.integrate(noise, labels).clamp(-1.0, 1.0)


@hookimpl
def genframe_components():
    return [FlowMapper, FlowGenerator]
