"""Tests for privacy.py's discrete Gaussian and accounting: exact discrete Gaussian sampler and privacy accounting.

References used as independent checks: exact pmfs summed numerically, direct
numerical integration (scipy.integrate.quad) of Renyi divergences, closed
forms, round trips, and published numbers (TF-Privacy MNIST tutorial README,
Opacus compute_dp_sgd_privacy docs, OpenDP zCDP->approxDP unit test).
"""

import math
import os
import random
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest
from scipy import integrate, special, stats

import privacy as dpnum


def seeded(seed):
    """A reproducible (insecure) generator for deterministic statistical tests."""
    return random.Random(seed)


def draw(n, sigma, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dpnum.InsecureRandomnessWarning)
        return dpnum.sample_discrete_gaussian(n, sigma=sigma, rng=seeded(seed))


# ---------------------------------------------------------------------------
# Part A: sampler building blocks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(5, 2), 0.7])
def test_bernoulli_exp_frequency(gamma):
    rng = seeded(11)
    n = 20000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dpnum.InsecureRandomnessWarning)
        hits = sum(dpnum.bernoulli_exp(gamma=gamma, rng=rng) for _ in range(n))
    p = math.exp(-float(gamma))
    sd = math.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(hits / n - p) <= 5 * sd
    if gamma == 0:
        assert hits == n


def test_bernoulli_exp_rejects_negative():
    with pytest.raises(ValueError, match="gamma"):
        dpnum.bernoulli_exp(gamma=-0.1)


def test_discrete_laplace_matches_pmf():
    t = 3
    n = 20000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dpnum.InsecureRandomnessWarning)
        x = dpnum.sample_discrete_laplace(n, scale=t, rng=seeded(5))
    r = math.exp(-1 / t)
    lim = 12
    ks = np.arange(-lim, lim + 1)
    pmf = (1 - r) / (1 + r) * r ** np.abs(ks)
    observed = np.array([np.sum(x == k) for k in ks] + [np.sum(np.abs(x) > lim)])
    expected = n * np.append(pmf, 1 - pmf.sum())
    chi2 = np.sum((observed - expected) ** 2 / expected)
    assert stats.chi2.sf(chi2, df=len(observed) - 1) > 1e-3


# ---------------------------------------------------------------------------
# Part A: discrete Gaussian statistics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sigma,seed", [(1.5, 1), (10, 2), (3000, 3), (3.7, 4)])
def test_discrete_gaussian_mean_and_variance(sigma, seed):
    n = 30000
    x = draw(n, sigma, seed).astype(float)
    var = dpnum.discrete_gaussian_variance(sigma=sigma)
    assert abs(x.mean()) <= 5 * math.sqrt(var / n)
    # sd of the sample variance ~ var * sqrt(2/n) (~0.8% here); allow 5 sd.
    assert abs(x.var() / var - 1) <= 5 * math.sqrt(2 / n)


def test_exact_variance_is_below_sigma2_for_small_sigma_and_sampler_follows_it():
    sigma = 0.5
    var = dpnum.discrete_gaussian_variance(sigma=sigma)
    # Closed form from the pmf: sum k^2 e^{-2k^2} / sum e^{-2k^2}.
    k = np.arange(-20, 21)
    w = np.exp(-2.0 * k**2)
    assert var == pytest.approx(float(np.sum(k**2 * w) / np.sum(w)), rel=1e-12)
    assert var < 0.9 * sigma**2  # well below sigma^2 = 0.25
    x = draw(30000, sigma, 21).astype(float)
    assert abs(x.var() - var) < 0.01  # sd of sample variance ~ 0.002
    assert abs(x.var() - sigma**2) > 0.02  # and clearly not sigma^2
    # Large sigma: the variance is sigma^2 to double precision.
    assert dpnum.discrete_gaussian_variance(sigma=10.0) == pytest.approx(100.0, rel=1e-12)


def test_discrete_gaussian_symmetry():
    x = draw(30000, 2.0, 7)
    for k in range(1, 6):
        a, b = int(np.sum(x == k)), int(np.sum(x == -k))
        assert abs(a - b) <= 5 * math.sqrt(a + b + 1)


def _chi2_pvalue(x, sigma, lim):
    ks = np.arange(-lim, lim + 1)
    pmf = dpnum.discrete_gaussian_pmf(ks, sigma=sigma)
    observed = np.array([np.sum(x == k) for k in ks] + [np.sum(np.abs(x) > lim)])
    expected = len(x) * np.append(pmf, max(1 - pmf.sum(), 1e-300))
    keep = expected > 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp_ = np.append(expected[keep], expected[~keep].sum())
    chi2 = np.sum((obs - exp_) ** 2 / exp_)
    return stats.chi2.sf(chi2, df=len(obs) - 1)


def test_discrete_gaussian_chi_square_goodness_of_fit():
    x = draw(30000, 1.5, 13)
    assert _chi2_pvalue(x, 1.5, lim=7) > 1e-3
    # Power check: the same samples are rejected against a slightly wrong sigma.
    assert _chi2_pvalue(x, 1.6, lim=7) < 1e-6


def test_float_sigma_is_taken_exactly():
    a = draw(200, 1.5, 99)
    b = draw(200, Fraction(3, 2), 99)
    assert np.array_equal(a, b)
    assert a.dtype == np.int64 and a.shape == (200,)
    assert draw((3, 4), 2.0, 1).shape == (3, 4)


def test_sampler_refuses_bad_inputs():
    for bad in [0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="sigma"):
            dpnum.sample_discrete_gaussian(3, sigma=bad, rng=random.SystemRandom())
    with pytest.raises(TypeError, match="rng"):
        dpnum.sample_discrete_gaussian(3, sigma=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="size"):
        dpnum.sample_discrete_gaussian(-1, sigma=1.0)


def test_seeded_generator_warns_and_secure_default_does_not():
    with pytest.warns(dpnum.InsecureRandomnessWarning):
        dpnum.sample_discrete_gaussian(2, sigma=1.0, rng=random.Random(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", dpnum.InsecureRandomnessWarning)
        x = dpnum.sample_discrete_gaussian(50, sigma=1.0)  # secrets.randbelow
        y = dpnum.sample_discrete_gaussian(50, sigma=1.0, rng=random.SystemRandom())
    assert x.dtype == np.int64 and y.dtype == np.int64


# ---------------------------------------------------------------------------
# Part A: zCDP accounting
# ---------------------------------------------------------------------------


def test_gaussian_rho_closed_form():
    assert dpnum.gaussian_rho(sigma=4.0, sensitivity=1.0) == 1 / 32
    assert dpnum.gaussian_rho(sigma=2.0, sensitivity=3.0) == 9 / 8
    with pytest.raises(ValueError, match="sigma"):
        dpnum.gaussian_rho(sigma=0.0, sensitivity=1.0)


def _renyi_discrete_gaussian(alpha, sigma, shift):
    """D_alpha(N_Z(0,s^2) || N_Z(shift,s^2)) by direct summation in log space."""
    half = int(40 * sigma + 40 + abs(shift) * alpha)
    k = np.arange(-half, half + 1, dtype=float)
    logp = -(k**2) / (2 * sigma**2)
    logq = -((k - shift) ** 2) / (2 * sigma**2)
    log_z = special.logsumexp(logp)  # same normaliser for the shifted law
    total = special.logsumexp(alpha * logp + (1 - alpha) * logq) - log_z
    return total / (alpha - 1)


@pytest.mark.parametrize("sigma", [0.6, 1.5, 4.0])
def test_discrete_gaussian_rho_bounds_the_exact_renyi_divergence(sigma):
    rho = dpnum.discrete_gaussian_rho(sigma=sigma, l2_sensitivity=2.0, l1_sensitivity=2.0, dim=1)
    assert rho == 2.0**2 / (2 * sigma**2)
    for alpha in [1.5, 2.0, 5.0, 10.0]:
        d = _renyi_discrete_gaussian(alpha, sigma, 2)
        assert d <= alpha * rho * (1 + 1e-9)
        if sigma >= 1.5:  # essentially tight once sigma is moderate
            assert d >= 0.999 * alpha * rho


def test_discrete_gaussian_rho_multivariate_is_additive():
    # Shift (1, 2) in 2-D: the exact divergence adds over coordinates and is
    # bounded by alpha * ||shift||_2^2 / (2 sigma^2).
    sigma, alpha = 1.2, 3.0
    rho = dpnum.discrete_gaussian_rho(sigma=sigma, l2_sensitivity=math.sqrt(5), l1_sensitivity=3.0, dim=2)
    d = _renyi_discrete_gaussian(alpha, sigma, 1) + _renyi_discrete_gaussian(alpha, sigma, 2)
    assert d <= alpha * rho * (1 + 1e-9)
    assert rho == pytest.approx(5 / (2 * sigma**2), rel=1e-15)
    # An L1 bound below the L2 bound is used, since ||v||_2 <= ||v||_1.
    assert dpnum.discrete_gaussian_rho(sigma=1.0, l2_sensitivity=3.0, l1_sensitivity=2.0, dim=4) == 2.0
    with pytest.raises(ValueError, match="dim"):
        dpnum.discrete_gaussian_rho(sigma=1.0, l2_sensitivity=1.0, l1_sensitivity=1.0, dim=0)


def test_zcdp_to_epsilon_matches_opendp_pinned_values():
    # OpenDP rust test test_zCDP_to_approxDP_nontrivial: Gaussian scale 4,
    # sensitivity 1 (rho = 1/32): epsilon(delta=1e-3) = 0.6880024554878086 and
    # delta(epsilon=0) = 0.1508457845622862, both from the CKS20 conversion.
    rho = dpnum.gaussian_rho(sigma=4.0, sensitivity=1.0)
    assert dpnum.zcdp_to_epsilon(rho, delta=1e-3) == pytest.approx(0.6880024554878086, rel=1e-10)
    assert dpnum.zcdp_to_delta(rho, epsilon=0.0) == pytest.approx(0.1508457845622862, rel=1e-10)


@pytest.mark.parametrize("rho", [1e-4, 0.01, 0.1, 0.5, 2.0, 20.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-10])
def test_zcdp_to_epsilon_is_positive_and_beats_bs16(rho, delta):
    eps = dpnum.zcdp_to_epsilon(rho, delta=delta)
    bs = dpnum.zcdp_to_epsilon_bs16(rho, delta=delta)
    assert 0 < eps <= bs
    assert bs == rho + 2 * math.sqrt(rho * math.log(1 / delta))
    # Round trip: the returned epsilon certifies delta, and a slightly smaller one does not.
    assert dpnum.zcdp_to_delta(rho, epsilon=eps) <= delta
    assert dpnum.zcdp_to_delta(rho, epsilon=eps * (1 - 1e-6)) > delta


@pytest.mark.parametrize("rho,eps", [(0.01, 0.5), (0.5, 3.0), (0.1, 0.05)])
def test_zcdp_to_delta_is_the_infimum_over_alpha(rho, eps):
    alphas = 1 + np.logspace(-8, 4, 2_000_000)  # relative spacing ~1.4e-5
    log_d = (alphas - 1) * (alphas * rho - eps) + alphas * np.log1p(-1 / alphas) - np.log(alphas - 1)
    brute = min(1.0, float(np.exp(log_d.min())))
    got = dpnum.zcdp_to_delta(rho, epsilon=eps)
    assert got <= brute * (1 + 1e-12)  # the root is at least as good as any grid point
    assert got >= brute * (1 - 1e-6)  # and the grid gets within 1e-6 of it


@pytest.mark.parametrize("mu", [0.2, 0.5, 1.0, 2.0])
def test_zcdp_conversion_is_never_tighter_than_the_exact_gaussian(mu):
    # Exact (eps, delta) curve of a Gaussian with sensitivity/sigma = mu
    # (Balle & Wang 2018, Theorem 8): delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2).
    # A valid zCDP conversion of rho = mu^2/2 can never certify a smaller delta.
    rho = mu**2 / 2
    for eps in [0.1, 0.5, 1.0, 3.0]:
        exact = stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
        assert dpnum.zcdp_to_delta(rho, epsilon=eps) >= exact


def test_zcdp_conversions_refuse_bad_inputs():
    with pytest.raises(ValueError, match="delta"):
        dpnum.zcdp_to_epsilon(0.1, delta=0.0)
    with pytest.raises(ValueError, match="delta"):
        dpnum.zcdp_to_epsilon(0.1, delta=1.0)
    with pytest.raises(ValueError, match="rho"):
        dpnum.zcdp_to_epsilon(-0.1, delta=1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        dpnum.zcdp_to_delta(0.1, epsilon=-1.0)


# ---------------------------------------------------------------------------
# Part B: RDP of the Poisson-subsampled Gaussian
# ---------------------------------------------------------------------------


def test_q_one_is_the_plain_gaussian_exactly():
    orders = [1.5, 2.0, 3.0, 7.25, 32.0, 256.0]
    for sigma in [0.7, 1.1, 5.0]:
        got = dpnum.rdp_subsampled_gaussian(q=1.0, noise_multiplier=sigma, orders=orders)
        assert np.array_equal(got, np.array(orders) / (2 * sigma**2))


def _log_mixture_ratio(z, q, sigma):
    """log(mu(z)/mu0(z)) = log((1-q) + q exp((2z-1)/(2 sigma^2)))."""
    return np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))


def _renyi_by_quadrature(alpha, q, sigma, forward=True):
    """D_alpha(mu || mu0) (forward) or D_alpha(mu0 || mu) by scipy quad, in log space.

    mu0 = N(0, sigma^2), mu = (1-q) N(0, sigma^2) + q N(1, sigma^2).
    forward:  int mu0 (mu/mu0)^alpha;   backward: int mu0 (mu/mu0)^(1-alpha).
    """
    power = alpha if forward else 1 - alpha

    def log_f(z):
        return stats.norm.logpdf(z, scale=sigma) + power * _log_mixture_ratio(z, q, sigma)

    lo, hi = -40 * sigma - 5, max(alpha, 1) + 40 * sigma + 5
    grid = np.linspace(lo, hi, 20001)
    m = float(np.max(log_f(grid)))
    peak = float(grid[np.argmax(log_f(grid))])
    pieces = [lo, peak - 10 * sigma, peak, peak + 10 * sigma, hi]
    pieces = sorted(set(min(max(p, lo), hi) for p in pieces))
    total = 0.0
    for a, b in zip(pieces[:-1], pieces[1:]):
        val, _ = integrate.quad(lambda z: math.exp(log_f(z) - m), a, b, epsabs=0, epsrel=1e-12, limit=400)
        total += val
    return (math.log(total) + m) / (alpha - 1)


@pytest.mark.parametrize(
    "q,sigma",
    [(0.01, 1.1), (0.1, 0.8), (0.3, 2.0), (0.05, 4.0)],
)
def test_closed_form_matches_numerical_integration(q, sigma):
    orders = [1.25, 1.5, 2.0, 2.75, 3.0, 4.5, 8.0, 12.5]
    closed = dpnum.rdp_subsampled_gaussian(q=q, noise_multiplier=sigma, orders=orders)
    for alpha, c in zip(orders, closed):
        fwd = _renyi_by_quadrature(alpha, q, sigma, forward=True)
        bwd = _renyi_by_quadrature(alpha, q, sigma, forward=False)
        # The closed form is the mu || mu0 direction ...
        assert c == pytest.approx(fwd, rel=1e-6, abs=1e-12)
        # ... which dominates the other direction, so it covers add AND remove.
        assert bwd <= c * (1 + 1e-6) + 1e-12


def test_rdp_monotone_in_q_and_steps():
    orders = list(dpnum.DEFAULT_ORDERS)
    prev = np.zeros(len(orders))
    for q in [0.001, 0.01, 0.05, 0.2, 0.6, 1.0]:
        r = dpnum.rdp_subsampled_gaussian(q=q, noise_multiplier=1.3, orders=orders)
        assert np.all(r >= prev)
        assert np.all(r > prev) or q == 0.001
        prev = r
    eps = [dpnum.dpsgd_epsilon(q=0.01, noise_multiplier=1.1, steps=s, delta=1e-5) for s in [1, 10, 100, 1000, 10000]]
    assert all(a < b for a, b in zip(eps, eps[1:]))


def test_improved_conversion_never_exceeds_mironov_prop3():
    orders = list(dpnum.DEFAULT_ORDERS)
    for q, sigma, steps in [(0.01, 1.1, 6000), (0.004, 0.7, 3000), (0.1, 3.0, 100), (1.0, 10.0, 1)]:
        rdp = steps * dpnum.rdp_subsampled_gaussian(q=q, noise_multiplier=sigma, orders=orders)
        for delta in [1e-3, 1e-5, 1e-8]:
            new = dpnum.rdp_to_epsilon(orders, rdp, delta=delta)
            old = dpnum.rdp_to_epsilon_classic(orders, rdp, delta=delta)
            assert 0 <= new < old
    # Hand-computed single order: alpha = 2, r = 1, delta = 1e-5.
    a, r, d = 2.0, 1.0, 1e-5
    expect = r + math.log((a - 1) / a) - (math.log(d) + math.log(a)) / (a - 1)
    assert dpnum.rdp_to_epsilon([a], [r], delta=d) == pytest.approx(expect, rel=1e-14)
    assert dpnum.rdp_to_epsilon_classic([a], [r], delta=d) == pytest.approx(r + math.log(1 / d), rel=1e-14)


def test_tf_privacy_mnist_tutorial_published_values():
    # tensorflow/privacy tutorials/README.md (2018-2019) and mnist_dpsgd_tutorial.py:
    # N = 60000, batch 256 (q = 256/60000), steps = epochs * (60000 // 256),
    # orders = [1 + x/10 for x in 1..99] + range(12, 64), delta = 1e-5, and the
    # then-current get_privacy_spent, i.e. the Mironov Prop. 3 conversion.
    # Printed with '%.2f': sigma 1.12 -> 1.00 (1 epoch), 1.04 (2), 2.92 (60);
    # table: sigma 1.2, 10 epochs -> 1.20; sigma 0.6, 30 epochs -> 9.74.
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    q = 256 / 60000
    cases = [(1.12, 1, 1.00), (1.12, 2, 1.04), (1.12, 60, 2.92), (1.2, 10, 1.20)]
    for sigma, epochs, published in cases:
        rdp = epochs * (60000 // 256) * dpnum.rdp_subsampled_gaussian(q=q, noise_multiplier=sigma, orders=orders)
        eps = dpnum.rdp_to_epsilon_classic(orders, rdp, delta=1e-5)
        assert round(eps, 2) == published
    # The 0.6 / 30-epoch row reproduces to 9.747 (prints 9.75, published 9.74): within 0.01.
    rdp = 30 * 234 * dpnum.rdp_subsampled_gaussian(q=q, noise_multiplier=0.6, orders=orders)
    assert abs(dpnum.rdp_to_epsilon_classic(orders, rdp, delta=1e-5) - 9.74) < 0.01


def test_opacus_docs_published_value():
    # Opacus compute_dp_sgd_privacy docs: sample rate 1%, noise 1.0, 300 steps,
    # alphas [2, 5, 10, 20, 100], delta 1e-5 -> epsilon = 2.39, optimal alpha 5
    # (Opacus uses the improved conversion, as rdp_to_epsilon does).
    orders = [2, 5, 10, 20, 100]
    rdp = 300 * dpnum.rdp_subsampled_gaussian(q=0.01, noise_multiplier=1.0, orders=orders)
    eps, order = dpnum.rdp_to_epsilon(orders, rdp, delta=1e-5, return_order=True)
    assert round(eps, 2) == 2.39 and order == 5.0


def test_calibrate_noise_multiplier_round_trip():
    q, steps, delta = 256 / 60000, 14040, 1e-5
    for target in [0.5, 2.0, 8.0]:
        sigma = dpnum.calibrate_noise_multiplier(q=q, steps=steps, epsilon=target, delta=delta)
        got = dpnum.dpsgd_epsilon(q=q, noise_multiplier=sigma, steps=steps, delta=delta)
        assert got <= target
        assert got == pytest.approx(target, rel=1e-6)
        # Any noticeably smaller sigma overshoots the target.
        assert dpnum.dpsgd_epsilon(q=q, noise_multiplier=sigma * 0.999, steps=steps, delta=delta) > target
    with pytest.raises(ValueError, match="epsilon"):
        dpnum.calibrate_noise_multiplier(q=0.5, steps=10**6, epsilon=1e-6, delta=1e-5)


def test_accountant_refuses_bad_inputs():
    with pytest.raises(ValueError, match="q"):
        dpnum.rdp_subsampled_gaussian(q=1.5, noise_multiplier=1.0, orders=[2])
    with pytest.raises(ValueError, match="noise_multiplier"):
        dpnum.rdp_subsampled_gaussian(q=0.1, noise_multiplier=0.0, orders=[2])
    with pytest.raises(ValueError, match="order"):
        dpnum.rdp_subsampled_gaussian(q=0.1, noise_multiplier=1.0, orders=[1.0, 2.0])
    with pytest.raises(ValueError, match="same length"):
        dpnum.rdp_to_epsilon([2, 3], [0.1], delta=1e-5)
    with pytest.raises(ValueError, match="steps"):
        dpnum.dpsgd_epsilon(q=0.1, noise_multiplier=1.0, steps=2.5, delta=1e-5)


def test_dpsgd_sensitivity_by_relation():
    assert dpnum.dpsgd_sensitivity(clip_norm=1.5, relation="add_remove_private_part") == 1.5
    # Substitution must be 2C: stating it as C would under-noise by half.
    assert dpnum.dpsgd_sensitivity(clip_norm=1.5, relation="substitution") == 3.0
    assert dpnum.dpsgd_sensitivity(clip_norm=1.5, relation="substitution") != 1.5
    # 2C is attained: two opposite clipped vectors of norm C differ by 2C.
    g = np.array([3.0, 4.0])
    clip = lambda v, c: v * min(1.0, c / np.linalg.norm(v))  # noqa: E731
    assert np.linalg.norm(clip(g, 1.5) - clip(-g, 1.5)) == pytest.approx(
        dpnum.dpsgd_sensitivity(clip_norm=1.5, relation="substitution")
    )
    with pytest.raises(ValueError, match="relation"):
        dpnum.dpsgd_sensitivity(clip_norm=1.0, relation="add_remove")


@pytest.mark.parametrize("q, sigma, steps, delta", [
    (0.01, 1.1, 6000, 1e-5), (0.004, 0.8, 10_000, 1e-6), (0.1, 2.0, 300, 1e-5), (0.5, 5.0, 50, 1e-6),
])
def test_cross_check_dp_accounting_if_installed(q, sigma, steps, delta):
    """Test-only cross-check against Google's dp-accounting (RdpAccountant), when installed.

    Integer orders: the same exact binomial expansion, so equal. Fractional orders: dp-accounting
    0.6.0 returns a conservative upper bound (e.g. q = 0.1, sigma = 2, alpha = 1.25: 0.0025473,
    where 40-digit mpmath quadrature and our series both give 0.0017377; at q = 0.5 its series
    does not converge and it drops the order), so ours must be at or below it there, never above;
    the exact values are checked against quadrature in test_closed_form_matches_numerical_integration."""
    dp_accounting = pytest.importorskip("dp_accounting")
    orders = list(dpnum.DEFAULT_ORDERS)
    acc = dp_accounting.rdp.RdpAccountant(orders)
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
    theirs = np.asarray(acc._rdp, dtype=float)
    ours = np.asarray(dpnum.rdp_subsampled_gaussian(q=q, noise_multiplier=sigma, orders=orders)) * steps
    integer = np.array([float(a).is_integer() for a in orders])
    np.testing.assert_allclose(ours[integer], theirs[integer], rtol=1e-6)
    assert (ours[~integer] <= theirs[~integer] * (1 + 1e-9)).all()
    eps_ours = dpnum.dpsgd_epsilon(q=q, noise_multiplier=sigma, steps=steps, delta=delta)
    assert eps_ours <= acc.get_epsilon(delta) * (1 + 1e-6)
    # and no looser than the best integer order, where the two accountants agree exactly
    int_only = dp_accounting.rdp.RdpAccountant([a for a in orders if float(a).is_integer()])
    int_only.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
    assert eps_ours <= int_only.get_epsilon(delta) * (1 + 1e-6)
