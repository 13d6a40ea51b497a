"""Lipschitz constraints for critics: gradient penalties (WGAN-GP, R1) and weight clipping (WGAN).

The penalties differentiate the critic with respect to its input with ``create_graph=True``, so
that the penalty's own gradient reaches the critic's weights. Gradient norms are taken in float32:
under autocast the input gradient may be bfloat16, and the penalty is a small difference
(||g|| - 1) that half precision would mostly round away. With float16 autocast the input gradient
itself can underflow; bfloat16 has float32's range and does not.
"""

from __future__ import annotations

from typing import Literal

import torch

from genframe import Critic, LipschitzConstraint, component, hookimpl, param


def _input_gradients(critic: Critic, inputs: torch.Tensor) -> torch.Tensor:
    """d sum(critic(x)) / dx at ``inputs``, flattened per example to float32 (N, D), differentiable."""
    inputs = inputs.detach().requires_grad_(True)
    scores = critic(inputs)
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return grad.flatten(1).float()


@component("constraint", "gradient_penalty")
class GradientPenalty(LipschitzConstraint):
    """WGAN-GP (Gulrajani et al. 2017): penalise critic gradient norms away from 1 between real and fake.

    An optimal 1-Lipschitz critic has gradient norm 1 almost everywhere on lines between real and
    generated samples, so the penalty is evaluated at random points eps * real + (1 - eps) * fake,
    eps ~ U(0, 1) per example. ``one_sided`` only penalises norms above 1, which is all that the
    Lipschitz condition asks. Real and fake images are detached: the penalty trains the critic only.
    """

    weight: float = param(10.0, ge=0, help="lambda, the penalty's weight in the critic loss")
    mode: Literal["two_sided", "one_sided"] = param(
        "two_sided", help="two_sided: (||g|| - 1)^2; one_sided: max(0, ||g|| - 1)^2")

    def penalty(self, critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        shape = (real.shape[0],) + (1,) * (real.dim() - 1)
        eps = torch.rand(shape, device=real.device, dtype=real.dtype)
        between = eps * real.detach() + (1 - eps) * fake.detach()
        excess = torch.linalg.vector_norm(_input_gradients(critic, between), dim=1) - 1
        if self.mode == "one_sided":
            excess = excess.clamp(min=0)
        return self.weight * excess.square().mean()


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


@component("constraint", "r1")
class R1(LipschitzConstraint):
    """R1 (Mescheder et al. 2018): gamma/2 * E||grad D(x_real)||^2, stabilising non-WGAN objectives.

    Penalising the critic's gradient on real data only makes it flat where the data lies, which
    makes the GAN game locally convergent; it is meant for the logistic objectives, not for
    ``wasserstein``.
    """

    gamma: float = param(10.0, ge=0, help="penalty weight; the penalty is gamma/2 * E||grad||^2")

    def penalty(self, critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.gamma * _input_gradients(critic, real).square().sum(1).mean()


@hookimpl
def genframe_components():
    return [GradientPenalty, WeightClipping, R1]
