"""The empirical privacy audit has teeth: it passes the real sanitizer and catches broken ones."""
import math

import numpy as np
import pytest

import data
import dmpmh
import evaluate
import privacy


def test_real_mechanism_within_claim():
    r = dmpmh.run_audit(dmpmh.AuditConfig(trials=5000, broken="none", seed=1), verbose=False)
    assert r["epsilon_lower_bound"] <= r["claimed_epsilon"]
    # the canary is close to worst case: its separation is near the claimed mu
    mu = privacy.gdp_mu(epsilon=1.0, delta=1e-5)
    assert 0.8 * mu <= r["canary_distance_in_sigmas"] <= mu + 1e-9


@pytest.mark.parametrize("broken", ["understate", "noclip"])
def test_broken_mechanisms_are_caught(broken):
    r = dmpmh.run_audit(dmpmh.AuditConfig(trials=5000, broken=broken, seed=2), verbose=False)
    assert r["epsilon_lower_bound"] > r["claimed_epsilon"], r
    assert privacy.stable_clip.__name__ == "stable_clip"  # the broken clipper was restored


def test_audit_cli_exit_codes(capsys):
    assert dmpmh.main(["audit", "--trials", "200", "--n-nodes", "30"]) == 0
    out = capsys.readouterr().out
    assert "empirical epsilon lower bound" in out
    assert dmpmh.main(["audit", "--broken", "bogus"]) == 2


def test_link_attack_pairs_are_balanced_and_correct():
    rng = np.random.default_rng(0)
    lab = (rng.random((300, 6)) < 0.2).astype(np.uint8)
    lab[:, 0] |= lab.sum(1) == 0
    store = data.LabelStore(lab, np.arange(300), allow_train_in_evaluation=False)
    for kind in ("label", "knn"):
        g = data.build_private_graph(store, np.arange(300), kind=kind, knn_k=5)
        pos, neg = data.attack_pairs(g, 1000, seed=0)
        a = g.dense()
        assert len(pos) == len(neg) == 500
        assert a[pos[:, 0], pos[:, 1]].all() and not a[neg[:, 0], neg[:, 1]].any()
    # implicit (block) graphs give the same kind of sample
    g = data.build_private_graph(store, np.arange(300), kind="label", dense_limit=10)
    pos, neg = data.attack_pairs(g, 400, seed=0)
    share = lambda p: ((lab[p[:, 0]] & lab[p[:, 1]]).sum(1) > 0)  # noqa: E731
    assert share(pos).all() and not share(neg).any()


def test_attack_auc_separates_leaky_codes():
    """Codes that copy the graph (leaky) give a high AUC; random codes give about 0.5."""
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 4, 400)
    codes = np.eye(4, 16, dtype=np.uint8)[groups]
    codes = np.repeat(codes, 2, axis=1)[:, :16]
    pos = np.array([(i, j) for i in range(400) for j in range(i + 1, 400) if groups[i] == groups[j]])[:2000]
    neg = np.array([(i, j) for i in range(400) for j in range(i + 1, 400) if groups[i] != groups[j]])[:2000]
    assert evaluate.link_attack_auc(codes, pos, neg, kind="codes") > 0.99
    rand = rng.integers(0, 2, (400, 16)).astype(np.uint8)
    assert abs(evaluate.link_attack_auc(rand, pos, neg, kind="codes") - 0.5) < 0.05


def test_audit_states_its_power_and_the_power_is_real(capsys):
    """The printed detection threshold falls with the trial count, and an understatement above it is caught."""
    mu = privacy.gdp_mu(epsilon=1.0, delta=1e-5)
    ks = [dmpmh.detectable_understatement(separation=mu, epsilon=1.0, delta=1e-5, trials=t)
          for t in (1000, 5000, 100000)]
    assert ks[0] > ks[1] > ks[2] > 1.0 and 2.0 < ks[1] < 3.0
    r = dmpmh.run_audit(dmpmh.AuditConfig(trials=2000, broken="understate", understate=1.5 * 2.96, seed=4),
                        verbose=False)
    assert r["detectable_understatement"] < 1.5 * 2.96 and r["epsilon_lower_bound"] > 1.0, r
    assert dmpmh.main(["audit", "--trials", "200", "--n-nodes", "30"]) == 0
    assert "power: at 200 trials per side this audit detects a sigma understated by" in capsys.readouterr().out
    assert dmpmh.main(["audit", "--understate", "0.5"]) == 2


def test_audit_covers_the_discrete_sampler():
    """--noise discrete: the real mechanism stays within its claim, a 6x understated sigma is caught."""
    ok = dmpmh.run_audit(dmpmh.AuditConfig(trials=600, n_nodes=30, noise="discrete", seed=1), verbose=False)
    assert ok["epsilon_lower_bound"] <= ok["claimed_epsilon"], ok
    bad = dmpmh.run_audit(dmpmh.AuditConfig(trials=600, n_nodes=30, noise="discrete", broken="understate",
                                            understate=6.0, seed=2), verbose=False)
    assert bad["epsilon_lower_bound"] > bad["claimed_epsilon"], bad


def test_gdp_mu_lower_bound_matches_the_trade_off_curve_and_covers():
    """evaluate.empirical_gdp_mu_lower_bound against the closed form of G_mu (Dong, Roth & Su, eq. 2.3).

    With error counts at their exact expectations for N(0,1) vs N(mu,1) and the midpoint threshold, the
    bound approaches mu from below as n grows; a test with worse errors gives a smaller bound; and over
    many simulated experiments at the true mu it exceeds mu in at most about alpha of them."""
    from scipy.stats import norm
    mu = 0.3
    lbs = []
    for n in (10**3, 10**5, 10**7):
        e = int(round(n * norm.cdf(-mu / 2)))
        lbs.append(evaluate.empirical_gdp_mu_lower_bound(e, e, n, n))
    assert lbs[0] < lbs[1] < lbs[2] < mu and mu - lbs[2] < 0.005, lbs
    # an unbalanced threshold: FPR = Phi(-t), FNR = Phi(t - mu); every threshold gives mu exactly in the limit
    n = 10**8
    t = 1.0
    fp, fn = int(round(n * norm.sf(t))), int(round(n * norm.cdf(t - mu)))
    assert abs(evaluate.empirical_gdp_mu_lower_bound(fp, fn, n, n) - mu) < 0.01
    assert evaluate.empirical_gdp_mu_lower_bound(n // 2, n // 2, n, n) == 0.0  # a coin flip proves nothing
    assert evaluate.empirical_gdp_mu_lower_bound(0, 0, 100, 100) > evaluate.empirical_gdp_mu_lower_bound(5, 5, 100, 100)
    rng = np.random.default_rng(0)
    m, p = 2000, norm.cdf(-mu / 2)
    hits = sum(evaluate.empirical_gdp_mu_lower_bound(int(a), int(b), m, m, alpha=0.05) > mu
               for a, b in rng.binomial(m, p, size=(400, 2)))
    assert hits <= 0.05 * 400 * 1.5, hits  # Bonferroni over two one-sided bounds: at most alpha, usually less
    with pytest.raises(ValueError):
        evaluate.empirical_gdp_mu_lower_bound(1, 1, 10, 10, alpha=0.0)


def test_gdp_audit_passes_the_real_mechanism_and_catches_a_small_understatement(capsys):
    """The mu-GDP test: the real sanitizer (Gaussian and discrete sampler) stays within its (claimed or
    Gaussian-equivalent) mu at
    2,000 trials a side, and a sigma understated 1.8x, which the epsilon test misses at this trial count
    (its threshold is about 2.9x), is caught; the printed power falls with the trial count."""
    kw = dict(separation=privacy.gdp_mu(epsilon=1.0, delta=1e-5), mu=privacy.gdp_mu(epsilon=1.0, delta=1e-5))
    ks = [dmpmh.gdp_detectable_understatement(trials=t, **kw) for t in (2000, 20000, 200000)]
    assert ks[0] > ks[1] > ks[2] > 1.0 and ks[1] < 1.25, ks
    assert dmpmh.gdp_detectable_understatement(separation=0.5 * kw["mu"], mu=kw["mu"], trials=10**6) > 2.0
    for noise in ("gaussian", "discrete"):
        ok = dmpmh.run_audit(dmpmh.AuditConfig(trials=2000, noise=noise, seed=1), verbose=False)
        assert ok["passes"] and ok["mu_lower_bound"] <= ok["claimed_mu"], ok
        assert 0.95 * ok["claimed_mu"] <= ok["canary_distance_in_sigmas"] <= ok["claimed_mu"] + 1e-9, ok
        bad = dmpmh.run_audit(dmpmh.AuditConfig(trials=2000, noise=noise, broken="understate", understate=1.8,
                                                seed=2), verbose=False)
        assert bad["mu_lower_bound"] > bad["claimed_mu"], bad
        # gaussian: mu is the claim, so the run fails; discrete: rho-zCDP is the claim, mu only warns
        assert bad["passes"] == (noise == "discrete") and bad["mu_is_the_claim"] == (noise == "gaussian"), bad
        assert bad["epsilon_lower_bound"] <= bad["claimed_epsilon"], bad  # the epsilon test alone misses it
        assert bad["gdp_detectable_understatement"] < 1.8 < bad["detectable_understatement"], bad
    assert dmpmh.main(["audit", "--trials", "200", "--n-nodes", "30"]) == 0
    out = capsys.readouterr().out
    assert "empirical mu lower bound" in out and "with the mu-GDP test" in out
