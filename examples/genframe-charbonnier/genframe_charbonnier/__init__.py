"""The Charbonnier reconstruction loss (a smooth L1) as a pip-installable genframe plugin."""

import torch

import genframe


@genframe.component("reconstruction_loss", "charbonnier")
class Charbonnier(genframe.ReconstructionLoss):
    """Charbonnier loss sqrt((x - y)^2 + eps^2): L1's robustness with a smooth minimum."""

    eps: float = genframe.param(1e-3, gt=0, help="below this error the loss behaves like L2, above it like L1")

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        error = (genframe.at_least_float32(reconstruction) - genframe.at_least_float32(target)).square() + self.eps**2
        return error.sqrt().flatten(1).sum(1).mean()


@genframe.hookimpl
def genframe_components():
    return [Charbonnier]
