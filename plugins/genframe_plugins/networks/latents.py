"""GLO's per-image latent code table, and the projection that keeps codes on a bounded set.

GLO learns one free code per training image instead of an encoder network. Without a constraint the
codes could grow while the generator's weights shrink, so they are projected back onto the unit
sphere (or ball) after every optimiser step.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from genframe import (BuildContext, Encoder, GenframeError, Posterior, component, hookimpl, param, per_example,
                      rows_used, to_float)

PROJECTIONS = ("sphere", "ball", "none")


def project(codes: torch.Tensor, kind: str) -> torch.Tensor:
    """Rows of ``codes`` mapped onto the unit sphere, into the unit ball, or left alone (``none``).

    Differentiable and out of place, so encoders and priors can use it inside a forward pass.
    """
    if kind == "none":
        return codes
    norms = codes.norm(dim=-1, keepdim=True)
    if kind == "sphere":
        return codes / norms.clamp_min(torch.finfo(codes.dtype).tiny)
    if kind == "ball":
        return codes / norms.clamp_min(1.0)
    raise GenframeError(f"projection: unknown kind {kind!r}; allowed: {', '.join(PROJECTIONS)}")


def principal_scores(images: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Coordinates of each flattened image on the first ``dim`` principal components, computed on its device.

    Exact: eigenvectors (in float64) of the pixel covariance, or of the image Gram matrix when there
    are fewer images than pixels. A randomised SVD is visibly off on the trailing components of image
    data. When the data has fewer directions than ``dim``, the remaining columns are Gaussian noise
    at the average scale of the principal components, so they neither vanish nor dominate.
    """
    x = to_float(images.flatten(1))
    x = x - x.mean(dim=0)
    n, d = x.shape
    q = min(dim, n, d)
    if d <= n:  # pixels x pixels covariance: scores are the projections on its eigenvectors
        _, vectors = torch.linalg.eigh((x.T @ x).double())
        scores = x @ vectors[:, -q:].flip(1).to(x.dtype)
    else:  # images x images Gram matrix: its eigenvectors scaled by the singular values are the scores
        values, vectors = torch.linalg.eigh((x @ x.T).double())
        scores = (vectors[:, -q:] * values[-q:].clamp_min(0).sqrt()).flip(1).to(x.dtype)
    if q == dim:
        return scores
    scale = scores.std(dim=0).mean() if n > 1 else scores.new_tensor(0.0)
    noise = torch.randn(n, dim - q, generator=generator, device=generator.device).to(x.device)
    return torch.cat([scores, noise * (scale if scale > 0 else 1.0)], dim=1)


@component("encoder", "latent_codes")
class LatentCodes(Encoder):
    """A learnable code per training image (GLO), kept on the unit sphere or ball.

    Initialised from PCA as in the GLO paper, so that training starts from codes that already
    separate the images along their main directions of variation.
    """

    dim: int = param(64, ge=1, help="size of one code (the generator's latent_dim)")
    projection: Literal["sphere", "ball", "none"] = param(
        "sphere", help="set the codes are projected onto after each step: unit sphere, unit ball, or none")
    init: Literal["pca", "random"] = param(
        "pca", help="pca: principal components of the training images (GLO); random: Gaussian")
    noise: float = param(0.0, ge=0.0, help="std of Gaussian noise added to each code (then projected) before "
                                           "training decodes it: the generator learns a neighbourhood per code")

    encodes_new_images = False  # a code exists only for each training image

    def setup(self, ctx: BuildContext) -> None:
        generator = torch.Generator().manual_seed(ctx.seed)
        if ctx.images is None:  # sampling only: a checkpoint will overwrite the table
            codes = torch.zeros(ctx.num_examples, self.dim, device=ctx.device)
        elif self.init == "pca":
            codes = principal_scores(ctx.images, self.dim, generator)
        else:
            codes = torch.randn(ctx.num_examples, self.dim, generator=generator).to(ctx.device)
        self.codes = nn.Parameter(project(codes, self.projection))

    def encode(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        rows_used(self.codes, indices)  # under torchrun only these rows' gradients are exchanged
        return self.codes[indices]

    def posterior(self, images: torch.Tensor, indices: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> Posterior:
        """The codes, jittered by ``noise`` when it is set, so that points near a code decode to its image too.

        A latent model fitted afterwards (GLANN's mapper) lands near codes rather than on them; a generator
        that has only ever seen the codes themselves draws such points as blends of neighbouring images.
        The price is blur where neighbourhoods overlap (the GLANN ablation in benchmarks/RESULTS.md).
        """
        if self.noise == 0:
            return super().posterior(images, indices, generator=generator)
        codes = self.encode(images, indices)
        eps = per_example(lambda n: torch.randn((n, self.dim), device=codes.device, dtype=codes.dtype,
                                                generator=generator), codes.shape[0])
        return Posterior(sample=project(codes + self.noise * eps, self.projection), mean=codes)

    def project(self, codes: torch.Tensor) -> torch.Tensor:
        return project(codes, self.projection)

    @torch.no_grad()
    def after_update(self) -> None:
        self.codes.copy_(project(self.codes, self.projection))

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """The whole table in one copy (a snapshot: later steps update the table in place)."""
        if images.shape[0] != self.codes.shape[0]:
            raise GenframeError(f"latent_codes holds codes for {self.codes.shape[0]} images, "
                                f"asked for {images.shape[0]}")
        return self.codes.detach().clone()


@hookimpl
def genframe_components():
    return [LatentCodes]
