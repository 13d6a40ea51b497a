"""The spec's sampler chain as a function from noise to images, for training previews and trained runs."""

from __future__ import annotations

import torch

from genframe.build.system import System
from genframe.errors import GenframeError
from genframe.ops.images import to_uint8


class Sampler:
    """The spec's sampler chain as a function: noise -> [mappers] -> generator -> images in [-1, 1].

    A class-conditional generator (one with ``num_classes`` set) also receives labels: the given
    ones, or labels drawn uniformly with the same random generator as the noise.
    """

    def __init__(self, system: System, device: torch.device):
        self.chain = [system.components[n] for n in system.sampler]
        self.names = list(system.sampler)
        self.device = device

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
            out.append(self.decode(noise, None if labels is None else labels[start:start + count]))
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images for given prior samples (e.g. points on a line between two of them), in eval mode."""
        modules = [m for m in self.chain[1:] if isinstance(m, torch.nn.Module)]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            x = noise
            for module in self.chain[1:-1]:
                x = module(x)
            if self.num_classes:
                if labels is None:
                    raise GenframeError("a class-conditional generator needs labels")
                return self.chain[-1](x, labels.to(self.device))
            return self.chain[-1](x)
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
        return self.decode(noise, labels)


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
