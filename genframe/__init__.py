"""genframe: compose, train and compare generative image models from declarative YAML specs.

This module is the public API: everything a component, trainer, metric or observer needs, and
all that the built-in plugins import. Names here follow semantic versioning (``API_VERSION``);
the subpackages behind them (``genframe.components``, ``genframe.training``...) may change
between minor releases. See docs/plugins.md.
"""

from genframe.build.context import BuildContext
from genframe.components.hooks import RunInfo, hookimpl
from genframe.components.params import param, ref
from genframe.components.roles import (Component, Critic, Dataset, Divergence, Encoder, FeatureExtractor, Field,
                                       Generator, LatentDivergence, LatentMapper, LipschitzConstraint, Metric,
                                       ModuleComponent, Optimizer, Posterior, Prior, ProbabilityPath, ReconstructionLoss,
                                       Schedule, Solver, TimeNetwork, Trainer, component)
from genframe.errors import GenframeError, SpecError
from genframe.evaluation.metrics import (generated_features, image_digest, protocol_key, real_features, real_subset,
                                         resolve_extractor)
from genframe.ops.extras import require
from genframe.ops.distributed import batch_mean, gather_rows, per_example, process_mean, rows_used
from genframe.ops.images import image_grid, png_bytes, resize_uint8, to_float, to_uint8
from genframe.ops.neighbours import nearest_neighbours
from genframe.ops.normalization import calibrate_batch_norm
from genframe.ops.precision import at_least_float32
from genframe.reporting.curves import loss_curves_png
from genframe.training.batches import EpochBatches
from genframe.training.context import StageContext
from genframe.training.optimisers import Optimisers

from genframe._version import __version__
#: Version of the plugin API in this module: the major number changes when a name is removed or a
#: signature changes incompatibly; plugins may require ``genframe.API_VERSION >= (1, n)``.
API_VERSION = (1, 5)

__all__ = [
    # roles and how a component declares itself
    "Component", "ModuleComponent", "Dataset", "Prior", "Posterior", "Encoder", "Generator", "Critic",
    "LatentMapper", "Divergence", "LipschitzConstraint", "ReconstructionLoss", "LatentDivergence", "Optimizer",
    "Schedule", "Trainer", "Metric", "FeatureExtractor", "TimeNetwork", "ProbabilityPath", "Solver", "Field",
    "component", "param", "ref", "hookimpl",
    # errors
    "GenframeError", "SpecError",
    # what components and trainers are handed
    "BuildContext", "StageContext", "EpochBatches", "Optimisers",
    # losses and gathers that stay correct under torchrun
    "per_example", "batch_mean", "process_mean", "gather_rows", "rows_used",
    # images
    "to_float", "to_uint8", "resize_uint8", "image_grid", "png_bytes",
    # search
    "nearest_neighbours",
    # batch-norm statistics for sampling
    "calibrate_batch_norm",
    # losses computed in float32 under bf16 autocast, and in float64 in an fp64 run
    "at_least_float32",
    # metrics: features of generated and real images, and the identities protocols record
    "generated_features", "real_features", "real_subset", "image_digest", "protocol_key", "resolve_extractor",
    # observers
    "RunInfo", "loss_curves_png",
    # optional packages: import one, or say in one line which extra installs it
    "require",
    "API_VERSION", "__version__",
]
