"""Sample-quality metrics: FID, Inception Score, KID and improved precision/recall.

They reproduce the reference implementations' numbers on the same images (torch-fidelity for FID,
IS and KID, pytorch-fid for the Frechet distance of given moments), and record their protocol —
the feature extractor's weights digest, resizing and precision, the sample counts and seeds, the
identity of the reference images — next to every number, since most disputes about these metrics
are disputes about the protocol.

Everything heavy stays on the device: features are extracted there (see ``genframe.evaluation.metrics``),
FID's moments are accumulated there in float64, and its square-root trace is taken by symmetric
eigendecompositions in float64, which are accurate and fast on a GPU, where scipy's ``sqrtm``
needs the CPU and tens of seconds. Statistics of the reference images are cached (``.pt`` or
``.npz`` through fsspec) together with their protocol, and statistics of another protocol are
refused rather than compared.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any, Callable, ClassVar

import attrs
import fsspec
import numpy as np
import torch

from genframe import (FeatureExtractor, GenframeError, Metric, component, generated_features, hookimpl,
                      image_digest, param, protocol_key, real_features, real_subset, resolve_extractor)

STATS_FORMAT = "genframe-fid-statistics/1"


# --------------------------------------------------------------------------- linear algebra


def _math_device(device: torch.device) -> torch.device:
    """MPS has no float64: its float64 work runs on the CPU."""
    return torch.device("cpu") if device.type == "mps" else device


@torch.no_grad()
def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix, in float64.

    Eigenvalues that rounding pushed below zero are clamped: a covariance has none.
    """
    values, vectors = torch.linalg.eigh(matrix.double())
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


@torch.no_grad()
def sqrt_trace_product(sigma1: torch.Tensor, sigma2: torch.Tensor, *, sqrt_sigma1: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """tr sqrt(sigma1 sigma2) for covariance matrices, in float64.

    sigma1 sigma2 is not symmetric, but it is similar to sqrt(sigma1) sigma2 sqrt(sigma1), which is
    symmetric positive semi-definite with the same eigenvalues; so the trace of the square root is
    the sum of the square roots of that matrix's eigenvalues. ``sqrt_sigma1`` skips one
    decomposition when the same sigma1 (a reference) is used again.
    """
    root = psd_sqrt(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
    middle = root @ sigma2.double() @ root
    middle = (middle + middle.T) / 2
    return torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()


@torch.no_grad()
def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor, *,
                     sqrt_sigma1: torch.Tensor | None = None) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), in float64."""
    diff = mu1.double() - mu2.double()
    trace = sqrt_trace_product(sigma1, sigma2, sqrt_sigma1=sqrt_sigma1)
    return float(diff @ diff + sigma1.double().trace() + sigma2.double().trace() - 2 * trace)


@torch.no_grad()
def moments(features: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased covariance) of the rows, accumulated in float64 where the features are.

    Sums are taken around the first chunk's mean, so E[xx^T] - mu mu^T does not cancel away the
    digits of a small covariance riding on a large mean.
    """
    n = features.shape[0]
    if n < 2:
        raise GenframeError(f"fid: the covariance needs at least 2 images, got {n}")
    shift = features[:chunk].double().mean(dim=0)
    total = torch.zeros_like(shift)
    products = torch.zeros(shift.shape[0], shift.shape[0], dtype=torch.float64, device=features.device)
    for start in range(0, n, chunk):
        centred = features[start:start + chunk].double() - shift
        total += centred.sum(dim=0)
        products.addmm_(centred.T, centred)
    mean = total / n
    return shift + mean, (products - n * torch.outer(mean, mean)) / (n - 1)


@torch.no_grad()
def inception_score(logits: torch.Tensor, splits: int = 10, shuffle_seed: int | None = 2020) -> tuple[float, float]:
    """(mean, population std) over ``splits`` of exp E_x KL(p(y|x) || p(y)), in float64.

    ``shuffle_seed`` permutes the images with numpy's ``RandomState(seed).permutation`` before
    splitting, as torch-fidelity does; None keeps the drawing order, as the original code did.
    """
    n = logits.shape[0]
    if n < splits:
        raise GenframeError(f"inception_score: {n} images cannot be cut into {splits} splits")
    if shuffle_seed is not None:
        order = np.random.RandomState(shuffle_seed).permutation(n)
        logits = logits[torch.from_numpy(order).to(logits.device)]
    log_p = torch.log_softmax(logits.double(), dim=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp())
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(correction=0))


@torch.no_grad()
def kernel_inception_distance(generated: torch.Tensor, real: torch.Tensor, *, subsets: int = 100,
                              subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
                              coef0: float = 1.0, seed: int = 2020, group: int = 10) -> tuple[float, float]:
    """(mean, population std) of the unbiased MMD^2 with a polynomial kernel over random subsets.

    Subsets are drawn as torch-fidelity draws them (numpy ``RandomState(seed)``, each subset's
    generated indices, then its real ones, without replacement), so the same features give the
    same subsets; kernels are evaluated in float64, ``group`` subsets at a time.
    """
    d = generated.shape[1]
    gamma = 1.0 / d if gamma is None else gamma
    rng = np.random.RandomState(seed)
    picks = [(rng.choice(generated.shape[0], subset_size, replace=False),
              rng.choice(real.shape[0], subset_size, replace=False)) for _ in range(subsets)]
    m = subset_size
    values = []
    for start in range(0, subsets, group):
        chunk = picks[start:start + group]
        x = generated[torch.from_numpy(np.stack([a for a, _ in chunk])).to(generated.device)].double()
        y = real[torch.from_numpy(np.stack([b for _, b in chunk])).to(real.device)].double()

        def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (torch.bmm(a, b.transpose(1, 2)) * gamma + coef0) ** degree

        k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
        off_xx = k_xx.sum(dim=(1, 2)) - k_xx.diagonal(dim1=1, dim2=2).sum(dim=1)
        off_yy = k_yy.sum(dim=(1, 2)) - k_yy.diagonal(dim1=1, dim2=2).sum(dim=1)
        values.append((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum(dim=(1, 2)) / (m * m))
    result = torch.cat(values)
    return float(result.mean()), float(result.std(correction=0))


def _rows_per_block(columns: int, device: torch.device) -> int:
    """Rows of a float64 distance block that fit the memory budget (a share of free memory on CUDA)."""
    budget = 256 * 2**20
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(min(max(free // 8, budget), 2 * 2**30))
    return max(1, budget // (8 * 3 * max(columns, 1)))


@torch.no_grad()
def kth_neighbour_distances(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (the row itself is at distance 0)."""
    if points.shape[0] <= k:
        raise GenframeError(f"precision_recall: k={k} needs more than {k} images per set, got {points.shape[0]}")
    x = points.double()
    step = _rows_per_block(x.shape[0], x.device)
    return torch.cat([torch.cdist(x[s:s + step], x).kthvalue(k + 1, dim=1).values
                      for s in range(0, x.shape[0], step)])


@torch.no_grad()
def inside_any_ball(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each query row: does some centre lie within its radius (distance <= radius)?"""
    q, c = queries.double(), centres.double()
    step = _rows_per_block(c.shape[0], q.device)
    return torch.cat([(torch.cdist(q[s:s + step], c) <= radii).any(dim=1) for s in range(0, q.shape[0], step)])


@torch.no_grad()
def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls, in float64.

    Precision: the share of generated images inside the real manifold (the union of balls around
    each real image reaching its k-th nearest real neighbour); recall: the share of real images
    inside the generated manifold built the same way.
    """
    precision = inside_any_ball(generated, real, kth_neighbour_distances(real, k)).double().mean()
    recall = inside_any_ball(real, generated, kth_neighbour_distances(generated, k)).double().mean()
    return float(precision), float(recall)


# --------------------------------------------------------------------------- reference statistics


@attrs.define(eq=False)
class Statistics:
    """Float64 moments of a set of features and the protocol they were made under."""

    mu: torch.Tensor
    sigma: torch.Tensor
    protocol: dict
    _sqrt_sigma: torch.Tensor | None = None

    def sqrt_sigma(self) -> torch.Tensor:
        """sqrt(sigma), computed once: a reference is compared with every new set of samples."""
        if self._sqrt_sigma is None:
            self._sqrt_sigma = psd_sqrt(self.sigma)
        return self._sqrt_sigma

    def to(self, device: torch.device) -> "Statistics":
        if self.mu.device == device:
            return self
        return Statistics(self.mu.to(device), self.sigma.to(device), self.protocol)

    def save(self, url: str) -> None:
        """Write to a ``.pt`` or ``.npz`` file (fsspec URL), atomically where the store allows."""
        mu, sigma = self.mu.double().cpu(), self.sigma.double().cpu()
        buffer = io.BytesIO()
        if url.endswith(".npz"):  # also readable by pytorch-fid, which looks for mu and sigma
            np.savez(buffer, mu=mu.numpy(), sigma=sigma.numpy(), protocol=np.array(json.dumps(self.protocol)),
                     format=np.array(STATS_FORMAT))
        else:
            torch.save({"format": STATS_FORMAT, "protocol": json.dumps(self.protocol), "mu": mu, "sigma": sigma},
                       buffer)
        fs, path = fsspec.core.url_to_fs(url)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        temp = f"{path}.{uuid.uuid4().hex}.tmp"
        with fs.open(temp, "wb") as fh:
            fh.write(buffer.getvalue())
        fs.mv(temp, path)

    @classmethod
    def load(cls, url: str) -> "Statistics":
        """Read a file written by ``save``; files without a protocol (e.g. pytorch-fid's) are refused."""
        try:
            with fsspec.open(url, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise GenframeError(f"fid: reference: no statistics file {url!r}") from None
        except (OSError, ValueError, ImportError) as exc:
            raise GenframeError(f"fid: reference: cannot read {url!r}: {exc}") from None
        try:
            if url.endswith(".npz"):
                with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                    payload = {k: data[k] for k in data.files}
                payload = {k: (str(v) if v.dtype.kind == "U" else torch.from_numpy(v)) for k, v in payload.items()}
            else:
                payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged files raise anything from BadZipFile to UnpicklingError
            raise GenframeError(f"fid: reference: {url} is not a statistics file ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or "mu" not in payload or "sigma" not in payload:
            raise GenframeError(f"fid: reference: {url} holds no mu and sigma")
        if payload.get("format") != STATS_FORMAT or "protocol" not in payload:
            raise GenframeError(f"fid: reference: {url} records no genframe protocol (weights, resizing, "
                                "sample count), so it cannot be checked against this evaluation; make the "
                                "reference statistics with genframe")
        return cls(payload["mu"].double(), payload["sigma"].double(), json.loads(payload["protocol"]))


def check_same_protocol(theirs: dict, ours: dict, what: str) -> None:
    """Refuse to compare statistics measured differently, naming the first differences."""
    if theirs == ours:
        return
    keys = sorted(set(theirs) | set(ours), key=str)
    diffs = [f"{k}={theirs.get(k)!r} there but {ours.get(k)!r} here" for k in keys if theirs.get(k) != ours.get(k)]
    raise GenframeError(f"fid: {what} were measured under another protocol ({'; '.join(diffs[:3])}); "
                        "recompute them with this evaluation's settings or match the settings to them")


# --------------------------------------------------------------------------- components


@attrs.define(slots=False, eq=False, kw_only=True, on_setattr=attrs.setters.NO_OP)
class FeatureMetric(Metric):
    """Shared by the metrics that measure images with a feature extractor."""

    n: int = param(50000, ge=2, help="generated images measured")
    n_real: int | None = param(None, ge=2, help="real images measured (default: all); fewer take a seeded "
                                                 "random subset")
    seed: int = param(0, help="seed of the generated images and of the real subset")
    batch_size: int = param(250, ge=1, help="images generated and measured at once")
    features: FeatureExtractor = param(factory=lambda: {"type": "inception_v3"},
                                       help="the network the images are measured with")

    def extractor(self, device: torch.device) -> FeatureExtractor:
        """The feature extractor, built on first use when given as a mapping, prepared on ``device``."""
        self._resolved().prepare(device)
        return self.features

    def _resolved(self) -> FeatureExtractor:
        if not isinstance(self.features, FeatureExtractor):
            self.features = resolve_extractor(self.features, self.type_name)
        return self.features

    def fit(self, real_images: torch.Tensor | None, labels: torch.Tensor | None) -> None:
        if real_images is not None:
            self._resolved().fit(real_images, labels)

    def real_pool(self, extractor: FeatureExtractor, real_images: torch.Tensor) -> torch.Tensor | None:
        """Positions of the real images a reference may use: those the extractor did not learn from,
        or None for all of them."""
        return extractor.held_out_positions()

    def real_positions(self, extractor: FeatureExtractor, real_images: torch.Tensor) -> torch.Tensor | None:
        """Sorted positions of the reference images (None: all): a seeded subset of ``n_real`` of the pool."""
        pool = self.real_pool(extractor, real_images)
        if pool is None:
            return real_subset(real_images.shape[0], self.n_real, self.seed)
        chosen = real_subset(len(pool), self.n_real, self.seed)
        return pool if chosen is None else pool[chosen]

    def set_sample_count(self, n: int) -> None:
        self.n = n

    def result_name(self) -> str:
        return self.name

    def generated(self, extractor: FeatureExtractor, sample: Callable, device: torch.device
                  ) -> dict[str, torch.Tensor]:
        return generated_features(extractor, sample, self.n, seed=self.seed, batch_size=self.batch_size,
                                  device=device)

    def real(self, extractor: FeatureExtractor, real_images: torch.Tensor | None, device: torch.device
             ) -> tuple[dict[str, torch.Tensor], dict]:
        """Features of the real images and a description of which images they are."""
        if real_images is None or real_images.shape[0] < 2:
            raise GenframeError(f"{self.type_name}: needs real images to compare with, and none were given")
        subset = self.real_positions(extractor, real_images)
        out = real_features(extractor, real_images, subset, batch_size=self.batch_size, device=device)
        return out, self.real_identity(real_images, subset, extractor)

    def real_identity(self, real_images: torch.Tensor, subset: torch.Tensor | None,
                      extractor: FeatureExtractor | None = None) -> dict:
        pool = None if extractor is None else extractor.held_out_positions()
        return {"images_sha256": image_digest(real_images), "images": int(real_images.shape[0]),
                "n": int(real_images.shape[0] if subset is None else subset.shape[0]),
                "subset_seed": None if subset is None else self.seed,
                **({} if pool is None else {"drawn_from": f"the {len(pool)} images the features were not fitted to"})}

    def protocol(self) -> dict:
        return getattr(self, "_protocol", None) or self.config()

    def _record(self, extractor: FeatureExtractor, **extra: Any) -> None:
        self._protocol = {"metric": self.type_name, "name": self.name, "n": self.n, "seed": self.seed,
                          "batch_size": self.batch_size, "features": extractor.protocol(), **extra}


_REFERENCES: dict[str, Statistics] = {}


@component("metric", "fid")
class FID(FeatureMetric):
    """Frechet Inception Distance (Heusel et al. 2017) between generated and real images; lower is better.

    The reference statistics are, in order: the ``reference`` file when given; else the real images
    (the run's data during training), whose statistics are cached under ``cache_dir`` keyed by
    their pixels' SHA-256 and the protocol, and reused by every later evaluation.
    """

    reads_statistics_files: ClassVar[bool] = True
    evaluated_by_default: ClassVar[bool] = True

    name: str = param("fid", help="key of the result in metrics.jsonl")
    reference: str | None = param(None, help="statistics file (.pt or .npz, fsspec URL) to compare with "
                                             "instead of the real images")
    cache: bool = param(True, help="cache the statistics of real images")
    cache_dir: str | None = param(None, help="folder or fsspec URL of the cache (default: $GENFRAME_CACHE/"
                                             "fid-stats, else ~/.cache/genframe/fid-stats)")
    floor: bool = param(False, help="also report <name>_floor: the distance of n other real images (not in the "
                                    "reference) from the reference, which a perfect generator reaches at this n")

    @torch.no_grad()
    def compute(self, sample: Any, real_images: torch.Tensor, device: torch.device) -> dict[str, float]:
        extractor = self.extractor(device)
        reference = self.reference_statistics(extractor, real_images, device)
        math_device = _math_device(device)
        reference = reference.to(math_device)
        mu, sigma = moments(self.generated(extractor, sample, device)["features"].to(math_device))
        value = frechet_distance(reference.mu, reference.sigma, mu, sigma, sqrt_sigma1=reference.sqrt_sigma())
        results, extra = {self.name: value}, {}
        if self.floor:
            results[f"{self.name}_floor"], extra["floor"] = self._floor(extractor, real_images, reference, device)
        self._record(extractor, reference=reference.protocol["reference"], moments="float64", **extra)
        return results

    def _floor(self, extractor: FeatureExtractor, real_images: torch.Tensor | None, reference: Statistics,
               device: torch.device) -> tuple[float, dict]:
        """The real-vs-real distance at equal n: ``n`` real images outside the reference against it."""
        if self.reference is not None or real_images is None:
            raise GenframeError(f"{self.name}: floor needs the real images (not a statistics file), to draw "
                                "images besides the reference's")
        pool = self.real_pool(extractor, real_images)
        pool = torch.arange(real_images.shape[0]) if pool is None else pool
        used = self.real_positions(extractor, real_images)
        others = pool if used is None else pool[~torch.isin(pool, used)]
        if len(others) < self.n:
            raise GenframeError(f"{self.name}: floor needs n={self.n} real images besides the reference's "
                                f"{len(pool) - len(others)}, and {len(others)} are left; lower n or n_real, or set "
                                "floor: false")
        draw = others[real_subset(len(others), self.n, self.seed + 1)] if len(others) > self.n else others
        features = real_features(extractor, real_images, draw, batch_size=self.batch_size, device=device)
        mu, sigma = moments(features["features"].to(_math_device(device)))
        value = frechet_distance(reference.mu, reference.sigma, mu, sigma, sqrt_sigma1=reference.sqrt_sigma())
        return value, {"n": int(len(draw)), "seed": self.seed + 1}

    def statistics_protocol(self, extractor: FeatureExtractor, reference: dict) -> dict:
        return {"features": extractor.protocol(), "reference": reference, "moments": "float64"}

    def reference_statistics(self, extractor: FeatureExtractor, real_images: torch.Tensor | None,
                             device: torch.device) -> Statistics:
        if self.reference is not None:
            return self._load_reference(extractor)
        if real_images is None or real_images.shape[0] < 2:
            raise GenframeError("fid: needs real images or a reference statistics file (reference: ...)")
        subset = self.real_positions(extractor, real_images)
        protocol = self.statistics_protocol(extractor, self.real_identity(real_images, subset, extractor))
        key = protocol_key(protocol)
        if key in _REFERENCES:
            return _REFERENCES[key]
        url = f"{self._cache_url()}/{key}.pt"
        stats = self._cached(url, protocol) if self.cache else None
        if stats is None:
            features, _ = self.real(extractor, real_images, device)
            mu, sigma = moments(features["features"].to(_math_device(device)))
            stats = Statistics(mu, sigma, protocol)
            if self.cache:
                stats.save(url)
        if len(_REFERENCES) >= 4:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = stats
        return stats

    def _cache_url(self) -> str:
        from genframe_plugins.metrics.inception import cache_dir

        return (self.cache_dir or str(cache_dir() / "fid-stats")).rstrip("/")

    @staticmethod
    def _cached(url: str, protocol: dict) -> Statistics | None:
        try:
            fs, path = fsspec.core.url_to_fs(url)
            if not fs.exists(path):
                return None
        except (OSError, ValueError, ImportError) as exc:
            raise GenframeError(f"fid: cache_dir: cannot open {url!r}: {exc}") from None
        stats = Statistics.load(url)
        check_same_protocol(stats.protocol, protocol, f"cached statistics {url}")
        return stats

    def set_reference_statistics(self, url: str) -> None:
        self.reference = url

    def preflight(self) -> None:
        if self.reference is not None:
            Statistics.load(self.reference)  # there, readable, and made with a recorded protocol

    def _load_reference(self, extractor: FeatureExtractor) -> Statistics:
        assert self.reference is not None
        stats = Statistics.load(self.reference)
        check_same_protocol(stats.protocol.get("features", {}), extractor.protocol(),
                            f"reference statistics {self.reference}")
        if stats.protocol.get("moments") != "float64":
            raise GenframeError(f"fid: reference statistics {self.reference} hold {stats.protocol.get('moments')} "
                                "moments; genframe compares float64 moments only")
        stats.protocol = {**stats.protocol, "reference": {"stats": self.reference,
                                                          **stats.protocol.get("reference", {})}}
        return stats


@component("metric", "inception_score")
class InceptionScore(FeatureMetric):
    """Inception Score (Salimans et al. 2016): exp E KL(p(y|x) || p(y)) over splits; higher is better.

    Reports the mean over ``splits`` and its population standard deviation (``<name>_std``), as
    torch-fidelity does; needs a feature extractor with class logits.
    """

    uses_real_images: ClassVar[bool] = False
    aliases: ClassVar[tuple[str, ...]] = ("is",)

    name: str = param("is", help="key of the result in metrics.jsonl (the deviation is <name>_std)")
    splits: int = param(10, ge=1, help="the images are cut into this many parts")
    shuffle_seed: int | None = param(2020, help="permute the images before splitting, as torch-fidelity "
                                                "(numpy RandomState); null keeps the drawing order")

    @torch.no_grad()
    def compute(self, sample: Any, real_images: torch.Tensor, device: torch.device) -> dict[str, float]:
        extractor = self.extractor(device)
        outputs = self.generated(extractor, sample, device)
        if "logits" not in outputs:
            raise GenframeError(f"inception_score: features: {extractor.type_name!r} gives no class logits; the "
                                "Inception Score needs a classifier (e.g. inception_v3)")
        mean, std = inception_score(outputs["logits"].to(_math_device(device)), self.splits, self.shuffle_seed)
        self._record(extractor, splits=self.splits, shuffle_seed=self.shuffle_seed)
        return {self.name: mean, f"{self.name}_std": std}


@component("metric", "kid")
class KID(FeatureMetric):
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel; lower is better.

    Averaged over random subsets drawn as torch-fidelity draws them; reports the mean and the
    population standard deviation (``<name>_std``).
    """

    name: str = param("kid", help="key of the result in metrics.jsonl (the deviation is <name>_std)")
    subsets: int = param(100, ge=1, help="random subsets averaged over")
    subset_size: int = param(1000, ge=2, help="generated and real images per subset")
    degree: int = param(3, ge=1, help="degree of the polynomial kernel (x.y gamma + coef0)^degree")
    gamma: float | None = param(None, gt=0, help="kernel scale (default 1 / feature dimension)")
    coef0: float = param(1.0, help="kernel offset")
    subset_seed: int = param(2020, help="seed of the subsets (numpy RandomState, as torch-fidelity)")

    @torch.no_grad()
    def compute(self, sample: Any, real_images: torch.Tensor, device: torch.device) -> dict[str, float]:
        extractor = self.extractor(device)
        real, identity = self.real(extractor, real_images, device)
        generated = self.generated(extractor, sample, device)["features"]
        smaller = min(generated.shape[0], real["features"].shape[0])
        if self.subset_size > smaller:
            raise GenframeError(f"kid: subset_size {self.subset_size} needs at least that many generated and real "
                                f"images, got {generated.shape[0]} and {real['features'].shape[0]}; lower "
                                "subset_size or raise n")
        math_device = _math_device(device)
        mean, std = kernel_inception_distance(generated.to(math_device), real["features"].to(math_device),
                                              subsets=self.subsets, subset_size=self.subset_size,
                                              degree=self.degree, gamma=self.gamma, coef0=self.coef0,
                                              seed=self.subset_seed)
        self._record(extractor, reference=identity, subsets=self.subsets, subset_size=self.subset_size,
                     kernel={"degree": self.degree, "gamma": self.gamma, "coef0": self.coef0},
                     subset_seed=self.subset_seed)
        return {self.name: mean, f"{self.name}_std": std}


@component("metric", "precision_recall")
class PrecisionRecall(FeatureMetric):
    """Improved precision and recall (Kynkaanniemi et al. 2019) of k-NN manifolds; higher is better.

    Precision is the share of generated images that fall inside the real images' manifold (fidelity),
    recall the share of real images inside the generated manifold (coverage). Reports
    ``<name>_precision`` and ``<name>_recall``.
    """

    aliases: ClassVar[tuple[str, ...]] = ("pr",)

    name: str = param("pr", help="prefix of the results in metrics.jsonl")
    k: int = param(3, ge=1, help="a manifold is the union of balls reaching each point's k-th nearest neighbour")

    @torch.no_grad()
    def compute(self, sample: Any, real_images: torch.Tensor, device: torch.device) -> dict[str, float]:
        extractor = self.extractor(device)
        real, identity = self.real(extractor, real_images, device)
        math_device = _math_device(device)
        generated = self.generated(extractor, sample, device)["features"].to(math_device)
        precision, recall = precision_recall(generated, real["features"].to(math_device), self.k)
        self._record(extractor, reference=identity, k=self.k, distances="float64")
        return {f"{self.name}_precision": precision, f"{self.name}_recall": recall}


@hookimpl
def genframe_components():
    return [FID, InceptionScore, KID, PrecisionRecall]
