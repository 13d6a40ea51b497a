"""genframe: compose, train and compare generative image models from declarative YAML specs."""

from .errors import GenframeError, SpecError
from .hookspecs import hookimpl
from .params import param, ref
from .roles import (Component, Critic, Dataset, Divergence, Encoder, FeatureExtractor, Generator,
                    LatentDivergence, LatentMapper, LipschitzConstraint, Metric, ModuleComponent, Optimizer,
                    Posterior, Prior, ReconstructionLoss, Schedule, Trainer, component)

__version__ = "0.1.0"

__all__ = [
    "Component", "Critic", "Dataset", "Divergence", "Encoder", "FeatureExtractor", "GenframeError", "Generator",
    "LatentDivergence", "LatentMapper", "LipschitzConstraint", "Metric", "ModuleComponent", "Optimizer",
    "Posterior", "Prior", "ReconstructionLoss", "Schedule", "SpecError", "Trainer", "component", "hookimpl",
    "param", "ref",
]
