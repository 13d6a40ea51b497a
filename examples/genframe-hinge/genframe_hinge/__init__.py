"""The hinge adversarial loss (Lim & Ye 2017; Miyato et al. 2018) as a pip-installable genframe plugin."""

import torch
import torch.nn.functional as F

import genframe


@genframe.component("divergence", "hinge")
class Hinge(genframe.Divergence):
    """Hinge loss: the critic pushes real scores above +margin and fake scores below -margin."""

    margin: float = genframe.param(1.0, gt=0, help="scores beyond +-margin cost the critic nothing")

    def critic_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        return F.relu(self.margin - real_scores).mean() + F.relu(self.margin + fake_scores).mean()

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return -fake_scores.mean()


@genframe.hookimpl
def genframe_components():
    return [Hinge]
