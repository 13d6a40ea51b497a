"""Lipschitz constraints and regularisers for critics: gradient penalties, weight clipping, spectral
normalisation and consistency regularisation. Several may apply at once.

The penalties differentiate the critic with respect to its input with ``create_graph=True``, so
that the penalty's own gradient reaches the critic's weights. Gradient norms are taken in at least float32:
under autocast the input gradient may be bfloat16, and the penalty is a small difference
(||g|| - 1) that half precision would mostly round away. With float16 autocast the input gradient
itself can underflow; bfloat16 has float32's range and does not. Random draws (interpolation
weights, perturbations, augmentations) use the global generator, which checkpoints save; they are
drawn for the whole global batch (``per_example``), so that under torchrun every process keeps the
same generator state and each example gets the numbers it would get in a single process.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from genframe import (Critic, GenframeError, LipschitzConstraint, SpecError, at_least_float32, component, hookimpl,
                      param, per_example)

Scorer = Callable[[torch.Tensor], torch.Tensor]


def _input_gradients(critic: Scorer, inputs: torch.Tensor) -> torch.Tensor:
    """d sum(critic(x)) / dx at ``inputs``, flattened per example, in at least float32 (N, D), differentiable."""
    inputs = inputs.detach().requires_grad_(True)
    scores = critic(inputs)
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return at_least_float32(grad.flatten(1))


def _per_example(x: torch.Tensor) -> tuple[int, ...]:
    """Shape of one random number per example, broadcastable against ``x``."""
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def interpolate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """eps * a + (1 - eps) * b with eps ~ U(0, 1) per example; detached, so only the critic is trained."""
    eps = per_example(lambda n: torch.rand((n, *_per_example(a)[1:]), device=a.device, dtype=a.dtype), a.shape[0])
    return eps * a.detach() + (1 - eps) * b.detach()


class _InputGradientPenalty(LipschitzConstraint):
    """A penalty on the critic's per-example input gradients: wrong when a score depends on the batch."""

    differentiates_twice = True

    def check_critic(self, critic: Critic, critic_path: str, path: str) -> None:
        field = critic.batch_coupling()
        if field is not None:
            raise SpecError(f"batch normalisation makes each score depend on the whole batch, which breaks the "
                            f"per-example gradients that {self.type_name} ({path}) penalises; use layer or no "
                            "normalisation", path=f"{critic_path}.{field}")


def _norm_excess(critic: Scorer, points: torch.Tensor, one_sided: bool) -> torch.Tensor:
    """Mean of (||grad D|| - 1)^2 at ``points`` (only norms above 1 when ``one_sided``)."""
    excess = torch.linalg.vector_norm(_input_gradients(critic, points), dim=1) - 1
    if one_sided:
        excess = excess.clamp(min=0)
    return excess.square().mean()


@component("constraint", "gradient_penalty")
class GradientPenalty(_InputGradientPenalty):
    """WGAN-GP (Gulrajani et al. 2017): penalise critic gradient norms away from 1 between real and fake.

    An optimal 1-Lipschitz critic has gradient norm 1 almost everywhere on lines between real and
    generated samples, so the penalty is evaluated at random points eps * real + (1 - eps) * fake,
    eps ~ U(0, 1) per example. ``one_sided`` only penalises norms above 1, which is all that the
    Lipschitz condition asks. Real and fake images are detached: the penalty trains the critic only.
    """

    weight: float = param(10.0, ge=0, help="lambda, the penalty's weight in the critic loss")
    mode: Literal["two_sided", "one_sided"] = param(
        "two_sided", help="two_sided: (||g|| - 1)^2; one_sided: max(0, ||g|| - 1)^2")

    def penalty(self, critic: Scorer, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.weight * _norm_excess(critic, interpolate(real, fake), self.mode == "one_sided")


@component("constraint", "dragan")
class DRAGAN(_InputGradientPenalty):
    """DRAGAN (Kodali et al. 2017): the gradient-norm penalty in a noisy neighbourhood of the real data.

    Sharp critic gradients around real images signal the local equilibria that cause mode
    collapse, so the penalty is applied at x + eps * delta, delta = c * std(batch) * U(0, 1) per
    pixel and eps ~ U(0, 1) per example, as in the authors' code; fakes play no part.
    """

    weight: float = param(10.0, ge=0, help="lambda, the penalty's weight in the critic loss")
    c: float = param(0.5, gt=0, help="size of the perturbation in units of the batch's standard deviation")

    def penalty(self, critic: Scorer, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real = real.detach()
        noise = per_example(lambda n: torch.rand((n, *real.shape[1:]), device=real.device, dtype=real.dtype),
                            real.shape[0])
        perturbed = real + self.c * at_least_float32(real).std().to(real.dtype) * noise
        return self.weight * _norm_excess(critic, interpolate(perturbed, real), one_sided=False)


@component("constraint", "r1")
class R1(_InputGradientPenalty):
    """R1 (Mescheder et al. 2018): gamma/2 * E||grad D(x_real)||^2, stabilising non-WGAN objectives.

    Penalising the critic's gradient on real data only makes it flat where the data lies, which
    makes the GAN game locally convergent; it is meant for the logistic objectives, not for
    ``wasserstein``.
    """

    gamma: float = param(10.0, ge=0, help="penalty weight; the penalty is gamma/2 * E||grad||^2")

    def _points(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return real

    def penalty(self, critic: Scorer, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.gamma * _input_gradients(critic, self._points(real, fake)).square().sum(1).mean()


@component("constraint", "r2")
class R2(R1):
    """R2 (Mescheder et al. 2018): gamma/2 * E||grad D(G(z))||^2, R1's penalty on generated images instead."""

    def _points(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return fake


@component("constraint", "weight_clipping")
class WeightClipping(LipschitzConstraint):
    """WGAN's original constraint (Arjovsky et al. 2017): clamp every critic weight to [-c, c].

    Clipping bounds the Lipschitz constant crudely (and biases the critic towards simple functions),
    but needs no extra forward or backward pass. Weights are clipped before training starts as well,
    so that the critic never runs outside the box.
    """

    c: float = param(0.01, gt=0, help="clipping bound for every critic parameter")

    @torch.no_grad()
    def _clip(self, critic: Critic) -> None:
        for p in critic.parameters():
            p.clamp_(-self.c, self.c)

    def apply(self, critic: Critic) -> None:
        self._clip(critic)

    def after_critic_step(self, critic: Critic) -> None:
        self._clip(critic)


#: Layers whose weight spectral normalisation divides by its largest singular value.
NORMALISED_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)


@component("constraint", "spectral_norm")
class SpectralNorm(LipschitzConstraint):
    """Spectral normalisation (Miyato et al. 2018): each critic layer's weight divided by its largest singular value.

    Every convolution, linear and embedding layer of the critic uses W / sigma(W), sigma estimated
    by power iteration (torch's parametrisation). Each layer is then 1-Lipschitz (a convolution as
    its weight reshaped to a matrix), which bounds the whole critic without a penalty pass. The
    power-iteration vectors are buffers of the critic, so checkpoints hold them and a resumed run
    continues the same estimates; they advance at every training-mode forward pass.
    """

    n_power_iterations: int = param(1, ge=1, help="power iterations per forward pass")
    eps: float = param(1e-12, gt=0, help="added to norms in the power iteration to avoid dividing by zero")

    def apply(self, critic: Critic) -> None:
        for module in list(critic.modules()):
            if isinstance(module, NORMALISED_LAYERS) and not parametrize.is_parametrized(module, "weight"):
                spectral_norm(module, n_power_iterations=self.n_power_iterations, eps=self.eps)


def _source_index(index: torch.Tensor, size: int, padding: str) -> torch.Tensor:
    """Where a shifted pixel comes from when ``index`` falls outside 0..size-1."""
    if padding == "circular":
        return index.remainder(size)
    if padding == "reflect":
        return (size - 1) - ((size - 1) - index.abs()).abs()
    return index.clamp(0, size - 1)


@component("constraint", "consistency")
class Consistency(LipschitzConstraint):
    """Consistency regularisation (CR-GAN, Zhang et al. 2020): weight * E||D(x) - D(T(x))||^2 on real images.

    T is a random semantics-preserving augmentation: a horizontal flip with probability 1/2 (when
    ``flip``) and a translation by up to ``shift`` pixels in each direction, drawn per image. A critic
    that changes its score under such edits relies on features that do not matter; the term makes
    it invariant to them. Both scores carry gradients, as in the paper.
    """

    weight: float = param(10.0, ge=0, help="lambda, the term's weight in the critic loss")
    flip: bool = param(True, help="mirror left-right with probability 1/2 (off for digits and text)")
    shift: int = param(4, ge=0, help="largest translation in pixels, drawn per image and axis")
    padding: Literal["replicate", "reflect", "circular"] = param(
        "replicate", help="what fills the pixels a translation uncovers")

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """T(x): random flips and translations, per image, without leaving the device."""
        n, c, h, w = x.shape
        if self.flip:
            mirrored = per_example(lambda m: torch.rand((m, *_per_example(x)[1:]), device=x.device), n) < 0.5
            x = torch.where(mirrored, x.flip(-1), x)
        if self.shift:
            if self.shift >= min(h, w):
                raise GenframeError(f"consistency constraint: shift {self.shift} is not smaller than the image side "
                                    f"{min(h, w)}; use shift: {min(h, w) - 1} or less")
            dy, dx = per_example(lambda m: torch.randint(-self.shift, self.shift + 1, (m, 2), device=x.device),
                                 n).T.unsqueeze(-1)
            rows = _source_index(torch.arange(h, device=x.device) - dy, h, self.padding)
            cols = _source_index(torch.arange(w, device=x.device) - dx, w, self.padding)
            x = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
            x = x.gather(3, cols[:, None, None, :].expand(n, c, h, w))
        return x

    def penalty(self, critic: Scorer, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real = real.detach()
        shift = at_least_float32(critic(real)) - at_least_float32(critic(self.augment(real)))
        return self.weight * shift.square().mean()


@hookimpl
def genframe_components():
    return [GradientPenalty, DRAGAN, R1, R2, WeightClipping, SpectralNorm, Consistency]
