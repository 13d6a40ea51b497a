"""Training flow-matching and diffusion models, of images or of an encoder's codes, with one trainer."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from genframe import (Component, Encoder, Optimizer, SpecError, StageContext, Trainer, at_least_float32, component,
                      hookimpl, param, per_example, ref, to_float)
from genframe_plugins.networks.flows import FlowGenerator, FlowMapper
from genframe_plugins.trainers._defaults import adam_defaults

_CHUNK = 4096  # rows converted at a time when the path measures the data (EDM's sigma_data)


@component("trainer", "flow_matching")
class FlowMatching(Trainer):
    """Fit a flow or diffusion model, of images or of codes, by regressing its path's target at random times.

    Conditional flow matching for a straight path, denoising score matching for a diffusion path:
    the path decides.

    Each step draws a batch of data (images, or the codes an encoder holds for them), standard
    normal noise and times from the path, mixes them into x_t and lowers the mean squared error
    between the network's output and the path's target. With a class-conditional network, labels
    are replaced by "no class" with probability ``label_dropout``, which classifier-free guidance
    needs at sampling time.
    """

    model: str = ref(("latent_mapper", "generator"), "mapper", help="a flow_mapper (codes) or a flow generator")
    targets: str = ref("encoder", "codes", also=("data",), read_only=True,
                       help="'data' for the training images, or an encoder whose codes of the data are fitted")
    epochs: int = param(100, ge=1)
    batch_size: int = param(256, ge=1)
    label_dropout: float = param(0.1, ge=0, le=1, help="share of labels dropped to 'no class' (guidance)")
    optimizer: Optimizer = param(factory=adam_defaults(1e-3, (0.9, 0.999)))

    supports_cuda_graphs = True

    def check(self, components: dict[str, Component], path: str) -> None:
        model = components[self.model]
        if not isinstance(model, (FlowMapper, FlowGenerator)):
            raise SpecError(f"{self.model!r} is a {model.type_name}; flow_matching trains a flow_mapper or a flow "
                            "generator", path=f"{path}.model")
        if isinstance(model, FlowGenerator) and self.targets != "data":
            raise SpecError("a flow generator makes images: fit it to targets: data", path=f"{path}.targets")
        if isinstance(model, FlowMapper):
            if self.targets == "data":
                raise SpecError("a flow_mapper makes codes: fit it to an encoder's codes", path=f"{path}.targets")
            if components[self.targets].dim != model.dim:
                raise SpecError(f"{self.model!r} makes {model.dim}-d codes but encoder {self.targets!r} holds "
                                f"{components[self.targets].dim}-d ones; make them equal",
                                path=f"components.{self.model}.dim")

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._model = ctx.components[self.model]
        self._network, self._path = self._model.network, self._model.path
        self._codes = None
        if self.targets != "data":
            codes = ctx.component(self.targets, Encoder).encode_all(ctx.images).detach()
            self._model.fit_codes(codes)
            self._codes = self._model.to_flow(codes)
        self._path.fit(self._training_data(ctx))
        self._labels = ctx.build.labels if self._network.num_classes else None
        self._batches = ctx.batches(self.batch_size)
        self._optimisers = ctx.optimisers()
        self._optimiser = self._optimisers.add("network", self.optimizer, self._network.parameters(), self._batches,
                                               self.total_steps())

    def _training_data(self, ctx: StageContext) -> Iterator[torch.Tensor]:
        """The data as the flow models them, a chunk at a time: codes, or images in [-1, 1]."""
        data = self._codes if self._codes is not None else ctx.images
        for start in range(0, len(data), _CHUNK):
            chunk = data[start:start + _CHUNK]
            yield chunk if self._codes is not None else to_float(chunk)

    def total_steps(self) -> int:
        return self.epochs * self._batches.steps_per_epoch

    def _draw(self, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        """Per-example random numbers of the global batch (the same in any number of processes)."""
        ctx = self._ctx
        if kind == "times":
            return per_example(lambda m: self._path.training_times(m, device=ctx.device, generator=ctx.generator),
                               shape[0])
        if kind == "uniform":
            return per_example(lambda m: torch.rand(m, device=ctx.device, generator=ctx.generator), shape[0])
        return per_example(lambda m: torch.randn((m, *shape[1:]), device=ctx.device, generator=ctx.generator),
                           shape[0])

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        indices = self._batches.indices(step)
        data = self._batches.images(step) if self._codes is None else self._codes[indices]
        noise = self._draw(tuple(data.shape), "noise")
        t = self._draw(tuple(data.shape), "times")
        x_t = self._path.noisy(data, noise, t)
        inputs, feature = self._path.network_input(x_t, t)
        labels = None
        if self._labels is not None:
            dropped = self._draw(tuple(data.shape), "uniform") < self.label_dropout
            labels = torch.where(dropped, self._network.num_classes, self._labels[indices])
        output = self._network(inputs, feature, labels)
        loss = (at_least_float32(output) - at_least_float32(self._path.target(data, noise, x_t, t))).square().mean()
        self._optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self._optimiser.step()
        self._model.update_average(step)
        return {"loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimisers.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._optimisers.load_state_dict(state["optimisers"])


@hookimpl
def genframe_components():
    return [FlowMatching]
