"""The roles of a generative system: one abstract base class each, with the few methods the engine calls.

The engine and the trainers only talk to these interfaces, never to a concrete model. A concrete
component subclasses one role, declares its spec parameters as attrs fields and is registered with
``@component(role_name, type_name)``. Network roles are also ``torch.nn.Module``s: construction
stores the parameters, ``setup(ctx)`` builds the layers once the data's shape is known.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import torch
from torch import nn

if TYPE_CHECKING:
    from .context import BuildContext, StageContext


class Component(metaclass=abc.ABCMeta):
    """Base of every component. ``role``/``type_name`` are set by :func:`component`."""

    role: ClassVar[str] = ""
    type_name: ClassVar[str] = ""

    def setup(self, ctx: BuildContext) -> None:
        """Called once after the spec is built, with the data's shape; builds layers or tables."""

    def config(self) -> dict:
        """The spec parameters of this component (``type`` included), as plain YAML-able data."""
        return {"type": self.type_name,
                **{f.name: _plain(getattr(self, f.name)) for f in attrs.fields(type(self))}}


def _plain(value: Any) -> Any:
    if isinstance(value, Component):
        return value.config()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class ModuleComponent(Component, nn.Module):
    """A component with trainable weights; its ``state_dict`` goes into checkpoints."""

    def __attrs_pre_init__(self) -> None:
        nn.Module.__init__(self)

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in attrs.fields(type(self)))


ROLES: dict[str, type[Component]] = {}


def _role(name: str):
    def deco(cls: type[Component]) -> type[Component]:
        cls.role = name
        ROLES[name] = cls
        return cls
    return deco


def component(role: str, name: str):
    """Register-ready component class: applies attrs (fields = spec parameters) and names it.

    The class must subclass the base class of ``role``. Registration itself happens through the
    ``genframe_components`` hook, so that built-ins and third-party packages use one door.
    """
    def deco(cls: type) -> type:
        if role not in ROLES:
            raise TypeError(f"unknown role {role!r}; roles: {', '.join(sorted(ROLES))}")
        if not issubclass(cls, ROLES[role]):
            raise TypeError(f"{cls.__name__} must subclass {ROLES[role].__name__} to be a {role}")
        if "__attrs_attrs__" not in cls.__dict__:
            cls = attrs.define(cls, slots=False, eq=False, repr=not issubclass(cls, nn.Module),
                               kw_only=True, on_setattr=attrs.setters.NO_OP)
        attrs.resolve_types(cls)
        cls.role = role
        cls.type_name = name
        return cls
    return deco


def summary(cls: type) -> str:
    """First line of a component's docstring: what ``genframe plugins`` prints."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


# --------------------------------------------------------------------------- data


@_role("dataset")
class Dataset(Component):
    """A fixed set of training images, decoded once as uint8 (N, C, H, W)."""

    @abc.abstractmethod
    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (images uint8 N x C x H x W, labels int64 N or None)."""


# --------------------------------------------------------------------------- models


@_role("prior")
class Prior(Component):
    """A distribution to draw latent vectors from."""

    dim: int  # size of one sample (a spec parameter of every prior)

    @abc.abstractmethod
    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` samples on ``device``; ``generator`` (on that device) makes it reproducible."""


@_role("encoder")
class Encoder(ModuleComponent):
    """Maps training images (or their indices, for per-image code tables) to latent codes."""

    @abc.abstractmethod
    def encode(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Codes of a batch; ``indices`` are the batch's positions in the data set."""

    def after_update(self) -> None:
        """Called after each optimiser step (projections onto a constraint set go here)."""

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Codes of a whole data set (uint8 images are converted batch by batch)."""
        from .images import to_float

        chunks = []
        for start in range(0, images.shape[0], batch_size):
            idx = torch.arange(start, min(start + batch_size, images.shape[0]), device=images.device)
            chunks.append(self.encode(to_float(images[idx]), idx))
        return torch.cat(chunks)


@_role("generator")
class Generator(ModuleComponent):
    """Maps latent vectors to images in [-1, 1].

    A class-conditional generator sets ``num_classes`` and takes ``forward(z, labels)``.
    """

    latent_dim: int  # size of the latent vector it takes
    num_classes: int | None = None  # set by class-conditional generators

    @abc.abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        ...


@_role("critic")
class Critic(ModuleComponent):
    """Scores images: one real number per image (a discriminator, or a Wasserstein critic).

    A class-conditional critic sets ``num_classes`` and takes ``forward(x, labels)``.
    """

    num_classes: int | None = None  # set by class-conditional critics

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...


@_role("latent_mapper")
class LatentMapper(ModuleComponent):
    """Maps noise from a prior to the latent space of a generator (GLANN's IMLE mapper)."""

    in_dim: int  # size of the noise it takes
    out_dim: int  # size of the codes it produces

    @abc.abstractmethod
    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        ...


# --------------------------------------------------------------------------- losses


@_role("divergence")
class Divergence(Component):
    """An adversarial objective: critic and generator losses from the critic's scores."""

    @abc.abstractmethod
    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        ...


@_role("constraint")
class LipschitzConstraint(Component):
    """Keeps a critic (approximately) Lipschitz: a penalty, a weight projection, or a reparametrisation."""

    def apply(self, critic: Critic) -> None:
        """Called once before training (e.g. to add spectral normalisation)."""

    def penalty(self, critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        """Extra critic loss term for this batch, or None."""
        return None

    def after_critic_step(self, critic: Critic) -> None:
        """Called after each critic optimiser step (e.g. weight clipping)."""


@_role("reconstruction_loss")
class ReconstructionLoss(Component):
    """Distance between images in [-1, 1], averaged over the batch."""

    @abc.abstractmethod
    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ...


# --------------------------------------------------------------------------- training


@_role("schedule")
class Schedule(Component):
    """Learning-rate multiplier as a function of the epoch (fractional) and progress in [0, 1]."""

    @abc.abstractmethod
    def factor(self, epoch: float, progress: float) -> float:
        ...


@_role("optimizer")
class Optimizer(Component):
    """Builds a torch optimiser (and its learning-rate schedule) for a set of parameters."""

    @abc.abstractmethod
    def build(self, params: Any) -> torch.optim.Optimizer:
        ...


@_role("trainer")
class Trainer(Component):
    """A training procedure: the engine calls ``train_step`` and owns the loop around it.

    ``train_step`` must not synchronise with the host: it returns device tensors which the engine
    reads only at the logging interval. Everything needed to resume lives in ``state_dict``.
    """

    @abc.abstractmethod
    def bind(self, ctx: StageContext) -> None:
        """Resolve referenced components, build optimisers; called once per stage."""

    @abc.abstractmethod
    def total_steps(self) -> int:
        ...

    @abc.abstractmethod
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def previews(self) -> dict[str, torch.Tensor]:
        """Images worth looking at during this stage (e.g. reconstructions), in [-1, 1]."""
        return {}

    def scale_learning_rates(self, factor: float) -> None:
        """Multiply every learning rate, schedules included (recovery from a non-finite loss).

        Trainers that keep their optimisers in ``genframe.training.Optimisers`` attributes get
        this for free; others override it.
        """
        from .errors import GenframeError
        from .training import Optimisers

        groups = [value for value in vars(self).values() if isinstance(value, Optimisers)]
        if not groups:
            raise GenframeError(f"trainer {self.type_name!r} cannot lower its learning rates; "
                                "use nonfinite: {action: stop}")
        for optimisers in groups:
            optimisers.scale(factor)


# --------------------------------------------------------------------------- evaluation


@_role("metric")
class Metric(Component):
    """A number (or a few) describing generated images, possibly against the real data."""

    @abc.abstractmethod
    def compute(self, sample: Any, real_images: torch.Tensor, device: torch.device) -> dict[str, float]:
        """``sample(n, generator)`` draws images in [-1, 1]; ``real_images`` are uint8 (N, C, H, W)."""


#: Roles whose components are declared by name under ``components:`` and shared between stages.
NAMED_ROLES = ("prior", "encoder", "generator", "critic", "latent_mapper")
