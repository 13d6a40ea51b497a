"""Fitting a prior to learned codes, so that a model without a sampler of its own (GLO, an AE) can be sampled."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from genframe import Component, Encoder, Prior, SpecError, StageContext, Trainer, component, hookimpl, ref


@runtime_checkable
class FittablePrior(Protocol):
    """A prior with parameters that can be estimated from example codes (``fitted_gaussian``, or a plugin's)."""

    def fit(self, codes: torch.Tensor) -> torch.Tensor:
        """Estimate the parameters from ``codes`` (N x dim); return their mean negative log-likelihood."""


@component("trainer", "fit_prior")
class FitPrior(Trainer):
    """Fit a prior to an encoder's codes of the training data, in one step (GLO + Gaussian, AE + Gaussian).

    GLO learns a code per image but no way to draw new codes; Bojanowski et al. sample from a
    Gaussian fitted to the codes, the baseline GLANN's IMLE mapper improves on. Run after the
    autoencoding stage, this makes that baseline a spec: the fitted prior is checkpointed with the
    other components and heads the sampler chain.
    """

    prior: str = ref("prior", "prior", help="the prior to fit: one with a fit(codes) method, e.g. fitted_gaussian")
    encoder: str = ref("encoder", "encoder", read_only=True,
                       help="the encoder whose codes of the training images are fitted")

    def check(self, components: dict[str, Component], path: str) -> None:
        prior, encoder = components[self.prior], components[self.encoder]
        if not isinstance(prior, FittablePrior):
            raise SpecError(f"prior {self.prior!r} is a {prior.type_name}, which has no parameters to fit; "
                            "declare a fitted_gaussian", path=f"{path}.prior")
        code_dim = getattr(encoder, "dim", prior.dim)
        if code_dim != prior.dim:
            raise SpecError(f"encoder {self.encoder!r} makes {code_dim}-d codes but prior {self.prior!r} has dim "
                            f"{prior.dim}", path=f"{path}.prior")

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._prior = ctx.component(self.prior, Prior)
        self._encoder = ctx.component(self.encoder, Encoder)

    def total_steps(self) -> int:
        return 1

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        codes = self._encoder.encode_all(self._ctx.images)
        return {"nll": self._prior.fit(codes)}


@hookimpl
def genframe_components():
    return [FitPrior]
