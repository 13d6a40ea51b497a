"""FID, IS, KID and precision/recall: the reference implementations' numbers, cached references, refused protocols."""

from __future__ import annotations

import io
import json

import fsspec
import numpy as np
import pytest
import scipy.linalg
import torch

from genframe import GenframeError
from genframe.evaluation.metrics import compute_metrics
from genframe_plugins.metrics import feature_metrics as metrics_module
from genframe_plugins.metrics.feature_metrics import (FID, KID, InceptionScore, PrecisionRecall, Statistics,
                                                      frechet_distance, inception_score,
                                                      kernel_inception_distance, moments, precision_recall,
                                                      sqrt_trace_product)

from .metric_helpers import PixelStats, Replay, make_images, make_release_like_weights


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def random_covariance(d: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of ``samples`` correlated Gaussian draws in ``d`` dimensions (singular when samples <= d)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(samples, d)) @ mixing + rng.normal(size=d)
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.fixture(autouse=True)
def fresh_reference_memo(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics_module, "_REFERENCES", {})
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- the Frechet distance


@pytest.mark.parametrize("samples, tolerance", [(500, 1e-10), (30, 1e-7), (64, 1e-7)])  # full rank, N < d, N = d
def test_eigen_sqrt_trace_matches_scipy_sqrtm(samples, tolerance):
    # singular products leave eigenvalues of rounding size (~1e-16) in both methods; their square roots
    # (~1e-8) are the disagreement allowed there
    _, a = random_covariance(64, samples, seed=1)
    _, b = random_covariance(64, 200, seed=2)
    expected = np.trace(scipy.linalg.sqrtm(a @ b)).real
    ours = float(sqrt_trace_product(torch.from_numpy(a), torch.from_numpy(b)))
    assert rel(ours, expected) < tolerance


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::scipy.linalg.LinAlgWarning")
@pytest.mark.parametrize("case", ["full rank", "N < d", "singular", "both N < d"])
def test_frechet_distance_matches_pytorch_fid(case):
    from pytorch_fid.fid_score import calculate_frechet_distance

    d = 96
    mu1, s1 = random_covariance(d, 40 if case in ("N < d", "both N < d") else 400, seed=3)
    mu2, s2 = random_covariance(d, 30 if case == "both N < d" else 300, seed=4)
    if case == "singular":  # a feature that never varies (a dead unit)
        s1[5, :] = s1[:, 5] = 0.0
        s2[5, :] = s2[:, 5] = 0.0
    expected = calculate_frechet_distance(mu1, s1, mu2, s2)
    ours = frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)))
    assert rel(ours, expected) < 1e-6
    root = metrics_module.psd_sqrt(torch.from_numpy(s1))
    assert ours == pytest.approx(frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)),
                                                  sqrt_sigma1=root), rel=1e-12)


@pytest.mark.parametrize("samples, tolerance", [(200, 1e-9), (20, 1e-6)])  # singular: see above
def test_frechet_distance_of_a_distribution_with_itself_is_zero(samples, tolerance):
    mu, sigma = (torch.from_numpy(v) for v in random_covariance(32, samples, seed=5))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < tolerance


def test_moments_are_float64_and_survive_a_large_mean():
    rng = np.random.default_rng(0)
    features = (1e4 + rng.normal(size=(3000, 8)) * 1e-2).astype(np.float32)
    mu, sigma = moments(torch.from_numpy(features), chunk=700)
    assert mu.dtype == sigma.dtype == torch.float64
    assert np.allclose(mu.numpy(), features.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert np.allclose(sigma.numpy(), np.cov(features, rowvar=False), rtol=1e-9, atol=1e-15)


# --------------------------------------------------------------------------- IS, KID, P/R against the references


@pytest.mark.parametrize("splits, seed", [(10, 2020), (3, None), (1, 7)])
def test_inception_score_matches_torch_fidelity(splits, seed):
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.randn(60, 1008, generator=torch.Generator().manual_seed(0)) * 3
    expected = isc_features_to_metric(logits, splits=splits, shuffle=seed is not None, rng_seed=seed or 0)
    mean, std = inception_score(logits, splits, seed)
    assert rel(mean, expected["inception_score_mean"]) < 1e-12
    assert std == pytest.approx(expected["inception_score_std"], rel=1e-9, abs=1e-14)


def test_kid_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    generator = torch.Generator().manual_seed(1)
    generated = torch.rand(80, 32, generator=generator, dtype=torch.float64)
    real = torch.rand(70, 32, generator=generator, dtype=torch.float64) * 1.1
    expected = kid_features_to_metric(generated, real, kid_subsets=13, kid_subset_size=25, kid_kernel="poly",
                                      kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                      kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False)
    mean, std = kernel_inception_distance(generated, real, subsets=13, subset_size=25, group=4)
    assert rel(mean, expected["kernel_inception_distance_mean"]) < 1e-9
    assert rel(std, expected["kernel_inception_distance_std"]) < 1e-9


def naive_precision_recall(generated: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    def radii(points):
        return np.array([np.sort([np.linalg.norm(p - q) for q in points])[k] for p in points])

    def share_inside(queries, centres, centre_radii):
        return np.mean([any(np.linalg.norm(q - c) <= r for c, r in zip(centres, centre_radii)) for q in queries])

    return share_inside(generated, real, radii(real)), share_inside(real, generated, radii(generated))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_precision_recall_matches_a_naive_implementation_and_torch_fidelity(k):
    from torch_fidelity.metric_prc import prc_features_to_metric

    rng = np.random.default_rng(k)
    real = rng.normal(size=(40, 6))
    generated = rng.normal(size=(35, 6)) * 0.8 + 0.9
    expected = naive_precision_recall(generated, real, k)
    ours = precision_recall(torch.from_numpy(generated), torch.from_numpy(real), k)
    assert ours == expected
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1
    reference = prc_features_to_metric(torch.from_numpy(generated), torch.from_numpy(real), prc_neighborhood=k,
                                       prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    assert ours == pytest.approx((reference["precision"], reference["recall"]), rel=1e-7)  # theirs is float32


def test_precision_recall_work_in_blocks(monkeypatch):
    rng = np.random.default_rng(9)
    real, generated = rng.normal(size=(30, 4)), rng.normal(size=(25, 4)) + 0.5
    whole = precision_recall(torch.from_numpy(generated), torch.from_numpy(real), 2)
    monkeypatch.setattr(metrics_module, "_rows_per_block", lambda columns, device: 4)
    assert precision_recall(torch.from_numpy(generated), torch.from_numpy(real), 2) == whole


# --------------------------------------------------------------------------- components with a cheap extractor


def pooled_features(images: torch.Tensor, grid: int = 2) -> torch.Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(images.double(), grid).flatten(1) / 255.0


def test_fid_component_measures_quantised_samples_against_the_real_images(tmp_path):
    generated, real = make_images(40, seed=1), make_images(50, seed=2, low=20, high=230)
    fid = FID(n=40, batch_size=16, features=PixelStats(), cache_dir=str(tmp_path / "stats"))
    value = fid.compute(Replay(generated), real, torch.device("cpu"))["fid"]
    mu1, s1 = moments(pooled_features(real))
    mu2, s2 = moments(pooled_features(generated))
    assert value == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-10)
    protocol = fid.protocol()
    assert protocol["features"] == {"type": "pixel_stats", "grid": 2}
    assert protocol["reference"]["n"] == 50 and len(protocol["reference"]["images_sha256"]) == 64
    assert (protocol["n"], protocol["seed"], protocol["batch_size"], protocol["moments"]) == (40, 0, 16, "float64")


def test_real_subset_is_seeded_and_recorded(tmp_path):
    generated, real = make_images(20, seed=1), make_images(50, seed=2)
    fid = FID(n=20, n_real=30, seed=4, features=PixelStats(), cache=False)
    value = fid.compute(Replay(generated), real, torch.device("cpu"))["fid"]
    keep = torch.randperm(50, generator=torch.Generator().manual_seed(4))[:30].sort().values
    mu1, s1 = moments(pooled_features(real[keep]))
    mu2, s2 = moments(pooled_features(generated))
    assert value == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-10)
    assert fid.protocol()["reference"]["n"] == 30 and fid.protocol()["reference"]["subset_seed"] == 4


def test_reference_statistics_are_cached_through_fsspec(monkeypatch):
    generated, real = make_images(30, seed=3), make_images(40, seed=4)
    cache = "memory://fid-cache-test"
    first = FID(n=30, features=PixelStats(), cache_dir=cache)
    value = first.compute(Replay(generated), real, torch.device("cpu"))["fid"]
    files = fsspec.filesystem("memory").ls("/fid-cache-test", detail=False)
    assert len(files) == 1 and files[0].endswith(".pt")
    monkeypatch.setattr(metrics_module, "_REFERENCES", {})  # a new process: only the file remains
    second_extractor = PixelStats()
    second = FID(n=30, features=second_extractor, cache_dir=cache)
    assert second.compute(Replay(generated), real, torch.device("cpu"))["fid"] == pytest.approx(value, rel=1e-12)
    assert second_extractor.images_seen == 30  # the generated images only: the reference came from the cache
    fsspec.filesystem("memory").rm("/fid-cache-test", recursive=True)


def test_the_same_process_reuses_reference_statistics_without_the_cache():
    generated, real = make_images(10, seed=3), make_images(20, seed=4)
    extractor = PixelStats()
    FID(n=10, features=extractor, cache=False).compute(Replay(generated), real, torch.device("cpu"))
    assert extractor.images_seen == 30
    FID(n=10, features=extractor, cache=False).compute(Replay(generated), real, torch.device("cpu"))
    assert extractor.images_seen == 40


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_statistics_files_round_trip_and_npz_is_readable_by_pytorch_fid(tmp_path, suffix):
    mu, sigma = (torch.from_numpy(v) for v in random_covariance(6, 20, seed=1))
    url = str(tmp_path / f"stats{suffix}")
    Statistics(mu, sigma, {"features": {"type": "x"}, "moments": "float64"}).save(url)
    loaded = Statistics.load(url)
    assert torch.equal(loaded.mu, mu) and torch.equal(loaded.sigma, sigma)
    assert loaded.protocol == {"features": {"type": "x"}, "moments": "float64"}
    if suffix == ".npz":
        with np.load(url) as data:  # what pytorch-fid's compute_statistics_of_path reads
            assert np.array_equal(data["mu"], mu.numpy()) and np.array_equal(data["sigma"], sigma.numpy())


def test_reference_file_of_another_protocol_is_refused(tmp_path):
    real, generated = make_images(30, seed=5), make_images(30, seed=6)
    stats_url = str(tmp_path / "reference.pt")
    maker = FID(n=30, features=PixelStats(grid=2), cache=False)
    maker.reference_statistics(maker.extractor(torch.device("cpu")), real, torch.device("cpu")).save(stats_url)
    same = FID(n=30, features=PixelStats(grid=2), reference=stats_url)
    direct = FID(n=30, features=PixelStats(grid=2), cache=False)
    assert same.compute(Replay(generated), None, torch.device("cpu"))["fid"] == pytest.approx(
        direct.compute(Replay(generated), real, torch.device("cpu"))["fid"], rel=1e-12)
    assert same.protocol()["reference"]["stats"] == stats_url
    other = FID(n=30, features=PixelStats(grid=3), reference=stats_url)
    with pytest.raises(GenframeError, match=r"^fid: reference statistics .*reference\.pt were measured under another "
                                            r"protocol \(grid=2 there but 3 here\); recompute"):
        other.compute(Replay(generated), None, torch.device("cpu"))


def test_statistics_without_a_protocol_are_refused(tmp_path):
    url = str(tmp_path / "pytorch_fid_stats.npz")
    np.savez(url, mu=np.zeros(4), sigma=np.eye(4))
    fid = FID(n=10, features=PixelStats(), reference=url)
    with pytest.raises(GenframeError, match="records no genframe protocol"):
        fid.compute(Replay(make_images(10, seed=1)), None, torch.device("cpu"))
    with pytest.raises(GenframeError, match="no statistics file"):
        Statistics.load(str(tmp_path / "absent.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(GenframeError, match="is not a statistics file"):
        Statistics.load(str(tmp_path / "junk.pt"))


def test_a_tampered_cache_entry_is_refused(tmp_path):
    real, generated = make_images(20, seed=5), make_images(20, seed=6)
    cache = tmp_path / "stats"
    FID(n=20, features=PixelStats(), cache_dir=str(cache)).compute(Replay(generated), real, torch.device("cpu"))
    (entry,) = cache.iterdir()
    stats = Statistics.load(str(entry))
    stats.protocol["features"]["grid"] = 7
    stats.save(str(entry))
    metrics_module._REFERENCES.clear()
    with pytest.raises(GenframeError, match="cached statistics .* another protocol"):
        FID(n=20, features=PixelStats(), cache_dir=str(cache)).compute(Replay(generated), real, torch.device("cpu"))


def test_inception_score_needs_logits_and_reports_mean_and_std():
    images = make_images(30, seed=8)
    metric = InceptionScore(n=30, splits=3, features=PixelStats())
    result = metric.compute(Replay(images), None, torch.device("cpu"))
    mean, std = inception_score(PixelStats().extract(images)["logits"], 3, 2020)
    assert result == {"is": pytest.approx(mean, rel=1e-12), "is_std": pytest.approx(std, rel=1e-9)}
    with pytest.raises(GenframeError, match="'pixel_stats' gives no class logits"):
        InceptionScore(n=30, features=PixelStats(logits=False)).compute(Replay(images), None, torch.device("cpu"))


def test_kid_and_precision_recall_components_use_the_real_images():
    generated, real = make_images(30, seed=9), make_images(30, seed=10, low=40, high=200)
    kid = KID(n=30, subsets=5, subset_size=20, features=PixelStats())
    result = kid.compute(Replay(generated), real, torch.device("cpu"))
    mean, std = kernel_inception_distance(pooled_features(generated), pooled_features(real), subsets=5,
                                          subset_size=20)
    assert result == {"kid": pytest.approx(mean, rel=1e-12), "kid_std": pytest.approx(std, rel=1e-9)}
    assert kid.protocol()["kernel"] == {"degree": 3, "gamma": None, "coef0": 1.0}
    pr = PrecisionRecall(n=30, features=PixelStats(), name="manifold")
    result = pr.compute(Replay(generated), real, torch.device("cpu"))
    expected = precision_recall(pooled_features(generated), pooled_features(real), 3)
    assert result == {"manifold_precision": expected[0], "manifold_recall": expected[1]}
    with pytest.raises(GenframeError, match="kid: subset_size 1000 needs at least that many"):
        KID(n=30, features=PixelStats()).compute(Replay(generated), real, torch.device("cpu"))
    with pytest.raises(GenframeError, match="needs real images"):
        PrecisionRecall(n=30, features=PixelStats()).compute(Replay(generated), None, torch.device("cpu"))


# --------------------------------------------------------------------------- end to end against torch-fidelity


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "weights.pth"
    return str(path), make_release_like_weights(path, seed=3)


def torch_fidelity_metrics(generated, real, path, float64, **kwargs):
    import torch_fidelity
    from torch.utils.data import Dataset
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Images(Dataset):
        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i]

    class Float64Inception(FeatureExtractorInceptionV3):
        """torch-fidelity 0.4 maps 'float64' to float32; this runs its network in float64 for real."""

        def __init__(self, name, features_list, **options):
            super().__init__(name, features_list, **options)
            self.feature_extractor_internal_dtype = torch.float64
            self.double()

    name = "inception-v3-compat"
    if float64:
        name = "genframe-test-inception-float64"
        if name not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(name, Float64Inception)
    return torch_fidelity.calculate_metrics(input1=Images(generated), input2=Images(real), cuda=False, fid=True,
                                            isc=True, kid=True, feature_extractor=name,
                                            feature_extractor_weights_path=path, verbose=False, cache=False,
                                            save_cpu_ram=True, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fid_is_kid_match_torch_fidelity_on_the_same_images(weights, dtype):
    path, sha = weights
    n = 8
    generated, real = make_images(n, seed=11), make_images(n, seed=12, low=30, high=220)
    expected = torch_fidelity_metrics(generated, real, path, dtype == "float64", batch_size=4, isc_splits=2,
                                      kid_subsets=4, kid_subset_size=4)
    features = {"type": "inception_v3", "weights": path, "weights_sha256": sha, "dtype": dtype}
    chosen = [FID(n=n, batch_size=4, features=features, cache=False),
              InceptionScore(n=n, batch_size=4, splits=2, features=features),
              KID(n=n, batch_size=4, subsets=4, subset_size=4, features=features)]
    results, _ = compute_metrics(chosen, Replay(generated), real, torch.device("cpu"))
    pairs = {"fid": "frechet_inception_distance", "is": "inception_score_mean", "kid": "kernel_inception_distance_mean"}
    if dtype == "float64":  # the deviations are differences of nearby numbers: compared where rounding allows
        pairs.update({"is_std": "inception_score_std", "kid_std": "kernel_inception_distance_std"})
    assert expected["inception_score_mean"] > 1.1 and expected["inception_score_std"] > 0  # not degenerate
    for ours, theirs in pairs.items():
        assert rel(results[ours], expected[theirs]) < 1e-4, (ours, results[ours], expected[theirs])
    print(json.dumps({"dtype": dtype, **{k: rel(results[k], expected[v]) for k, v in pairs.items()}}))


def test_statistics_save_atomically_to_memory_store():
    mu, sigma = torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    Statistics(mu, sigma, {"moments": "float64"}).save("memory://atomic/stats.pt")
    listing = fsspec.filesystem("memory").ls("/atomic", detail=False)
    assert listing == ["/atomic/stats.pt"]
    with fsspec.open("memory://atomic/stats.pt", "rb") as fh:
        payload = torch.load(io.BytesIO(fh.read()), weights_only=True)
    assert payload["format"] == metrics_module.STATS_FORMAT
    fsspec.filesystem("memory").rm("/atomic", recursive=True)
