"""Uses of a trained generator beyond sampling: reconstruct images, restore damaged ones, interpolate.

All three search the generator's latent space: the code whose image best explains an observation
is found by gradient descent through the frozen generator (the inverse problem), started from the
best of many candidate codes. Restoration changes only the observation model: inpainting compares
the observed pixels alone, denoising weighs the comparison by the noise level, and a standard
normal prior on the code makes the search a maximum a posteriori estimate.

Everything goes through the roles: the generator is the last link of the sampler chain; an
encoder whose codes it takes (``dim == latent_dim``) supplies starting codes when it can encode
new images, and its ``project`` keeps searched codes on the set its codes were trained on (GLO's
unit sphere); candidates are drawn through the sampler chain's prior and latent mappers.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Callable, Iterator, Literal

import attrs
import fsspec
import numpy as np
import torch

from genframe.build.system import System, instantiate
from genframe.build.context import BuildContext
from genframe.build.sampler import Sampler
from genframe.trained.loading import load_trained
from genframe.errors import GenframeError
from genframe.ops.images import image_grid, png_bytes, to_float, to_uint8
from genframe.components.registry import Registry, get_registry
from genframe.components.roles import Encoder, Generator, ReconstructionLoss
from genframe.storage import RunStorage


@attrs.define
class Trained:
    """A finished run rebuilt for inference (no data needed): its system, device and the data's recorded shape."""

    system: System
    device: torch.device
    data_shape: dict

    @property
    def generator(self) -> Generator:
        generator = self.system.components[self.system.sampler[-1]]
        assert isinstance(generator, Generator)
        return generator

    @property
    def encoder(self) -> Encoder | None:
        """The first declared encoder whose codes the generator takes, if any."""
        return next((c for c in self.system.components.values()
                     if isinstance(c, Encoder) and getattr(c, "dim", None) == self.generator.latent_dim), None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        shape = self.data_shape
        return shape["channels"], shape["image_size"], shape["image_size"]

    def project(self, codes: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        return codes if encoder is None else encoder.project(codes)

    def build_context(self) -> BuildContext:
        """What a component's ``setup`` needs, from the recorded data shape."""
        return BuildContext(device=self.device, seed=self.system.seed, **self.data_shape)


def load(run_url: str, *, device: str | None = None, checkpoint: str = "last",
         registry: Registry | None = None) -> Trained:
    """Rebuild the run at ``run_url`` with its ``last`` (or ``best``) weights."""
    system, dev = load_trained(run_url, device=device, registry=registry, checkpoint=checkpoint)
    trained = Trained(system, dev, RunStorage.open(run_url).data_shape())
    if trained.generator.num_classes:
        raise GenframeError(f"{run_url}: the generator {system.sampler[-1]!r} is class-conditional; reconstruct, "
                            "restore and interpolate need an unconditional one")
    return trained


# --------------------------------------------------------------------------- files


def read_array(url: str, key: str, what: str) -> np.ndarray:
    """An array from a .npy file, or the ``key`` entry of an .npz file (as ``genframe sample`` writes)."""
    try:
        with fsspec.open(url, "rb") as fh:
            raw = fh.read()
    except (OSError, ValueError, ImportError) as exc:
        raise GenframeError(f"{what} {url}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError:
        raise GenframeError(f"{what} {url}: not a .npy or .npz file") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        if key not in loaded.files:
            raise GenframeError(f"{what} {url}: the .npz file has no {key!r} array (it has: "
                                f"{', '.join(loaded.files) or 'none'})")
        return loaded[key]
    return loaded


def read_images(url: str, trained: Trained) -> torch.Tensor:
    """uint8 (N, C, H, W) images of the run's shape from an .npz (key ``images``) or .npy file."""
    array = read_array(url, "images", "--images")
    if array.ndim == 3:
        array = array[:, None]
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] == 0:
        raise GenframeError(f"--images {url}: expected uint8 images (N, C, H, W) or (N, H, W), got "
                            f"{array.dtype} {array.shape}")
    if tuple(array.shape[1:]) != trained.image_shape:
        raise GenframeError(f"--images {url}: images are {tuple(array.shape[1:])} (C, H, W) but the run's "
                            f"generator makes {trained.image_shape}")
    return torch.from_numpy(array.copy())


def read_mask(url: str, shape: torch.Size) -> torch.Tensor:
    """A 0/1 mask (1 = observed) broadcast to ``shape``: (H, W), (N, H, W) or (N, C, H, W)."""
    array = read_array(url, "mask", "--mask")
    mask = torch.from_numpy(np.asarray(array, dtype=np.float32))
    if mask.dim() == 3:  # (N, H, W): one mask per image, for all its channels
        mask = mask.unsqueeze(1)
    try:
        mask = torch.broadcast_to(mask, shape).clone()
    except RuntimeError:
        raise GenframeError(f"--mask {url}: shape {tuple(array.shape)} does not fit images of shape "
                            f"{tuple(shape)}; give (H, W), (N, H, W) or (N, C, H, W)") from None
    if not torch.all((mask == 0) | (mask == 1)):
        raise GenframeError(f"--mask {url}: values must be 0 (missing) or 1 (observed)")
    return mask


def write_file(url: str, data: bytes) -> None:
    try:
        with fsspec.open(url, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise GenframeError(f"{url}: cannot write: {exc.strerror or exc}") from None


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each uint8 image against its reference (inf when equal)."""
    mse = (images.double() - reference.double()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(255.0 ** 2 / mse)


# --------------------------------------------------------------------------- code search


@attrs.frozen
class Search:
    """How codes are searched for: Adam on the codes for ``steps`` steps, from the best of ``candidates``."""

    steps: int = attrs.field(default=300, validator=attrs.validators.ge(0))
    lr: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    candidates: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    seed: int = 0


@contextlib.contextmanager
def _frozen(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Evaluation mode and no weight gradients: images are then independent of their batch."""
    states = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    for m in modules:
        m.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, training, grads in states:
            m.train(training)
            for p, g in zip(m.parameters(), grads):
                p.requires_grad_(g)


def _chain_modules(trained: Trained) -> list[torch.nn.Module]:
    return [c for c in trained.system.components.values() if isinstance(c, torch.nn.Module)]


def _latent_candidates(trained: Trained, n: int, generator: torch.Generator) -> torch.Tensor:
    """Generator inputs drawn through the sampler chain's prior and latent mappers."""
    chain = [trained.system.components[name] for name in trained.system.sampler[:-1]]
    x = chain[0].sample(n, device=trained.device, generator=generator)
    for mapper in chain[1:]:
        x = mapper(x)
    return x


def _weighted_distances(generated: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, K): sum over pixels of weights[n] * (generated[k] - targets[n])^2, by matrix products."""
    g, y, w = generated.flatten(1), targets.flatten(1), weights.flatten(1)
    return (w * y.square()).sum(1, keepdim=True) - 2.0 * (w * y) @ g.T + w @ g.square().T


@torch.no_grad()
def _starting_codes(trained: Trained, targets: torch.Tensor, weights: torch.Tensor, search: Search,
                    generator: torch.Generator) -> torch.Tensor:
    """For each target, the candidate code whose image is closest on the observed pixels.

    Candidates are shared samples of the sampler chain, plus each image's own code when the
    encoder can encode new images (amortised inference is usually close already).
    """
    pool = trained.project(_latent_candidates(trained, search.candidates, generator))
    images = torch.cat([trained.generator(chunk) for chunk in pool.split(search.batch_size)])
    distances = _weighted_distances(images, targets, weights)
    best, best_codes = distances.min(dim=1).values, pool[distances.argmin(dim=1)]
    encoder = trained.encoder
    if encoder is not None and encoder.encodes_new_images:
        own = trained.project(encoder.encode(targets, torch.arange(targets.shape[0], device=targets.device)))
        own_distances = (weights * (trained.generator(own) - targets).square()).flatten(1).sum(1)
        better = own_distances < best
        best_codes = torch.where(better[:, None], own, best_codes)
    return best_codes


def search_codes(trained: Trained, targets: torch.Tensor, data_term: Callable[[torch.Tensor, slice], torch.Tensor],
                 *, weights: torch.Tensor | None = None, latent_weight: float = 0.0,
                 search: Search = Search()) -> torch.Tensor:
    """Codes minimising ``data_term(G(code), rows) + latent_weight * |code|^2 / 2`` for float ``targets``.

    ``data_term`` returns the sum over the images of a batch (``rows`` says which targets they are);
    ``weights`` (1 = observed pixel) choose the starting codes. Images are searched for in batches
    of ``search.batch_size`` to bound memory; in evaluation mode the generator treats each image
    independently, and each batch draws its own candidates. Returns the projected codes (N, latent_dim).
    """
    weights = torch.ones_like(targets) if weights is None else weights
    generator = torch.Generator(device=trained.device).manual_seed(search.seed)
    found = []
    with _frozen(_chain_modules(trained)):
        for start in range(0, targets.shape[0], search.batch_size):
            rows = slice(start, start + search.batch_size)
            z = _starting_codes(trained, targets[rows], weights[rows], search, generator).clone().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=search.lr)
            for _ in range(search.steps):
                codes = trained.project(z)
                loss = data_term(trained.generator(codes), rows)
                if latent_weight:
                    loss = loss + latent_weight * 0.5 * codes.square().sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            found.append(trained.project(z).detach())
    return torch.cat(found)


@torch.no_grad()
def decode(trained: Trained, codes: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images in [-1, 1] of generator inputs, through the frozen generator."""
    with _frozen(_chain_modules(trained)):
        return torch.cat([trained.generator(chunk) for chunk in codes.split(batch_size)])


# --------------------------------------------------------------------------- reconstruct


@attrs.frozen
class Reconstruction:
    """Codes found for images, the images they generate (uint8) and per-image errors."""

    codes: torch.Tensor
    images: torch.Tensor
    loss: torch.Tensor  # the reconstruction loss of each image
    psnr: torch.Tensor  # dB against the given image


def _loss_component(loss: str | dict | ReconstructionLoss, registry: Registry | None) -> ReconstructionLoss:
    if isinstance(loss, ReconstructionLoss):
        return loss
    config = {"type": loss} if isinstance(loss, str) else dict(loss)
    return instantiate("reconstruction_loss", config, "--loss", "", registry or get_registry())


def reconstruct(trained: Trained, images: torch.Tensor, *, loss: str | dict | ReconstructionLoss = "l2",
                search: Search = Search(), registry: Registry | None = None) -> Reconstruction:
    """Find the code of each uint8 image by optimisation and report how well its image matches.

    ``loss`` is a reconstruction loss (type name, spec mapping or component): what is minimised and
    reported per image.
    """
    criterion = _loss_component(loss, registry)
    criterion.setup(trained.build_context())  # losses with weights (vgg) load them
    targets = to_float(images.to(trained.device))

    def data_term(generated: torch.Tensor, rows: slice) -> torch.Tensor:
        return criterion(generated, targets[rows]) * generated.shape[0]

    codes = search_codes(trained, targets, data_term, search=search)
    generated = decode(trained, codes)
    with torch.no_grad():
        per_image = torch.stack([criterion(generated[i:i + 1], targets[i:i + 1]) for i in range(len(codes))])
    out = to_uint8(generated).cpu()
    return Reconstruction(codes.cpu(), out, per_image.cpu(), psnr(out, images.cpu()))


# --------------------------------------------------------------------------- restore


@attrs.frozen
class Restoration:
    """Restored uint8 images and the codes they come from."""

    codes: torch.Tensor
    images: torch.Tensor


#: Observation noise assumed for inpainting without --noise (0-1 intensity scale): observed pixels are nearly exact.
INPAINTING_SIGMA = 0.02


def restore(trained: Trained, observed: torch.Tensor, *, mask: torch.Tensor | None = None,
            noise: float | None = None, latent_weight: float = 1.0, search: Search = Search()) -> Restoration:
    """Maximum a posteriori restoration: the image G(z) maximising p(observed | G(z)) p(z).

    The observation model is Gaussian noise of std ``noise`` (0-1 intensity scale) on the pixels
    where ``mask`` is 1 (all of them without a mask), so -log p(observed | x) is the masked squared
    error over 2 sigma^2; ``latent_weight`` scales -log p(z) = |z|^2 / 2 of a standard normal prior
    (0 trusts the observation alone). Without noise, observed pixels are kept as observed and only
    the missing ones are filled in.
    """
    if mask is None and noise is None:
        raise GenframeError("restore: give a mask (inpainting), a noise level (denoising), or both")
    if noise is not None and noise <= 0:
        raise GenframeError(f"restore: noise must be a positive standard deviation, got {noise}")
    targets = to_float(observed.to(trained.device))
    weights = torch.ones_like(targets) if mask is None else mask.to(trained.device, torch.float32)
    sigma = 2.0 * (noise if noise is not None else INPAINTING_SIGMA)  # images are in [-1, 1]: twice the scale

    def data_term(generated: torch.Tensor, rows: slice) -> torch.Tensor:
        return (weights[rows] * (generated - targets[rows]).square()).sum() / (2.0 * sigma ** 2)

    codes = search_codes(trained, targets, data_term, weights=weights, latent_weight=latent_weight, search=search)
    restored = decode(trained, codes)
    if noise is None:
        restored = weights * targets + (1.0 - weights) * restored
    return Restoration(codes.cpu(), to_uint8(restored).cpu())


# --------------------------------------------------------------------------- interpolate


def interpolate(trained: Trained, *, images: torch.Tensor | None = None,
                source: Literal["auto", "images", "codes", "prior"] = "auto", pairs: int = 8, steps: int = 8,
                seed: int = 0, search: Search = Search()) -> torch.Tensor:
    """uint8 strips (pairs, columns, C, H, W) of images along straight lines between two codes.

    ``source``: ``images`` interpolates between the codes found for consecutive pairs of the given
    images (which frame the strip); ``codes`` between the learned codes of random training images
    (GLO and GLANN keep them in their code table); ``prior`` between samples of the sampler's prior,
    passed through its latent mappers. ``auto`` takes images when given, else a code table when
    the run has one, else the prior. Codes are projected as in training (GLO: onto the sphere).
    """
    if pairs < 1 or steps < 2:
        raise GenframeError(f"interpolate: needs pairs >= 1 and steps >= 2, got pairs={pairs}, steps={steps}")
    source = _interpolation_source(trained, source, images)
    generator = torch.Generator(device=trained.device).manual_seed(seed)
    t = torch.linspace(0.0, 1.0, steps, device=trained.device).view(1, steps, 1)
    if source == "prior":
        with _frozen(_chain_modules(trained)):
            frames = Sampler(trained.system, trained.device).interpolation(pairs, steps, generator)
        return to_uint8(frames).cpu().reshape(pairs, steps, *trained.image_shape)
    if source == "codes":
        count = trained.data_shape["num_examples"]
        pairs = min(pairs, count // 2)
        picked = torch.randperm(count, device=trained.device, generator=generator)[:2 * pairs]
        blank = torch.zeros(2 * pairs, *trained.image_shape, device=trained.device)
        with torch.no_grad():
            ends = trained.encoder.encode(blank, picked)
        framed = None
    else:
        assert images is not None
        pairs = min(pairs, images.shape[0] // 2)
        if pairs == 0:
            raise GenframeError("interpolate: --images needs at least two images")
        chosen = images[:2 * pairs]
        ends = reconstruct(trained, chosen, search=search).codes.to(trained.device)
        framed = chosen.reshape(pairs, 2, *trained.image_shape)
    a, b = ends[0::2], ends[1::2]
    line = trained.project((a[:, None] * (1 - t) + b[:, None] * t).reshape(pairs * steps, -1))
    strips = to_uint8(decode(trained, line)).cpu().reshape(pairs, steps, *trained.image_shape)
    if framed is not None:
        strips = torch.cat([framed[:, :1], strips, framed[:, 1:]], dim=1)
    return strips


def _interpolation_source(trained: Trained, source: str, images: torch.Tensor | None) -> str:
    encoder = trained.encoder
    has_table = encoder is not None and not encoder.encodes_new_images
    if source == "auto":
        return "images" if images is not None else "codes" if has_table else "prior"
    if source == "images" and images is None:
        raise GenframeError("interpolate: source images needs --images FILE")
    if source == "codes" and not has_table:
        raise GenframeError("interpolate: source codes needs a run with a code table (latent_codes encoder, as in "
                            "GLO and GLANN) whose codes the generator takes; give --images FILE, or use source prior")
    return source


def strips_png(strips: torch.Tensor) -> bytes:
    """One PNG with a strip per row."""
    return png_bytes(image_grid(strips.flatten(0, 1), nrow=strips.shape[1]))


def pairs_png(originals: torch.Tensor, results: torch.Tensor, per_row: int = 8) -> bytes:
    """One PNG of (original, result) pairs side by side, ``per_row`` pairs per row."""
    interleaved = torch.stack([originals, results], dim=1).flatten(0, 1)
    return png_bytes(image_grid(interleaved, nrow=2 * max(1, min(per_row, originals.shape[0]))))


def finite_mean(values: torch.Tensor) -> float:
    """Mean of the finite values (a perfect reconstruction has infinite PSNR), or inf if there are none."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.inf
