"""Canary audit of ONE DP-SGD step (privacy.EdgeDPSGD.step): the real step stays within its claim,
a step whose per-edge clip is missing, or whose noise is understated, is caught.

Setting: 5 items, so M = 10 pairs; the canary is the edge (0, 1), present in one graph and absent
in the other (the add/remove neighbours of the class docstring). Each pair has a fixed public
"gradient" of norm 10 (a function of the pair only, like the real per-edge gradients, which read
features and parameters, never labels). The auditor knows both graphs, so it subtracts the known
sum of the other edges and projects what is left on the canary's clipped direction: the optimal
test for the full-sampling (q = 1) Gaussian case. The claim for one step is the smaller of the
RDP and PLD epsilons that EdgeDPSGD.epsilon_spent reports.
"""
import numpy as np
import pytest

import evaluate
import privacy

N, DIM, DELTA, ALPHA = 5, 8, 1e-5, 0.05


def _grad(i, j):
    """A public per-pair vector of norm 10 (deterministic in the pair)."""
    v = np.random.default_rng(1000 * int(i) + int(j)).normal(size=DIM)
    return 10.0 * v / np.linalg.norm(v)


def _clipped_sum(clip=True):
    def f(si, sj, c):
        out = np.zeros(DIM, dtype=np.float32)
        for i, j in zip(si, sj):
            g = _grad(i, j)
            if clip:
                g = g * min(1.0, c / np.linalg.norm(g))
            out += g.astype(np.float32)
        return out
    return f


def _lookup(edges):
    es = {tuple(sorted(e)) for e in edges}
    return lambda si, sj: np.array([tuple(sorted((int(a), int(b)))) in es for a, b in zip(si, sj)], dtype=bool)


def _audit(*, q, sigma_run, sigma_claim, clip=True, trials=3000, seed=0):
    """Empirical epsilon lower bound for one step, and the step's claimed epsilon."""
    others = [(2, 3), (1, 4), (0, 4)]
    graphs = [_lookup(others), _lookup(others + [(0, 1)])]
    direction = _grad(0, 1)
    direction = direction / np.linalg.norm(direction)
    source = privacy.NoiseSource(insecure_seed=seed, quiet=True)
    mech = privacy.EdgeDPSGD(n_items=N, expected_batch_pairs=q * N * (N - 1) / 2, clip_norm=1.0,
                             noise_multiplier=sigma_run, source=source)
    summer = _clipped_sum(clip)
    stats = {0: [], 1: []}
    for _ in range(trials):
        for b in (0, 1):
            total, noise, (si, sj, is_edge) = mech.step(graphs[b], summer, DIM)
            # the auditor knows the other edges' contribution for the sampled pairs it cannot see;
            # at q = 1 every pair is sampled, so subtracting their full clipped sum is exact
            known = _clipped_sum(clip)(*zip(*others), 1.0) if q == 1 else 0.0
            stats[b].append(float(np.dot(total + noise - known, direction)))
    s0, s1 = np.array(stats[0]), np.array(stats[1])
    h = trials // 2
    best, tau = -1.0, 0.0
    for cand in np.quantile(np.concatenate([s0[:h], s1[:h]]), np.linspace(0.01, 0.99, 99)):
        e = evaluate.empirical_epsilon_lower_bound(int((s0[:h] > cand).sum()), int((s1[:h] <= cand).sum()),
                                                   h, h, delta=DELTA, alpha=ALPHA)
        if e > best:
            best, tau = e, cand
    m = trials - h
    lb = evaluate.empirical_epsilon_lower_bound(int((s0[h:] > tau).sum()), int((s1[h:] <= tau).sum()),
                                                m, m, delta=DELTA, alpha=ALPHA)
    claim_mech = privacy.EdgeDPSGD(n_items=N, expected_batch_pairs=q * N * (N - 1) / 2, clip_norm=1.0,
                                   noise_multiplier=sigma_claim, source=source)
    return lb, claim_mech.epsilon_spent(steps=1, delta=DELTA)["epsilon"]


def test_one_real_step_at_full_sampling_stays_within_its_claim():
    lb, claim = _audit(q=1.0, sigma_run=4.0, sigma_claim=4.0)
    # one full-sampling step is the Gaussian mechanism with mu = 1 / sigma: its exact epsilon
    assert claim == pytest.approx(privacy.gdp_epsilon(mu=0.25, delta=DELTA), rel=0.05)
    assert lb <= claim


@pytest.mark.parametrize("broken", ["noclip", "understate"])
def test_a_broken_step_is_caught(broken):
    if broken == "noclip":    # the canary's gradient (norm 10) enters unclipped: sensitivity 10, not C = 1
        lb, claim = _audit(q=1.0, sigma_run=4.0, sigma_claim=4.0, clip=False)
    else:                      # sigma 5x too small for the claim
        lb, claim = _audit(q=1.0, sigma_run=0.8, sigma_claim=4.0)
    assert lb > claim, (lb, claim)


def test_a_subsampled_real_step_stays_within_its_claim():
    lb, claim = _audit(q=0.5, sigma_run=0.7, sigma_claim=0.7)
    assert lb <= claim
