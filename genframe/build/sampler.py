"""The spec's sampler chain as a function from noise to images, for training previews and trained runs."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Callable, Iterator

import attrs
import torch

from genframe.build.system import System
from genframe.errors import GenframeError
from genframe.ops.graphs import CaptureError, CudaGraph, RecordedGraph, side_stream
from genframe.ops.images import to_uint8
from genframe.ops import log


class Sampler:
    """The spec's sampler chain as a function: noise -> [mappers] -> generator -> images in [-1, 1].

    A class-conditional generator (one with ``num_classes`` set) also receives labels: the given
    ones, or labels drawn uniformly with the same random generator as the noise. Links that draw
    random numbers of their own (a stochastic solver) draw them from the global generator, seeded
    for each batch from the caller's generator, so that a seed fixes every sample.

    With the spec's ``cuda_graphs`` on a GPU, the chain's work for a batch is captured as a CUDA
    graph the second time a batch of that shape comes, and replayed for every later one: a flow
    or diffusion model's solver runs its network tens of times per batch, each a few dozen kernel
    launches, which is what small models are bound by. ``emulate`` replays recorded operations
    on any device, so that replayed sampling can be checked against eager sampling on a CPU.
    """

    def __init__(self, system: System, device: torch.device, graphs: bool | str | None = None):
        self.chain = [system.components[n] for n in system.sampler]
        self.names = list(system.sampler)
        self.device = device
        setting = system.cuda_graphs if graphs is None else graphs
        self.graphs = "emulate" if setting == "emulate" else "cuda" if setting and device.type == "cuda" else "off"
        self._replays: dict[tuple, _Replay | None] = {}  # batch shape -> its replay (None: seen once, eagerly)

    def protocol(self) -> dict:
        """How the chain's links sample, where that matters for the numbers (solver, NFE), by name."""
        found = {name: link.sampling_protocol() for name, link in zip(self.names, self.chain)}
        return {name: protocol for name, protocol in found.items() if protocol}

    @property
    def num_classes(self) -> int | None:
        return getattr(self.chain[-1], "num_classes", None)

    @torch.no_grad()
    def __call__(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
                 batch_size: int = 1000) -> torch.Tensor:
        if self.num_classes and labels is None:
            labels = torch.randint(self.num_classes, (n,), device=self.device, generator=generator)
        out = []
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            noise = self.chain[0].sample(count, device=self.device, generator=generator)
            out.append(self.decode(noise, None if labels is None else labels[start:start + count], generator))
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Images for given prior samples (e.g. points on a line between two of them), in eval mode.

        With ``generator``, the links' own random numbers are seeded from its state (which is not
        advanced), and the caller's global random state is left as it was."""
        if self.num_classes:
            if labels is None:
                raise GenframeError("a class-conditional generator needs labels")
            labels = labels.to(self.device)
        modules = [m for m in self.chain[1:] if isinstance(m, torch.nn.Module)]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            with _seeded_from(generator, self.device) as seed:
                if self.graphs == "off" or self.device.type == "meta":
                    return self._links(noise, labels)
                return self._replayed(noise, labels, seed)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)

    def interpolation(self, rows: int, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``rows`` lines of ``steps`` images between pairs of prior samples (row-major)."""
        ends = self.chain[0].sample(2 * rows, device=self.device, generator=generator)
        t = torch.linspace(0.0, 1.0, steps, device=self.device).view(1, steps, 1)
        noise = (ends[:rows, None] * (1 - t) + ends[rows:, None] * t).reshape(rows * steps, -1)
        labels = None
        if self.num_classes:
            labels = torch.randint(self.num_classes, (rows,), device=self.device, generator=generator)
            labels = labels.repeat_interleave(steps)
        return self.decode(noise, labels, generator)

    def _links(self, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = noise
        for module in self.chain[1:-1]:
            x = module(x)
        return self.chain[-1](x) if labels is None else self.chain[-1](x, labels)

    def _replayed(self, noise: torch.Tensor, labels: torch.Tensor | None, seed: Callable[[], None]) -> torch.Tensor:
        """The chain through a graph: eager the first time a shape comes (warm-up), captured the
        second time, replayed after that."""
        key = (tuple(noise.shape), None if labels is None else tuple(labels.shape))
        if key not in self._replays:
            self._replays[key] = None
            with side_stream(self.device) if self.graphs == "cuda" else contextlib.nullcontext():
                return self._links(noise, labels)
        replay = self._replays[key]
        if replay is None:
            replay = _Replay(noise.clone(), None if labels is None else labels.clone(),
                             CudaGraph() if self.graphs == "cuda" else RecordedGraph())
            try:
                replay.output = replay.graph.capture(lambda: self._links(replay.noise, replay.labels))
            except (CaptureError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning(f"the sampler chain {self.names} cannot be captured ({first}); "
                            "it samples eagerly")
                self.graphs = "off"
                seed()
                return self._links(noise, labels)
            self._replays[key] = replay
            return replay.output.clone()
        replay.noise.copy_(noise)
        if labels is not None:
            replay.labels.copy_(labels)
        replay.graph.replay()
        return replay.output.clone()


@attrs.define
class _Replay:
    """A captured batch: the tensors the recording read (refilled before each replay) and wrote."""

    noise: torch.Tensor
    labels: torch.Tensor | None
    graph: CudaGraph | RecordedGraph
    output: torch.Tensor | None = None


@contextlib.contextmanager
def _seeded_from(generator: torch.Generator | None, device: torch.device) -> Iterator[Callable[[], None]]:
    """Seed the global generator (of ``device``) from ``generator``'s state, and restore it after.

    The seed is a hash of the state rather than a draw, so that the noise and labels drawn from
    ``generator`` stay what they were before links could draw numbers of their own. Yields a
    function that seeds again (work that must start over with the same numbers)."""
    if generator is None or device.type == "meta":
        yield lambda: None
        return
    digest = hashlib.blake2b(generator.get_state().cpu().numpy().tobytes(), digest_size=8).digest()
    value = int.from_bytes(digest, "little") >> 1

    def seed() -> None:
        torch.default_generator.manual_seed(value)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(value)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        seed()
        yield seed


def class_index(label: int | str, class_names: list[str] | None) -> int:
    """The label number of ``label``: a number, or one of the class names the run recorded."""
    if isinstance(label, int):
        return label
    if class_names and label in class_names:
        return class_names.index(label)
    if label.lstrip("-").isdigit():
        return int(label)
    known = f"the run's classes are {', '.join(class_names)}" if class_names else \
        "the run recorded no class names; give a class number"
    raise GenframeError(f"--label {label!r}: not a class of this run; {known}")


def sample_images(system: System, device: torch.device, n: int, seed: int, label: int | None = None) -> torch.Tensor:
    """``n`` uint8 images from the sampler chain; the same seed gives the same images.

    ``label`` asks a class-conditional generator for images of one class.
    """
    sampler = Sampler(system, device)
    labels = None
    if label is not None:
        if not sampler.num_classes:
            raise GenframeError(f"{system.source}: --label needs a class-conditional generator; "
                                f"{system.sampler[-1]!r} is unconditional")
        if not 0 <= label < sampler.num_classes:
            raise GenframeError(f"--label {label}: the generator knows classes 0..{sampler.num_classes - 1}")
        labels = torch.full((n,), label, dtype=torch.int64, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    return to_uint8(sampler(n, generator, labels)).cpu()
