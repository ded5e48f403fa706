"""The PLD accountant for Poisson-subsampled Gaussian DP-SGD steps (privacy.pld_dpsgd_epsilon), issue 16.

References: the closed form at q = 1 (T Gaussian steps = mu-GDP with mu = sqrt(T)/sigma, exact
delta(eps) in privacy.gdp_delta); direct numerical integration of one step; Monte Carlo of the
composed privacy loss; RDP as an upper bound it must not exceed; dp-accounting when installed.
"""
import math

import numpy as np
import pytest
from scipy import integrate, stats

import privacy


@pytest.mark.parametrize("steps, sigma", [(1, 1.0), (10, 2.0), (50, 4.0), (4, 0.7)])
def test_q1_is_the_gaussian_mechanism(steps, sigma):
    delta = 1e-5
    mu = math.sqrt(steps) / sigma
    exact = privacy.gdp_epsilon(mu=mu, delta=delta)
    got = privacy.pld_dpsgd_epsilon(q=1.0, noise_multiplier=sigma, steps=steps, delta=delta)
    assert exact <= got <= exact + steps * 1e-4 + 1e-6, (got, exact)  # pessimistic: never below the truth


def _one_step_delta(q, s, eps, direction):
    """delta(eps) = E_P[(1 - e^{eps - L})_+] of one step, by quadrature (independent of the grid code)."""
    def loss(x):
        return np.logaddexp(math.log1p(-q), math.log(q) + (2 * x - 1) / (2 * s * s))
    if direction == "remove":
        dens = lambda x: (1 - q) * stats.norm.pdf(x, 0, s) + q * stats.norm.pdf(x, 1, s)  # noqa: E731
        f = lambda x: dens(x) * max(0.0, 1 - math.exp(eps - loss(x)))  # noqa: E731
    else:
        f = lambda x: stats.norm.pdf(x, 0, s) * max(0.0, 1 - math.exp(eps + loss(x)))  # noqa: E731
    return integrate.quad(f, -12 * s, 1 + 12 * s, limit=400, points=[0.5])[0]


@pytest.mark.parametrize("q, s", [(0.05, 0.8), (0.3, 1.5), (0.01, 0.5)])
def test_one_step_matches_quadrature(q, s):
    for direction in ("remove", "add"):
        k_min, pmf, om = privacy._pld_grid_pmf(q, s, direction=direction, h=1e-4)
        losses, comp, omt = privacy._pld_delta_curve(k_min, pmf, om, 1, 1e-4)
        for eps in (0.0, 0.1, 0.5, 1.0):
            want = _one_step_delta(q, s, eps, direction)
            got = omt + float(np.sum(comp[losses > eps] * -np.expm1(eps - losses[losses > eps])))
            assert got >= want - 1e-12, (direction, eps, got, want)      # an upper bound ...
            # ... and rounding each loss up by < h moves delta by <= h e^h P(L' > eps)
            tail = omt + float(comp[losses > eps].sum())
            assert got <= want + 1e-4 * math.exp(1e-4) * tail + 1e-10, (direction, eps, got, want)


def test_composition_matches_monte_carlo():
    q, s, steps, n = 0.05, 0.9, 40, 100_000
    rng = np.random.default_rng(0)
    big = np.zeros(n)
    for _ in range(steps):  # 'remove' direction: x from the mixture
        x = rng.standard_normal(n) * s + (rng.random(n) < q)
        big += np.logaddexp(math.log1p(-q), math.log(q) + (2 * x - 1) / (2 * s * s))
    k_min, pmf, om = privacy._pld_grid_pmf(q, s, direction="remove", h=1e-4)
    losses, comp, omt = privacy._pld_delta_curve(k_min, pmf, om, steps, 1e-4)
    for eps in (0.5, 1.0):
        mc = np.clip(-np.expm1(eps - big), 0, None)
        got = omt + float(np.sum(comp[losses > eps] * -np.expm1(eps - losses[losses > eps])))
        assert abs(got - mc.mean()) < 4 * mc.std() / math.sqrt(n) + 1e-4, (eps, got, mc.mean())


@pytest.mark.parametrize("q, sigma, steps", [(0.01, 1.1, 200), (4096 / 3123750, 1.0, 300), (0.1, 2.0, 50)])
def test_never_above_rdp_and_monotone(q, sigma, steps):
    delta = 1e-6
    pld = privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=sigma, steps=steps, delta=delta)
    rdp = privacy.dpsgd_epsilon(q=q, noise_multiplier=sigma, steps=steps, delta=delta)
    assert 0 < pld <= rdp + 1e-9
    assert privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=sigma * 1.2, steps=steps, delta=delta) < pld
    assert privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=sigma, steps=steps, delta=delta * 10) < pld


def test_bad_arguments_fail_loudly():
    for kw, match in [({"q": 1.5}, "q must be in"), ({"noise_multiplier": 0.0}, "noise_multiplier"),
                      ({"steps": -1}, "steps"), ({"delta": 0.0}, "delta")]:
        args = {"q": 0.1, "noise_multiplier": 1.0, "steps": 3, "delta": 1e-5, **kw}
        with pytest.raises(ValueError, match=match):
            privacy.pld_dpsgd_epsilon(**args)
    assert privacy.pld_dpsgd_epsilon(q=0.0, noise_multiplier=1.0, steps=3, delta=1e-5) == 0.0


def test_calibration_with_pld_meets_the_target_and_needs_less_noise():
    q, steps, delta = 4096 / 3123750, 100, 1e-6
    for eps in (0.5, 4.0):
        s_rdp = privacy.calibrate_noise_multiplier(q=q, steps=steps, epsilon=eps, delta=delta)
        s_best = privacy.calibrate_noise_multiplier(q=q, steps=steps, epsilon=eps, delta=delta, accountant="best")
        assert s_best <= s_rdp
        got = min(privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=s_best, steps=steps, delta=delta),
                  privacy.dpsgd_epsilon(q=q, noise_multiplier=s_best, steps=steps, delta=delta))
        assert got <= eps
        assert privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=s_best * 0.98, steps=steps, delta=delta) > eps
    with pytest.raises(ValueError, match="accountant='moments'"):
        privacy.calibrate_noise_multiplier(q=q, steps=steps, epsilon=1.0, delta=delta, accountant="moments")


def test_cross_check_against_dp_accounting():
    dpa = pytest.importorskip("dp_accounting")
    from dp_accounting.pld import pld_privacy_accountant
    q, sigma, steps, delta = 0.01, 1.1, 300, 1e-5
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)
    ref = acc.get_epsilon(delta)
    ours = privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=sigma, steps=steps, delta=delta)
    assert abs(ours - ref) <= 0.02 * ref + steps * 1e-4, (ours, ref)


def test_calibration_below_the_rdp_floor_searches_pld_and_explains_its_own_floor():
    """RDP cannot certify epsilon below log(1/delta) / (largest order - 1) whatever the noise (about 0.0129
    here); PLD can go lower with few steps. Then 'pld' and 'best' must still calibrate (the smallest sigma
    within 0.3% whose PLD epsilon meets the target), 'rdp' must refuse, and a target below every
    accountant's floor must say that the resolution, not the noise, is the limit."""
    q, steps, delta = 4096 / (2500 * 2499 / 2), 30, 1e-6
    assert privacy.dpsgd_epsilon(q=q, noise_multiplier=1000.0, steps=steps, delta=delta) > 0.005
    for acc in ("pld", "best"):
        sigma = privacy.calibrate_noise_multiplier(q=q, steps=steps, epsilon=0.005, delta=delta, accountant=acc)
        assert privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=sigma, steps=steps, delta=delta) <= 0.005
        assert privacy.pld_dpsgd_epsilon(q=q, noise_multiplier=sigma / 1.003, steps=steps, delta=delta) > 0.005
    with pytest.raises(ValueError, match=r"not reachable .*accounted at epsilon 0\.01.*resolution"):
        privacy.calibrate_noise_multiplier(q=q, steps=steps, epsilon=0.005, delta=delta, accountant="rdp")
    for acc in ("rdp", "pld", "best"):
        with pytest.raises(ValueError, match="resolution, not the noise"):
            privacy.calibrate_noise_multiplier(q=q, steps=steps, epsilon=0.001, delta=delta, accountant=acc)
