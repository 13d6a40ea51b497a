"""Batch-norm statistics measured on the inputs a model will be sampled with.

A network trained with batch norm samples with the running statistics of its training batches. When
those batches are not drawn like the sampling inputs (IMLE trains on the noise matched to its
targets, a biased selection of the prior), the statistics are off at sampling time. Measuring them
again on fresh inputs, after training, is the usual remedy (as SWA does for averaged weights).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Set the running statistics of the batch norms that ``model`` uses in evaluation mode to the
    exact average of their batch statistics over ``inputs`` (an iterable of batches; give equal sizes,
    as each batch counts alike). Returns how many batch norms were measured.

    The model runs in evaluation mode with only its batch norms in training mode, so the path that
    samples is the one measured (an EMA wrapper's average, not its live weights). Batch norms that
    path does not reach keep their statistics, as do all when a forward pass fails; every module's
    mode and momentum are restored.
    """
    norms = [m for m in model.modules() if isinstance(m, _BATCH_NORMS) and m.track_running_stats]
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    saved = {m: (m.momentum, [b.clone() for b in m.buffers()]) for m in norms}
    reached: set[nn.Module] = set()
    hooks = [m.register_forward_pre_hook(lambda module, _: reached.add(module)) for m in norms]
    measured = False
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
            m.train()
        for batch in inputs:
            model(batch)
        measured = True
    finally:
        for hook in hooks:
            hook.remove()
        for m, (momentum, buffers) in saved.items():
            m.momentum = momentum
            if m not in reached or not measured:  # a failed measurement leaves the statistics as they were
                for buffer, old in zip(m.buffers(), buffers):
                    buffer.copy_(old)
        for m, training in modes.items():
            m.training = training
    return len(reached)
