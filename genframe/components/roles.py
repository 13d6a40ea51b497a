"""The roles of a generative system: one abstract base class each, with the few methods the engine calls.

The engine and the trainers only talk to these interfaces, never to a concrete model. A concrete
component subclasses one role, declares its spec parameters as attrs fields and is registered with
``@component(role_name, type_name)``. Network roles are also ``torch.nn.Module``s: construction
stores the parameters, ``setup(ctx)`` builds the layers once the data's shape is known.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import attrs
import torch
from torch import nn

from genframe.errors import GenframeError

if TYPE_CHECKING:
    from genframe.build.context import BuildContext
    from genframe.training.context import StageContext


class Component(metaclass=abc.ABCMeta):
    """Base of every component. ``role``/``type_name`` are set by :func:`component`."""

    role: ClassVar[str] = ""
    type_name: ClassVar[str] = ""

    def setup(self, ctx: BuildContext) -> None:
        """Called once after the spec is built, with the data's shape; builds layers or tables."""

    def preflight(self) -> None:
        """Fetch or check what this component will need from outside the run (weights, checksum-
        verified; data files; statistics files), raising ``GenframeError`` with what is missing and
        how to provide it. Called before anything trains, on one process first, and again by
        ``genframe validate --preflight``: cheap when everything is in place."""

    def sampling_protocol(self) -> dict:
        """What drawing samples through this component depends on besides its weights (a flow's solver
        and its network evaluations), recorded beside every evaluation's numbers; {} for most."""
        return {}

    def config(self) -> dict:
        """The spec parameters of this component (``type`` included), as plain YAML-able data."""
        return {"type": self.type_name,
                **{f.name: _plain(getattr(self, f.name)) for f in attrs.fields(type(self))}}


def nested_components(component: Component) -> list[Component]:
    """The components held in ``component``'s fields, recursively (lists included), each once."""
    found: dict[int, Component] = {}

    def visit(value: Any) -> None:
        if isinstance(value, Component):
            if id(value) not in found:
                found[id(value)] = value
                for field in attrs.fields(type(value)):
                    visit(getattr(value, field.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    for field in attrs.fields(type(component)):
        visit(getattr(component, field.name))
    return list(found.values())


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

    def planned_shape(self) -> tuple[int | None, int, int] | None:
        """(number of images or None, channels, image side) this data set will load, known without
        reading it, or None. ``genframe validate`` builds the system on the meta device with it,
        checks every shape and estimates the memory training needs, all before any data is read."""
        return None

    def class_names(self) -> list[str] | None:
        """Names of the labels 0, 1, ... once ``load`` has run, or None. The run records them, so
        that a class-conditional model can be sampled by class name."""
        return None


# --------------------------------------------------------------------------- models


@_role("prior")
class Prior(Component):
    """A distribution to draw latent vectors from.

    ``dim`` may be left None by the spec when the prior starts the sampler chain: genframe then sets
    it to the width of the link it feeds, at build time when that width is declared and after setup
    when it depends on the data (a flow generator's noise has the images' shape).
    """

    dim: int | None  # size of one sample (a spec parameter of every prior)

    @abc.abstractmethod
    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` samples on ``device``; ``generator`` (on that device) makes it reproducible."""


@attrs.frozen(eq=False)  # tensors: equality is not a boolean
class Posterior:
    """An encoder's codes for a batch, with the Gaussian they were drawn from when the encoder has one.

    ``sample`` is what the generator decodes during training; ``mean`` is the deterministic code;
    ``log_var`` (per dimension) is None for deterministic encoders, whose posterior is a point mass.
    """

    sample: torch.Tensor
    mean: torch.Tensor
    log_var: torch.Tensor | None = None


@_role("encoder")
class Encoder(ModuleComponent):
    """Maps training images (or their indices, for per-image code tables) to latent codes."""

    dim: int  # size of one code (a spec parameter of every encoder)
    #: False for code tables (GLO): their codes come from the indices alone, so they cannot encode new images.
    encodes_new_images: ClassVar[bool] = True
    #: True when ``posterior`` returns a Gaussian (mean and log-variance), as KL divergences need.
    gaussian_posterior: ClassVar[bool] = False

    @abc.abstractmethod
    def encode(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Codes of a batch; ``indices`` are the batch's positions in the data set."""

    def posterior(self, images: torch.Tensor, indices: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> Posterior:
        """The codes training decodes; a stochastic encoder draws them with ``generator`` (checkpointed)."""
        codes = self.encode(images, indices)
        return Posterior(sample=codes, mean=codes)

    def project(self, codes: torch.Tensor) -> torch.Tensor:
        """Arbitrary codes mapped onto the set this encoder's codes live on (e.g. GLO's unit sphere).

        Used when codes are searched for outside training (reconstruction, restoration); differentiable.
        """
        return codes

    def after_update(self) -> None:
        """Called after each optimiser step (projections onto a constraint set go here)."""

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Codes of a whole data set (uint8 images are converted batch by batch).

        In evaluation mode, so that batch normalisation uses (and does not update) its running statistics.
        Images in host memory (a streamed data set) are moved to the encoder's device chunk by chunk.
        """
        from genframe.ops.images import to_float

        device = next(self.parameters(), images).device
        was_training = self.training
        self.eval()
        try:
            chunks = []
            for start in range(0, images.shape[0], batch_size):
                idx = torch.arange(start, min(start + batch_size, images.shape[0]), device=device)
                chunks.append(self.encode(to_float(images[start:start + idx.shape[0]].to(device)), idx))
        finally:
            self.train(was_training)
        return torch.cat(chunks)


@_role("generator")
class Generator(ModuleComponent):
    """Maps latent vectors to images in [-1, 1].

    A class-conditional generator sets ``num_classes`` and takes ``forward(z, labels)``.
    """

    latent_dim: int | None  # size of the latent vector it takes; None until setup when it is the data's
    num_classes: int | None = None  # set by class-conditional generators

    @abc.abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        ...

    def after_update(self) -> None:
        """Called by trainers after each optimiser step of this generator (weight averaging goes here)."""


@_role("critic")
class Critic(ModuleComponent):
    """Scores images: one real number per image (a discriminator, or a Wasserstein critic).

    A class-conditional critic sets ``num_classes`` and takes ``forward(x, labels)``.
    """

    num_classes: int | None = None  # set by class-conditional critics

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...

    def batch_coupling(self) -> str | None:
        """The parameter that makes a score depend on the other images of its batch (batch
        normalisation), or None. Per-sample gradient penalties are wrong for such critics, so
        the spec is refused at build time, naming this parameter."""
        return None


@_role("latent_mapper")
class LatentMapper(ModuleComponent):
    """Maps noise from a prior to the latent space of a generator (GLANN's IMLE mapper)."""

    in_dim: int  # size of the noise it takes
    out_dim: int  # size of the codes it produces

    @abc.abstractmethod
    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        ...


# --------------------------------------------------------------------------- flows and diffusion
# A flow or diffusion model is a generator (noise of the image's shape -> image) or a latent mapper
# (noise -> codes) built from three parts: a network conditioned on time, a probability path that
# says what the network learns and how its output becomes a velocity, and a solver that integrates
# the velocity from noise (t = 0) to data (t = 1). Flow matching versus diffusion is the path.


@_role("time_network")
class TimeNetwork(ModuleComponent):
    """A network of a point x and a time t in [0, 1] (and, with ``num_classes``, a class label),
    whose output has the shape of x. Label ``num_classes`` means "no class" (classifier-free guidance)."""

    num_classes: int | None = None

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``t`` holds one time per row of ``x``."""


@_role("probability_path")
class ProbabilityPath(Component):
    """How data x1 and noise x0 are mixed at time t, what the network regresses, and how its output
    becomes the velocity dx/dt that carries noise (t = 0) to data (t = 1)."""

    @abc.abstractmethod
    def training_times(self, n: int, *, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` times at which training examples are drawn."""

    @abc.abstractmethod
    def noisy(self, data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t: the point of the path at time ``t`` between ``noise`` and ``data``."""

    @abc.abstractmethod
    def target(self, data: torch.Tensor, noise: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network's raw output regresses at (x_t, t)."""

    @abc.abstractmethod
    def velocity(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx/dt at (x_t, t) from the network's raw output there."""

    def network_input(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, time feature) the network sees at (x_t, t): a preconditioned path rescales them."""
        return x_t, t

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """x at t = 0 for standard normal ``noise``."""
        return noise

    def sampling_times(self, steps: int, device: torch.device) -> torch.Tensor:
        """``steps + 1`` increasing times from 0 to 1 at which a solver evaluates the velocity."""
        return torch.linspace(0.0, 1.0, steps + 1, device=device)

    def renoise(self, x: torch.Tensor, t: torch.Tensor, earlier: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x moved back to time ``earlier`` < ``t`` with fresh ``noise``, as the path's marginal there."""
        raise GenframeError(f"probability path {self.type_name!r} cannot add noise back; use a deterministic solver")

    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Called when a stage starts to train on this path, with the training data as the model sees
        them (images in [-1, 1], or codes), in batches: a path whose settings default to properties
        of the data (EDM's sigma_data) measures them here."""

    # Gaussian paths, x_t = a(t) x1 + s(t) x0, set ``gaussian`` and implement the methods below.
    # Solvers then step in the noise level sigma = s / a, on x / a (Karras et al. 2022), where a step
    # with a fixed denoiser is exact: the data prediction, not t, carries the sample.

    #: True when the path implements ``scales``, ``denoised``, ``level`` and ``noise_levels``.
    gaussian: ClassVar[bool] = False

    def scales(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(t), s(t)) of a Gaussian path."""
        raise GenframeError(f"probability path {self.type_name!r} is not Gaussian")

    def denoised(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x1 | x_t], the data the network's raw ``output`` at (x_t, t) predicts."""
        raise GenframeError(f"probability path {self.type_name!r} is not Gaussian")

    def level(self, sigma: float) -> tuple[float, float, float]:
        """(t, a(t), s(t)) where the noise level s / a is ``sigma`` > 0 (infinite: pure noise), as numbers."""
        raise GenframeError(f"probability path {self.type_name!r} is not Gaussian")

    def noise_levels(self, steps: int) -> list[float]:
        """The decreasing noise levels a ``steps``-step solve passes through: ``steps + 1`` numbers from
        the path's start (``inf`` for pure noise) to 0, the clean data."""
        raise GenframeError(f"probability path {self.type_name!r} is not Gaussian")


class Field(Protocol):
    """What a solver integrates: a trained model on its path, called by the flows that own it."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx/dt at (x, t); t is a 0-d tensor."""

    def denoised(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x1 | x_t = x] on a Gaussian path (clipped to the data's range where it has one)."""


@_role("solver")
class Solver(Component):
    """Integrates a model from noise (t = 0) to data; ``steps`` is a spec field of every solver.

    ``solve`` may step in t through ``velocity`` (a :class:`Field`), or, on a Gaussian path, through
    the path's noise levels with ``velocity.denoised``; ``times`` are the path's ``sampling_times``.
    Random numbers come from ``generator``, or else torch's default generator, which the sampler
    seeds for each batch; a solve reads nothing back to the host, so that it can be replayed from a
    CUDA graph.
    """

    steps: int

    @abc.abstractmethod
    def solve(self, velocity: Field, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """The data at the end of the path from ``x``, the path's start (``path.start(noise)``)."""

    def evaluations(self, path: ProbabilityPath | None = None) -> int:
        """Network evaluations one sample costs (NFE) on ``path``, recorded by the metrics protocol."""
        return self.steps


# --------------------------------------------------------------------------- losses


class AdversarialTerm(Component):
    """What divergences and constraints share: they act on a critic, and may keep training state.

    State that is not a spec parameter (BEGAN's k_t) lives behind ``reset``/``state_dict``/
    ``load_state_dict``; the trainer that owns the term resets it when a stage starts and saves it
    with its own state, so that a resumed run continues exactly.
    """

    def check_critic(self, critic: Critic, critic_path: str, path: str) -> None:
        """Refuse, at build time, a critic this term cannot work with: raise ``SpecError`` naming the
        field. ``critic_path`` is the critic's spec path (``components.<name>``), ``path`` this
        term's own. The critic has its parameters but no layers yet."""

    def reset(self, device: torch.device) -> None:
        """Start fresh training state on ``device`` (a stage starts; a resume then loads the saved one)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


@_role("divergence")
class Divergence(AdversarialTerm):
    """An adversarial objective: critic and generator losses from the critic's scores.

    Both losses get both sets of scores of the same training step, so an objective that compares
    real with fake (the relativistic family) is a pure function of its arguments: nothing is kept
    on the divergence between calls, which is what CUDA graphs and several processes need. The
    scores are this process's rows; :func:`genframe.batch_mean` averages over the global batch.
    """

    #: True when ``generator_loss`` reads ``real_scores``: the trainer then scores the step's real
    #: batch again with the critic as the critic step left it (one more critic forward pass, no
    #: gradient). Otherwise ``generator_loss`` gets the real scores of the last critic update.
    generator_reads_real: ClassVar[bool] = False

    @abc.abstractmethod
    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def generator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        """The generator's loss; ``real_scores`` carry no gradient (the real images do not depend on it)."""

    def update(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """Called once per generator update with the last critic step's real scores and the generator
        step's fake scores (both detached): a divergence with state updates it here (BEGAN's k_t)
        and returns device tensors worth logging."""
        return {}


@_role("constraint")
class LipschitzConstraint(AdversarialTerm):
    """Keeps a critic (approximately) Lipschitz: a penalty, a weight projection, or a reparametrisation."""

    #: True when ``penalty`` differentiates the critic's input gradient again (gradient penalties):
    #: such a critic cannot be compiled, since torch.compile has no double backward.
    differentiates_twice: ClassVar[bool] = False

    def apply(self, critic: Critic) -> None:
        """Called once when the critic's layers exist and before any saved weights are loaded into it,
        so that a reparametrisation (spectral normalisation) is part of what checkpoints hold."""

    def penalty(self, critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                fake: torch.Tensor) -> torch.Tensor | None:
        """Extra critic loss term for this batch, or None. ``critic`` scores a batch of images (with
        the batch's labels bound, for class-conditional critics); real and fake share those labels."""
        return None

    def after_critic_step(self, critic: Critic) -> None:
        """Called after each critic optimiser step (e.g. weight clipping)."""


@_role("reconstruction_loss")
class ReconstructionLoss(Component):
    """Distance between images in [-1, 1], averaged over the batch."""

    @abc.abstractmethod
    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ...


# --------------------------------------------------------------------------- latent divergences


@_role("latent_divergence")
class LatentDivergence(Component):
    """A term pulling the distribution of an encoder's codes towards a prior (VAE's KL, WAE's MMD).

    The autoencoding trainer adds ``weight`` times its value to the reconstruction loss.
    """

    weight: float  # multiplier of the term (a spec parameter of every latent divergence)

    def check(self, encoder: Encoder, components: dict[str, Component], path: str) -> None:
        """Refuse, at build time, an encoder (or referenced components) this term cannot work with:
        raise ``SpecError`` naming the field. ``path`` is this term's spec path."""

    def bind(self, ctx: StageContext) -> None:
        """Resolve referenced components; called once per stage."""

    @abc.abstractmethod
    def __call__(self, posterior: Posterior, generator: torch.Generator | None = None) -> torch.Tensor:
        """The unweighted divergence of a batch's codes; ``generator`` draws any prior samples it needs."""


# --------------------------------------------------------------------------- training


@_role("schedule")
class Schedule(Component):
    """Learning-rate multiplier as a function of the epoch (fractional) and progress in [0, 1].

    A schedule may also follow training: ``observe`` receives the stage's logged means at every
    logging point (the same values in every process), and its state is checkpointed.
    """

    @abc.abstractmethod
    def factor(self, epoch: float, progress: float) -> float:
        ...

    def reset(self) -> None:
        """Forget what was observed: called when a stage starts (before a checkpoint is restored)."""

    def observe(self, logged: dict[str, float]) -> None:
        """The mean losses of the logging interval that just ended."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


@_role("optimizer")
class Optimizer(Component):
    """Builds a torch optimiser (and its learning-rate schedule) for a set of parameters."""

    #: Multiplies the learning rate over training (a spec field of the optimisers that take one);
    #: None keeps it constant.
    schedule: Schedule | None = None

    @abc.abstractmethod
    def build(self, params: Any) -> torch.optim.Optimizer:
        ...


@_role("trainer")
class Trainer(Component):
    """A training procedure: the engine calls ``train_step`` and owns the loop around it.

    ``train_step`` must not synchronise with the host: it returns device tensors which the engine
    reads only at the logging interval. Everything needed to resume lives in ``state_dict``.
    Batches and optimisers come from the ``StageContext`` (``ctx.batches``, ``ctx.optimisers``):
    the engine steps their learning-rate schedules after every step.
    """

    #: True when ``train_step`` can be captured once in a CUDA graph and replayed (``cuda_graphs``):
    #: it only queues device work of fixed shapes, reads its batches through ``EpochBatches``, updates
    #: tensors it keeps across steps in place (``copy_``, not rebinding) and draws random numbers with
    #: the stage's generator or torch's default one. ``cuda_graphs: emulate`` checks this on any device.
    supports_cuda_graphs: ClassVar[bool] = False

    def check(self, components: dict[str, Component], path: str) -> None:
        """Refuse combinations of components that cannot work, at build time (before any data is
        read): raise ``SpecError`` naming the field. ``path`` is this trainer's spec path.

        Sizes that depend on the data (a prior's ``dim`` or a generator's ``latent_dim`` left to the
        data's shape) are None at build time: skip comparisons with None. The check runs again
        after setup, when every size is known."""

    def prepare_components(self, components: dict[str, Component]) -> None:
        """Called once after every named component is set up and before any saved weights are
        loaded (also when a finished run is loaded for sampling): structural changes to components,
        such as spectral normalisation, go here so that checkpoints load into that structure."""

    def eager_components(self, components: dict[str, Component]) -> set[str]:
        """Names of components that ``compile: true`` must leave uncompiled: those this trainer
        differentiates twice (``torch.compile`` has no double backward), e.g. a critic under a
        gradient penalty."""
        return set()

    @abc.abstractmethod
    def bind(self, ctx: StageContext) -> None:
        """Resolve referenced components, build optimisers; called once per stage."""

    @abc.abstractmethod
    def total_steps(self) -> int:
        ...

    @abc.abstractmethod
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        ...

    def replayable(self, step: int) -> bool:
        """Whether ``train_step(step)`` does the same device work as every other step, so that a graph
        captured on another step may stand in for it. Steps that do more (IMLE's periodic search for
        nearest neighbours) answer False and run eagerly, between replays."""
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def previews(self) -> dict[str, torch.Tensor]:
        """Images worth looking at during this stage (e.g. reconstructions), in [-1, 1]."""
        return {}


# --------------------------------------------------------------------------- evaluation


@_role("metric")
class Metric(Component):
    """A number (or a few) describing generated images, possibly against the real data."""

    #: False for a metric of the generated images alone (the Inception score): ``genframe eval``
    #: then needs no reference images for it.
    uses_real_images: ClassVar[bool] = True
    #: True when :meth:`set_reference_statistics` is implemented (FID's saved mean and covariance).
    reads_statistics_files: ClassVar[bool] = False
    #: Short names ``genframe eval --metrics`` also accepts (``is`` for ``inception_score``).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Measured by ``genframe eval`` when neither the spec nor ``--metrics`` names a metric.
    evaluated_by_default: ClassVar[bool] = False

    def result_name(self) -> str:
        """The name this metric's results and protocol are filed under (several of one type need
        different names)."""
        return self.type_name

    def set_sample_count(self, n: int) -> None:
        """Measure ``n`` generated images (``genframe eval --n``)."""
        raise GenframeError(f"--n: metric {self.type_name!r} has no sample count to set")

    def set_reference_statistics(self, url: str) -> None:
        """Compare with the statistics saved at ``url`` instead of real images (``reads_statistics_files``)."""
        raise GenframeError(f"--reference {url}: metric {self.type_name!r} reads no statistics files")

    def fit(self, real_images: torch.Tensor | None, labels: torch.Tensor | None) -> None:
        """Called before ``compute`` with the evaluation's real images and their labels (None when the
        data have none): a metric whose feature extractor learns from the data passes them on."""

    @abc.abstractmethod
    def compute(self, sample: Any, real_images: torch.Tensor, device: torch.device) -> dict[str, float]:
        """``sample(n, generator)`` draws images in [-1, 1]; ``real_images`` are uint8 (N, C, H, W)."""

    def protocol(self) -> dict:
        """Everything the last ``compute`` depended on besides the model, logged next to its numbers.

        Numbers of different protocols are not comparable; metrics that resolve things at compute
        time (weights digests, reference data) override this to report them.
        """
        return self.config()


# --------------------------------------------------------------------------- evaluation features
# Added with the metrics (issue 5): the network a metric measures images with is a component too,
# so that a plugin can replace Inception-v3 by, say, a classifier trained on the data's domain.


@_role("feature_extractor")
class FeatureExtractor(Component):
    """Maps uint8 images to feature vectors (and class logits, if it has a classifier) for metrics."""

    def fit(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Learn from the evaluated data, uint8 (N, C, H, W) with labels (or None), before ``prepare``:
        an extractor trained on the data's own labels trains here, or loads what it trained before."""

    def held_out_positions(self) -> torch.Tensor | None:
        """Positions of the images given to ``fit`` that it did not learn from: metrics then draw their
        real reference (and floor) from these. None: it learned from none of them."""
        return None

    @abc.abstractmethod
    def prepare(self, device: torch.device) -> None:
        """Load weights onto ``device``; called before every use, so repeated calls must be cheap."""

    @abc.abstractmethod
    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 (N, C, H, W) images on the prepared device -> ``{"features": (N, D)}``, plus
        ``"logits": (N, K)`` when the extractor classifies (the Inception Score needs them)."""

    @abc.abstractmethod
    def protocol(self) -> dict:
        """What the outputs depend on (weights digest, preprocessing, precision), as plain data.

        Statistics are compared only when these agree, so include everything that changes a feature.
        """


#: Roles whose components are declared by name under ``components:`` and shared between stages.
NAMED_ROLES = ("prior", "encoder", "generator", "critic", "latent_mapper")
