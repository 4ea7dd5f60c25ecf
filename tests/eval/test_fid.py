"""FID through torchmetrics from running statistics: the closed form of two Gaussians, a set
against itself, bounded memory, and feature extractors named by the user."""
import numpy as np
import pytest
import torch

from vlv_ray.eval import features
from vlv_ray.eval.fid import FeatureFID, fid


def test_fid_of_two_gaussians_matches_the_closed_form():
    # N(μ1, diag σ1²) vs N(μ2, diag σ2²): FID = |μ1 - μ2|² + Σ (σ1 - σ2)² (commuting covariances)
    rng = np.random.default_rng(0)
    d, n = 6, 200_000
    mu1, mu2 = rng.normal(0, 1, d), rng.normal(0, 1, d)
    s1, s2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    closed = float(np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2))
    a, b = mu1 + s1 * rng.standard_normal((n, d)), mu2 + s2 * rng.standard_normal((n, d))
    assert fid(a, b) == pytest.approx(closed, rel=0.02)


def test_fid_with_full_covariances_matches_the_closed_form_of_the_sample_statistics():
    def sqrt_psd(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    rng = np.random.default_rng(1)
    a = rng.standard_normal((3000, 5)) @ rng.normal(0, 1, (5, 5))
    b = rng.standard_normal((2000, 5)) @ rng.normal(0, 1, (5, 5)) + 0.7
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    closed = float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(c1 + c2)
                   - 2 * np.trace(sqrt_psd(sqrt_psd(c1) @ c2 @ sqrt_psd(c1))))  # Tr((Σ1½ Σ2 Σ1½)½)
    assert fid(a, b) == pytest.approx(closed, rel=1e-6)


def test_fid_of_a_set_against_itself_is_zero_and_batches_do_not_matter():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, (500, 16))
    assert abs(fid(x, x)) < 1e-6
    f = FeatureFID(16)  # fed in uneven batches, as the Ray driver feeds it
    for i in range(0, 500, 37):
        f.update(x[i:i + 37], real=True)
        f.update(x[::-1][i:i + 37], real=False)
    assert f.counts() == (500, 500) and abs(f.compute()) < 1e-6
    assert fid(x, x + 1.0) == pytest.approx(16.0, rel=1e-6)  # a shift of 1 in 16 dimensions


def test_running_statistics_are_bounded_by_the_feature_width():
    f = FeatureFID(8)
    state = sum(t.numel() for t in (f.metric.real_features_sum, f.metric.real_features_cov_sum,
                                     f.metric.fake_features_sum, f.metric.fake_features_cov_sum))
    for _ in range(20):
        f.update(np.random.default_rng(0).normal(size=(1000, 8)), real=True)
    after = sum(t.numel() for t in (f.metric.real_features_sum, f.metric.real_features_cov_sum,
                                     f.metric.fake_features_sum, f.metric.fake_features_cov_sum))
    assert state == after == 2 * (8 + 64)
    with pytest.raises(ValueError, match=r"at least 2 images on each side, got 20000 real and 0"):
        f.compute()
    with pytest.raises(ValueError, match=r"expected \[n, 8\]"):
        f.update(np.zeros((3, 7)), real=False)


def test_feature_extractors_are_named_as_module_attribute():
    m = features.load("vlv_ray.toyworld.reader:feature_extractor")
    x = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)
    out = features.extract(m, x)
    assert out.shape == (3, m.num_features) and out.std() > 0
    assert not any(p.requires_grad for p in m.parameters())
    for spec, msg in (("nocolon", "expected 'inception' or package.module:attribute"),
                      ("vlv_ray.nowhere:x", "cannot be imported"),
                      ("vlv_ray.eval.features:INCEPTION", "is a str, expected an nn.Module")):
        with pytest.raises(features.FeatureError, match=msg):
            features.load(spec)


def test_inception_without_torch_fidelity_is_named_as_missing(monkeypatch):
    # torchmetrics decides at import whether torch-fidelity is there; set that flag as on a box
    # without the extra, so the message is checked whether or not the extra is installed here.
    import torchmetrics.image.fid as tm_fid

    monkeypatch.setattr(tm_fid, "_TORCH_FIDELITY_AVAILABLE", False)
    with pytest.raises(features.FeatureError, match=r"pip install 'vlv-ray\[eval\]'"):
        features.load("inception")
