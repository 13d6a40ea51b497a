"""The FID Inception-v3: the same features as torch-fidelity and pytorch-fid, and weights handled safely."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import fsspec
import pytest
import torch

from genframe import GenframeError, SpecError
from genframe.build.system import instantiate
from genframe.components.registry import get_registry
from genframe_plugins.metrics import inception
from genframe_plugins.metrics.inception import (RELEASE_BYTES, RELEASE_SHA256, RELEASE_URL, FIDInception, InceptionV3,
                                        build_network, expected_keys, preprocess, read_weights, weights_location)

from .metric_helpers import make_images, make_release_like_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(path, SHA-256) of calibrated random weights in the release layout."""
    path = tmp_path_factory.mktemp("inception") / "weights.pth"
    return str(path), make_release_like_weights(path)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GENFRAME_INCEPTION_WEIGHTS", raising=False)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# --------------------------------------------------------------------------- agreement with the references


@pytest.mark.slow
def test_features_and_logits_match_torch_fidelity(weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path, sha = weights
    images = make_images(4, seed=5)
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                            feature_extractor_weights_path=path)
    ref_features, ref_logits = reference(images)
    ours = InceptionV3(weights=path, weights_sha256=sha)
    ours.prepare(torch.device("cpu"))
    out = ours.extract(images)
    assert out["features"].shape == (4, 2048) and out["logits"].shape == (4, 1008)
    # float32 through 94 layers: each implementation lies ~3e-5 from the float64 result (the float64
    # test below is the tight one)
    assert relative_error(out["features"], ref_features) < 1e-4
    assert relative_error(out["logits"], ref_logits) < 1e-4
    # the logits are unbiased: the release's classifier bias (random here) plays no part
    assert relative_error(out["logits"], ref_features.double() @ torch.load(path)["fc.weight"].double().T) < 1e-4


@pytest.mark.slow
def test_float64_features_match_torch_fidelity_run_in_float64(weights):
    """torch-fidelity 0.4 maps its 'float64' option to float32, so its network is made float64 by hand."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path, sha = weights
    images = make_images(2, seed=6, size=40)
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    reference.feature_extractor_internal_dtype = torch.float64
    reference.double()
    (ref_features,) = reference(images)  # float64 inside, rounded to float32 on output
    ours = InceptionV3(weights=path, weights_sha256=sha, dtype="float64")
    ours.prepare(torch.device("cpu"))
    features = ours.extract(images)["features"]
    assert features.dtype == torch.float64
    assert relative_error(features, ref_features) < 2e-7  # float32 rounding of the reference's output


@pytest.mark.slow
def test_bilinear_mode_matches_pytorch_fid(weights, monkeypatch):
    import pytorch_fid.inception as pf

    path, sha = weights
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: torch.load(path))
    reference = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().double()
    images = make_images(2, seed=7, size=48)
    with torch.no_grad():
        (ref_features,) = reference(images.double() / 255.0)
    ours = InceptionV3(weights=path, weights_sha256=sha, resize="bilinear", dtype="float64")
    ours.prepare(torch.device("cpu"))
    assert relative_error(ours.extract(images)["features"], ref_features.flatten(1)) < 1e-10


@pytest.mark.parametrize("size", [(32, 32), (8, 8), (299, 299), (512, 512), (40, 77)])
def test_tf1_resize_matches_torch_fidelity(size):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, *size), generator=generator, dtype=torch.uint8)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        reference = interpolate_bilinear_2d_like_tensorflow1x(images.to(dtype), size=(299, 299), align_corners=False)
        ours = preprocess(images, "tf1_bilinear", 299, dtype)
        assert ours.dtype == dtype
        assert float(((ours - (reference - 128) / 128)).abs().max()) < tolerance


def test_torch_resize_modes_scale_as_pytorch_fid():
    images = make_images(2, seed=1, size=20)
    for mode in ("bilinear", "bicubic", "nearest"):
        ours = preprocess(images, mode, 75, torch.float64)
        corners = {} if mode == "nearest" else {"align_corners": False}
        expected = 2 * torch.nn.functional.interpolate(images.double() / 255, size=(75, 75), mode=mode,
                                                       **corners) - 1
        assert torch.allclose(ours, expected, atol=1e-12), mode


# --------------------------------------------------------------------------- the network


def test_folding_batch_norms_and_heads_keeps_the_outputs(weights):
    path, _ = weights
    state = torch.load(path, weights_only=True)
    x = preprocess(make_images(2, seed=2), "tf1_bilinear", 75, torch.float64)
    unfolded = build_network(state, path).eval()
    with torch.no_grad():
        expected = unfolded(x)
        folded = build_network(state, path).fold(torch.float64)(x)
    assert expected.shape == (2, 2048)
    assert relative_error(folded, expected) < 1e-12


def test_greyscale_images_are_measured_as_grey_rgb(weights):
    path, sha = weights
    grey = make_images(1, seed=3)[:, :1]
    extractor = InceptionV3(weights=path, weights_sha256=sha, resolution=75)
    extractor.prepare(torch.device("cpu"))
    assert torch.equal(extractor.extract(grey)["features"], extractor.extract(grey.repeat(1, 3, 1, 1))["features"])
    with pytest.raises(GenframeError, match=r"uint8 \(N, 1 or 3, H, W\)"):
        extractor.extract(torch.zeros(1, 3, 32, 32))


def test_release_layout_is_strict_except_step_counters(weights):
    path, _ = weights
    state = torch.load(path, weights_only=True)
    assert set(state) == set(expected_keys())
    with_counters = {**state, "Mixed_5b.branch1x1.bn.num_batches_tracked": torch.tensor(0)}
    build_network(with_counters, "with counters")
    missing = {k: v for k, v in state.items() if k != "fc.weight"}
    with pytest.raises(GenframeError,
                       match=r"^w\.pth: not the FID Inception-v3 layout: 1 missing keys \(fc\.weight\)$"):
        build_network(missing, "w.pth")
    extra = {**state, "AuxLogits.fc.weight": torch.zeros(1)}
    with pytest.raises(GenframeError, match=r"1 unexpected keys \(AuxLogits\.fc\.weight\)"):
        build_network(extra, "w.pth")
    wrong = {**state, "fc.weight": torch.zeros(1000, 2048)}
    with pytest.raises(GenframeError, match=r"1 keys of another shape \(fc\.weight\)"):
        build_network(wrong, "w.pth")
    with pytest.raises(GenframeError, match="not a state dict of tensors"):
        build_network({"fc.weight": [1, 2]}, "w.pth")


def test_the_release_layout_has_1008_classes_and_the_pool3_width():
    keys = expected_keys()
    assert keys["fc.weight"] == (1008, 2048)
    assert keys["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert keys["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert len([k for k in keys if k.endswith(".conv.weight")]) == 94


# --------------------------------------------------------------------------- weights: location, digest, cache


def _tiny_weights_file() -> bytes:
    buffer = io.BytesIO()
    torch.save({"a": torch.arange(3.0)}, buffer)
    return buffer.getvalue()


def test_sha_mismatch_is_refused_in_one_line(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(_tiny_weights_file())
    with pytest.raises(GenframeError) as info:
        read_weights(str(path), RELEASE_SHA256)
    message = str(info.value)
    assert "\n" not in message
    assert f"has SHA-256 {hashlib.sha256(path.read_bytes()).hexdigest()}, expected {RELEASE_SHA256}" in message
    assert "weights_sha256" in message


def test_offline_error_says_what_to_download_and_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(inception.urllib.request, "urlopen", offline)
    extractor = InceptionV3()
    with pytest.raises(GenframeError) as info:
        extractor.prepare(torch.device("cpu"))
    message = str(info.value)
    target = tmp_path / "cache" / "inception" / "pt_inception-2015-12-05-6726825d.pth"
    assert "\n" not in message
    assert RELEASE_URL in message and f"{RELEASE_BYTES:,} bytes" in message and RELEASE_SHA256 in message
    assert f"save it as {target}" in message and "GENFRAME_INCEPTION_WEIGHTS" in message
    assert not target.exists() and not list(target.parent.glob("*.part"))


def test_remote_weights_are_cached_and_the_cache_is_checked(tmp_path):
    data = _tiny_weights_file()
    sha = hashlib.sha256(data).hexdigest()
    url = "memory://release/w-inception.pth"
    with fsspec.open(url, "wb") as fh:
        fh.write(data)
    state, digest = read_weights(url, sha)
    assert digest == sha and torch.equal(state["a"], torch.arange(3.0))
    cached = tmp_path / "cache" / "inception" / "w-inception.pth"
    assert cached.read_bytes() == data
    fsspec.filesystem("memory").rm("/release/w-inception.pth")
    state, _ = read_weights(url, sha)  # served by the cache: the source is gone
    assert torch.equal(state["a"], torch.arange(3.0))
    cached.write_bytes(data[:-1] + b"x")  # a damaged cached copy is never used
    with pytest.raises(GenframeError, match="cached copy of memory://release/w-inception.pth.*expected"):
        read_weights(url, sha)


def test_a_download_with_the_wrong_digest_is_not_kept(tmp_path):
    url = "memory://release/other.pth"
    with fsspec.open(url, "wb") as fh:
        fh.write(_tiny_weights_file())
    with pytest.raises(GenframeError, match=f"memory://release/other.pth has SHA-256 .*, expected {RELEASE_SHA256}"):
        read_weights(url, RELEASE_SHA256)
    assert not any((tmp_path / "cache" / "inception").iterdir())
    fsspec.filesystem("memory").rm("/release/other.pth")


def test_files_that_are_not_weights_are_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(GenframeError, match=r"notes\.pth is not a PyTorch weights file"):
        read_weights(str(path), None)
    with pytest.raises(GenframeError, match="no such file"):
        read_weights(str(tmp_path / "absent.pth"), None)


def test_spec_field_then_environment_then_release_choose_the_weights(monkeypatch):
    assert weights_location(None) == RELEASE_URL
    monkeypatch.setenv("GENFRAME_INCEPTION_WEIGHTS", "/mirror/pt_inception.pth")
    assert weights_location(None) == "/mirror/pt_inception.pth"
    assert weights_location("s3://bucket/w.pth") == "s3://bucket/w.pth"


def test_extractor_loads_from_the_environment_and_records_the_digest(weights, monkeypatch):
    path, sha = weights
    monkeypatch.setenv("GENFRAME_INCEPTION_WEIGHTS", path)
    extractor = instantiate("feature_extractor", {"type": "inception_v3", "weights_sha256": sha, "resolution": 75},
                            "features", "<test>", get_registry())
    extractor.prepare(torch.device("cpu"))
    assert extractor.protocol() == {"type": "inception_v3", "weights_sha256": sha, "resize": "tf1_bilinear",
                                    "resolution": 75, "dtype": "float32", "allow_tf32": True,
                                    "features": "pool3", "logits": "without bias"}


def test_bad_digest_and_resolution_are_spec_errors():
    registry = get_registry()
    with pytest.raises(SpecError, match="weights_sha256 must be 64 lowercase hexadecimal digits"):
        instantiate("feature_extractor", {"type": "inception_v3", "weights_sha256": "abc"}, "f", "<t>", registry)
    with pytest.raises(SpecError, match="resolution"):
        instantiate("feature_extractor", {"type": "inception_v3", "resolution": 32}, "f", "<t>", registry)


def test_network_is_built_once_per_setting(weights, monkeypatch):
    path, sha = weights
    first = InceptionV3(weights=path, weights_sha256=sha)
    first.prepare(torch.device("cpu"))
    monkeypatch.setattr(inception, "read_weights", lambda *a: pytest.fail("weights were read twice"))
    second = InceptionV3(weights=path, weights_sha256=sha, resolution=100)
    second.prepare(torch.device("cpu"))
    assert second._network is first._network
    assert isinstance(first._network, FIDInception)
