"""Adversarial objectives: how critic scores become critic and generator losses.

Scores are raw critic outputs (logits for the logistic objectives), one per image; every loss is
a mean over the batch, computed in at least float32 so that half-precision scores do not round the
softplus terms away. BEGAN's scores are reconstruction energies of its autoencoder critic
(``networks/began.py``).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F

from genframe import (Critic, Divergence, SpecError, at_least_float32, batch_mean, component, hookimpl, param,
                      process_mean)
from genframe_plugins.networks.began import AutoencoderCritic


@component("divergence", "wasserstein")
class Wasserstein(Divergence):
    """WGAN (Arjovsky et al. 2017): the critic estimates the Earth-Mover distance; needs a constraint.

    The critic maximises E[D(real)] - E[D(fake)], which approximates the Wasserstein-1 distance
    only while the critic is kept 1-Lipschitz (weight clipping, gradient penalty...).
    """

    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return at_least_float32(fake_scores).mean() - at_least_float32(real_scores).mean()

    def generator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return -at_least_float32(fake_scores).mean()


@component("divergence", "hinge")
class Hinge(Wasserstein):
    """Hinge loss (Lim & Ye 2017; SN-GAN, Miyato et al. 2018): a margin-based critic, WGAN's generator loss.

    The critic lowers E[max(0, margin - D(real))] + E[max(0, margin + D(fake))]: once an image is
    scored beyond the margin it stops contributing, so the critic spends its capacity on the images
    near the boundary instead of inflating scores. The generator raises E[D(fake)] as in WGAN.
    """

    margin: float = param(1.0, gt=0, help="scores beyond +-margin cost the critic nothing")

    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        real, fake = at_least_float32(real_scores), at_least_float32(fake_scores)
        return F.relu(self.margin - real).mean() + F.relu(self.margin + fake).mean()


class _Logistic(Divergence):
    """The original GAN critic: a logistic classifier of real (label 1) against fake (label 0).

    With D = sigmoid(score), -log D = softplus(-score) and -log(1 - D) = softplus(score), which
    stay finite where the logs of a saturated sigmoid would not.
    """

    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return F.softplus(-at_least_float32(real_scores)).mean() + F.softplus(at_least_float32(fake_scores)).mean()


@component("divergence", "nonsaturating")
class NonSaturating(_Logistic):
    """Standard GAN with the non-saturating generator loss -log D(G(z)) (Goodfellow et al. 2014).

    Same fixed point as minimax, but its gradient is largest where the critic rejects the fakes
    confidently, which is exactly early in training.
    """

    def generator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return F.softplus(-at_least_float32(fake_scores)).mean()


@component("divergence", "minimax")
class Minimax(_Logistic):
    """Standard GAN as the zero-sum game: the generator minimises log(1 - D(G(z))).

    Kept for comparison: its gradient vanishes when the critic confidently rejects the fakes,
    which is why ``nonsaturating`` is the usual choice.
    """

    def generator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return -F.softplus(at_least_float32(fake_scores)).mean()


@component("divergence", "least_squares")
class LeastSquares(Divergence):
    """LSGAN (Mao et al. 2017): squared distances of the scores to target codes a, b, c.

    The critic pushes fake scores to ``a`` and real scores to ``b``; the generator pushes fake
    scores to ``c``. Unlike the logistic loss, a quadratic keeps penalising fakes that are
    classified correctly but lie far from the real data. The 0-1-1 coding is the paper's practical
    choice; a=-1, b=1, c=0 is the one that minimises the Pearson chi^2 divergence.
    """

    a: float = param(0.0, help="target score of fake images for the critic")
    b: float = param(1.0, help="target score of real images for the critic")
    c: float = param(1.0, help="score the generator wants the critic to give its images")

    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return 0.5 * (at_least_float32(real_scores) - self.b).square().mean() + \
            0.5 * (at_least_float32(fake_scores) - self.a).square().mean()

    def generator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return 0.5 * (at_least_float32(fake_scores) - self.c).square().mean()


class _Relativistic(Divergence):
    """Relativistic average GANs (Jolicoeur-Martineau 2018): the critic judges whether a real image
    looks more real than the average fake, and a fake less real than the average real.

    With C the critic's raw score, the relativistic scores are r = C(x_r) - mean C(x_f) and
    f = C(x_f) - mean C(x_r) (means over the global batch). The critic wants r high and f low; the
    generator wants the opposite, so, unlike the standard objectives, its loss also pulls the real
    images' relative scores down. Subclasses give ``cost(s, sign)``, the mean cost of relativistic
    scores ``s`` that the critic wants on the side of ``sign``.
    """

    generator_reads_real = True

    @abc.abstractmethod
    def cost(self, relative: torch.Tensor, sign: float) -> torch.Tensor:
        """Mean cost of relativistic scores the critic wants on the side of ``sign`` (+1 or -1)."""

    @staticmethod
    def relative(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real, fake = at_least_float32(real_scores), at_least_float32(fake_scores)
        return real - batch_mean(fake), fake - batch_mean(real)

    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        real, fake = self.relative(real_scores, fake_scores)
        return self.cost(real, +1.0) + self.cost(fake, -1.0)

    def generator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        real, fake = self.relative(real_scores, fake_scores)
        return self.cost(fake, +1.0) + self.cost(real, -1.0)


@component("divergence", "rasgan")
class RaSGAN(_Relativistic):
    """Relativistic average standard GAN: the logistic loss on relativistic scores (softplus form)."""

    def cost(self, relative: torch.Tensor, sign: float) -> torch.Tensor:
        return F.softplus(-sign * relative).mean()


@component("divergence", "ralsgan")
class RaLSGAN(_Relativistic):
    """Relativistic average LSGAN: relativistic scores pulled to +1 or -1 by squared distances."""

    def cost(self, relative: torch.Tensor, sign: float) -> torch.Tensor:
        return (relative - sign).square().mean()


@component("divergence", "rahinge")
class RaHinge(_Relativistic):
    """Relativistic average hinge loss: relativistic scores beyond +-margin cost nothing."""

    margin: float = param(1.0, gt=0, help="relativistic scores beyond +-margin cost nothing")

    def cost(self, relative: torch.Tensor, sign: float) -> torch.Tensor:
        return F.relu(self.margin - sign * relative).mean()


@component("divergence", "began")
class BEGAN(Divergence):
    """BEGAN's objective: the critic lowers L(x) - k_t L(G(z)), the generator lowers L(G(z)).

    After each generator update k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1): k_t
    grows when the fakes are reconstructed too well for the target ratio gamma = E[L(G(z))] / E[L(x)]
    and so shifts the critic's effort towards rejecting them. Lower gamma trades diversity for
    quality. The convergence measure M = L(x) + |gamma L(x) - L(G(z))| is logged as ``convergence``.
    """

    gamma: float = param(0.5, gt=0, le=1, help="diversity ratio E[L(G(z))] / E[L(x)] that k_t steers to")
    lambda_k: float = param(0.001, ge=0, help="learning rate of k_t")
    k_init: float = param(0.0, ge=0, le=1, help="k_0, the weight of the fake energies at the start")

    def __attrs_post_init__(self) -> None:
        self._k = torch.tensor(self.k_init)

    def check_critic(self, critic: Critic, critic_path: str, path: str) -> None:
        if not isinstance(critic, AutoencoderCritic):
            raise SpecError(f"{path} (began) needs reconstruction energies as scores: use type: autoencoder_critic, "
                            f"not {critic.type_name}", path=f"{critic_path}.type")

    def reset(self, device: torch.device) -> None:
        self._k = torch.tensor(self.k_init, device=device)

    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return at_least_float32(real_scores).mean() - self._k * at_least_float32(fake_scores).mean()

    def generator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return at_least_float32(fake_scores).mean()

    def update(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> dict[str, torch.Tensor]:
        # k_t steers every process's critic loss, so it follows the global batch's energies
        real_energy, fake_energy = process_mean(torch.stack([at_least_float32(real_scores).mean(),
                                                                 at_least_float32(fake_scores).mean()]))
        balance = self.gamma * real_energy - fake_energy
        self._k.copy_((self._k + self.lambda_k * balance).clamp(0.0, 1.0))  # in place, for CUDA graphs
        return {"k": self._k.clone(), "convergence": real_energy + balance.abs()}

    def state_dict(self) -> dict:
        return {"k": self._k.clone()}

    def load_state_dict(self, state: dict) -> None:
        self._k.copy_(state["k"])


@hookimpl
def genframe_components():
    return [Wasserstein, Hinge, NonSaturating, Minimax, LeastSquares, RaSGAN, RaLSGAN, RaHinge, BEGAN]
