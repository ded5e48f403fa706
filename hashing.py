"""Dual-stream hashing networks and the holistic structural loss (the "distill" step).

This module never sees the private graph or the training labels. It receives
public features and a target provider ``targets(idx) -> (B, B) array`` built by
privacy.py from the released synthetic graph (or, for the non-private baseline
only, from the true graph). The one exception is ``train_dpsgd``, the edge-level
DP-SGD baseline: it queries the private graph through ``edge_lookup`` on its
secret Poisson sample of pairs only, through the mechanism privacy.EdgeDPSGD
that the caller passes in, and is accounted there.

Sources:
  * Jiang & Li, "Deep Cross-Modal Hashing", CVPR 2017 (arXiv 1602.02255): the
    pairwise likelihood with theta_ij = 1/2 h_i^T h_j (their eq. 2), the
    quantization and bit-balance terms (eq. 3).
  * Tang et al., "LINE: Large-scale Information Network Embedding", WWW 2015
    (arXiv 1503.03578): first- vs second-order proximity, which motivates the
    motif term.
  * DP-SGD baseline: Abadi et al., "Deep Learning with Differential Privacy",
    arXiv 1607.00133 (Algorithm 1); Mironov, Talwar, Zhang, "Renyi Differential
    Privacy of the Sampled Gaussian Mechanism", arXiv 1908.10530 (Poisson
    sampling, add/remove); ghost clipping, Li et al., arXiv 2110.05679.

The holistic loss, per batch of B training items with relaxed codes
H_img, H_txt in (-1, 1)^{B x bits} and soft targets S in [0, 1]^{B x B}:

  first-order  L1 = mean_{a,b in views} BCE(sigmoid(1/2 H_a H_b^T), S)          (DCMH eq. 2 with soft S;
               with --pair-balance, positives and negatives get equal total weight)
  triangle     L3 = mean((S^ o (S^ S^)/B - S o (S S)/B)^2),  S^ = sigmoid(1/2 Hbar Hbar^T)
  alignment    LA = mean((H_img - H_txt)^2)
  quantization LQ = mean((H - sign(H))^2)
  balance      LB = mean_bits(mean_batch(H)^2)

The triangle term compares, for every pair in the batch, the weight of the
triangles it closes in the predicted graph with that in the target graph: a
second-order (motif) signal. Its form, the soft BCE targets, and the default
weights are our design; the paper's abstract names the terms, not formulas.
Every term is switched off by a weight of 0.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def set_seed(seed: int) -> None:
    """The one place every non-DP random generator is seeded (not the DP noise)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - numpy's legacy generator, used by nothing DP-critical
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


class MLPEncoder(nn.Module):
    """Feature vector -> relaxed code in (-1, 1)^bits."""

    def __init__(self, in_dim: int, bits: int, hidden: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


class SmallCNN(nn.Module):
    """Raw 32x32 RGB thumbnails (flattened, values in [0, 1]) -> relaxed code."""

    def __init__(self, bits: int, side: int = 32):
        super().__init__()
        self.side = side
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(64 * (side // 4) ** 2, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, self.side, self.side, 3).permute(0, 3, 1, 2)
        return torch.tanh(self.head(self.conv(x).flatten(1)))


@dataclass
class LossWeights:
    first_order: float = 1.0
    triangle: float = 1.0
    alignment: float = 0.5
    quantization: float = 0.1
    balance: float = 0.1
    pair_balance: bool | tuple = False   # weight positive and negative pairs equally in the first-order term
    # (a tuple gives one flag per target graph when targets come as a (G, B, B) stack)


def _pairwise_bce(logits: torch.Tensor, target: torch.Tensor, balanced: bool) -> torch.Tensor:
    """BCE with soft targets; ``balanced`` gives the positive and negative parts equal total
    weight in the batch (for sparse graphs, where 99% of pairs are negatives). Our choice."""
    if not balanced:
        return F.binary_cross_entropy_with_logits(logits, target)
    p = target.mean().clamp(1e-4, 1 - 1e-4)
    pos = -(target * F.logsigmoid(logits)).mean() / p
    neg = -((1 - target) * F.logsigmoid(-logits)).mean() / (1 - p)
    return 0.5 * (pos + neg)


def holistic_loss(codes: dict[str, torch.Tensor], target: torch.Tensor, w: LossWeights
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """The holistic structural loss of the module docstring; returns (total, parts).

    ``target`` is (B, B), or (G, B, B) for G target graphs (e.g. the public prior and the
    synthetic graph): the first-order term is then the mean of its value on each graph, each
    balanced on its own, so that one graph's positives do not dilute the other's; the
    triangle term uses the mean graph."""
    views = list(codes)
    parts: dict[str, torch.Tensor] = {}
    zero = target.new_zeros(())
    graphs = list(target) if target.dim() == 3 else [target]
    target = graphs[0] if len(graphs) == 1 else torch.stack(graphs).mean(0)
    if w.first_order:
        balance = w.pair_balance if isinstance(w.pair_balance, tuple) else (w.pair_balance,) * len(graphs)
        if len(balance) != len(graphs):
            raise ValueError(f"pair_balance has {len(balance)} flags for {len(graphs)} target graphs")
        terms = [_pairwise_bce(0.5 * codes[a] @ codes[b].T, g, pb)
                 for g, pb in zip(graphs, balance) for i, a in enumerate(views) for b in views[i:]]
        parts["first_order"] = torch.stack(terms).mean()
    if w.triangle:
        hbar = torch.stack([codes[v] for v in views]).mean(0)
        pred = torch.sigmoid(0.5 * hbar @ hbar.T)
        b = target.shape[0]
        parts["triangle"] = ((pred * (pred @ pred) / b - target * (target @ target) / b) ** 2).mean()
    if w.alignment and len(views) == 2:
        parts["alignment"] = ((codes[views[0]] - codes[views[1]]) ** 2).mean()
    if w.quantization:
        parts["quantization"] = torch.stack([((h - h.sign()) ** 2).mean() for h in codes.values()]).mean()
    if w.balance:
        parts["balance"] = torch.stack([(h.mean(0) ** 2).mean() for h in codes.values()]).mean()
    total = zero
    for k, v in parts.items():
        total = total + getattr(w, k) * v
    return total, {k: float(v.detach()) for k, v in parts.items()}


@dataclass
class Standardizer:
    """Input normalisation fitted on public training features.

    ``standardize``: per-dimension mean/std. ``l2``: rows scaled to norm 10 (suits
    sparse bags of words, where per-dimension std blows rare tags up). ``none``.
    """
    mean: np.ndarray
    std: np.ndarray
    mode: str = "standardize"

    @classmethod
    def fit(cls, x: np.ndarray, mode: str = "standardize") -> "Standardizer":
        if mode not in ("standardize", "l2", "none"):
            raise ValueError(f"feature normalisation {mode!r}: choose standardize, l2 or none")
        return cls(x.mean(0), x.std(0) + 1e-6, mode)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "standardize":
            return ((x - self.mean) / self.std).astype(np.float32)
        if self.mode == "l2":
            return (10.0 * x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        return np.asarray(x, dtype=np.float32)


class DualStreamHasher(nn.Module):
    """One encoder per available view ("image", "text")."""

    def __init__(self, in_dims: dict[str, int], bits: int, hidden: int, cnn_views: tuple[str, ...] = ()):
        super().__init__()
        if bits <= 0 or bits % 8:
            raise ValueError(f"bits={bits} must be a positive multiple of 8")
        self.bits = bits
        self.encoders = nn.ModuleDict({v: (SmallCNN(bits) if v in cnn_views else MLPEncoder(d, bits, hidden))
                                       for v, d in in_dims.items()})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {v: self.encoders[v](x) for v, x in feats.items()}


def train_hashing(features: dict[str, np.ndarray], targets, *, bits: int, epochs: int, batch_size: int,
                  lr: float, hidden: int, weights: LossWeights, device: torch.device,
                  cnn_views: tuple[str, ...] = (), log_every: int = 1) -> DualStreamHasher:
    """Mini-batch training over training items; all B^2 pairs of a batch are used.

    ``features[v]`` is (N_train, d_v) public features; ``targets(idx)`` gives the
    (B, B) soft targets of the synthetic graph for those items.
    """
    n = len(next(iter(features.values())))
    model = DualStreamHasher({v: x.shape[1] for v, x in features.items()}, bits, hidden, cnn_views).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tensors = {v: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device) for v, x in features.items()}
    batch_size = min(batch_size, n)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n).numpy()
        totals: dict[str, float] = {}
        steps = 0
        for s in range(0, n - batch_size + 1, batch_size):
            idx = np.sort(perm[s:s + batch_size])
            t = torch.from_numpy(targets(idx)).to(device)
            codes = model({v: x[idx] for v, x in tensors.items()})
            loss, parts = holistic_loss(codes, t, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
        if log_every and (epoch % log_every == 0 or epoch == epochs):
            desc = "  ".join(f"{k} {v / max(steps, 1):.4f}" for k, v in totals.items())
            print(f"  epoch {epoch:3d}/{epochs}  {desc}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    return model


@torch.no_grad()
def encode(model: DualStreamHasher, features: dict[str, np.ndarray], *, device: torch.device,
           batch: int = 8192) -> dict[str, np.ndarray]:
    """{view: (N, bits) uint8 codes in {0, 1}} (sign of the relaxed code)."""
    model.eval()
    out = {}
    for v, x in features.items():
        chunks = []
        for s in range(0, len(x), batch):
            h = model.encoders[v](torch.from_numpy(np.ascontiguousarray(x[s:s + batch], dtype=np.float32)).to(device))
            chunks.append((h > 0).to(torch.uint8).cpu().numpy())
        out[v] = np.concatenate(chunks) if chunks else np.zeros((0, model.bits), dtype=np.uint8)
    return out


# ---------------------------------------------------------------------------
# Saving and loading a trained run (model.pt)
# ---------------------------------------------------------------------------

MODEL_FORMAT = 1


def model_record(model: DualStreamHasher, scalers: dict[str, Standardizer], config: dict) -> dict:
    """What ``model.pt`` holds: only dicts, lists, strings, numbers and tensors, so that
    ``torch.load(path)`` opens it with the default ``weights_only=True``.

    ``config`` is the run's JSON-serialisable configuration (dataclasses.asdict of dmpmh.Config);
    the scalers' parameters are saved as tensors in their own dtype, so new items are normalised
    exactly as the run's were."""
    in_dims, cnn = {}, []
    for v, enc in model.encoders.items():
        if isinstance(enc, SmallCNN):
            cnn.append(v)
            in_dims[v] = 3 * enc.side * enc.side
        else:
            in_dims[v] = int(enc.net[0].in_features)
    hidden = next((int(e.net[0].out_features) for e in model.encoders.values() if isinstance(e, MLPEncoder)),
                  int(config.get("hidden", 1024)))
    return {"format": MODEL_FORMAT, "bits": int(model.bits), "views": list(model.encoders),
            "in_dims": in_dims, "hidden": hidden, "cnn_views": cnn,
            "state_dict": {k: t.detach().cpu() for k, t in model.state_dict().items()},
            "scalers": {v: {"mode": s.mode, "mean": torch.from_numpy(np.array(s.mean, copy=True)),
                            "std": torch.from_numpy(np.array(s.std, copy=True))} for v, s in scalers.items()},
            "config": config}


@dataclass
class TrainedRun:
    """A trained run, loaded by ``load_run``: the networks, the feature scalers and the run's config."""
    model: DualStreamHasher
    scalers: dict[str, Standardizer]
    config: dict
    path: str

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.model.encoders)

    def features(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw public features {view: (N, d)} -> the normalised inputs the networks were trained on."""
        return {v: self.scalers[v](raw[v]) for v in self.views}

    def encode(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{view: (N, bits) uint8 codes in {0, 1}} for raw public features (post-processing: no privacy cost)."""
        missing = [v for v in self.views if v not in raw]
        if missing:
            raise ValueError(f"the run's model has views {list(self.views)}, but no features for {missing}")
        for v in self.views:
            want = self.model.encoders[v]
            d = 3 * want.side * want.side if isinstance(want, SmallCNN) else want.net[0].in_features
            if raw[v].ndim != 2 or raw[v].shape[1] != d:
                raise ValueError(f"{v} features have shape {tuple(raw[v].shape)}, but the run's {v} network "
                                 f"takes {d} columns: encode items of the dataset the run was trained on "
                                 "(or with its feature layout)")
        return encode(self.model, self.features(raw), device=next(self.model.parameters()).device)


def load_run(path: str, *, device: str | torch.device = "cpu") -> TrainedRun:
    """Load a trained run from its directory (or its ``model.pt``) with ``torch.load(weights_only=True)``.

    Raises ValueError, naming the path, when the directory or model.pt is missing or unreadable."""
    file = os.path.join(path, "model.pt") if os.path.isdir(path) else path
    if not os.path.exists(path):
        raise ValueError(f"--run {path}: no such directory; give a run directory (runs/<timestamp>-...)")
    if not os.path.isfile(file):
        raise ValueError(f"--run {path}: no model.pt in it; give a finished run directory (runs/<timestamp>-...)")
    try:
        rec = torch.load(file, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file gets a one-line answer
        if "weights only" in str(e).lower():
            raise ValueError(f"cannot load {file}: it holds objects that torch.load(weights_only=True) refuses, "
                             "so it was written before model.pt held only tensors and plain values: retrain "
                             "the run") from None
        raise ValueError(f"cannot load {file} ({type(e).__name__}): not a model.pt written by dmpmh.py") from None
    if not isinstance(rec, dict) or rec.get("format") != MODEL_FORMAT:
        raise ValueError(f"{file} is not a model.pt of format {MODEL_FORMAT}: retrain the run")
    model = DualStreamHasher(rec["in_dims"], rec["bits"], rec["hidden"], tuple(rec["cnn_views"]))
    model.load_state_dict(rec["state_dict"])
    model.to(device if isinstance(device, torch.device) else resolve_device(device)).eval()
    scalers = {v: Standardizer(s["mean"].numpy(), s["std"].numpy(), s["mode"]) for v, s in rec["scalers"].items()}
    return TrainedRun(model=model, scalers=scalers, config=rec["config"], path=os.path.dirname(file) or ".")


# ---------------------------------------------------------------------------
# DP-SGD baseline (edge-level), handwritten. The mechanism (Poisson sampling of
# pairs, per-edge clipping to C, Gaussian noise) and its accountant are
# privacy.EdgeDPSGD; this module computes the per-edge gradients and applies updates.
# ---------------------------------------------------------------------------

def _view_pairs(views: list[str]) -> list[tuple[str, str]]:
    """The (a, b), a <= b in view order, of holistic_loss's first-order term."""
    return [(a, b) for k, a in enumerate(views) for b in views[k:]]


def _pair_logits(codes_i: dict[str, torch.Tensor], codes_j: dict[str, torch.Tensor]) -> torch.Tensor:
    """(E, 2T) logits theta^{ab}_ij = 1/2 h^a_i . h^b_j and theta^{ab}_ji, for the T view pairs a <= b.

    This is holistic_loss's first-order term restricted to the entries (i, j) and
    (j, i) of each (a, b) block; for a = b the two are equal.
    """
    cols = []
    for a, b in _view_pairs(list(codes_i)):
        cols.append(0.5 * (codes_i[a] * codes_j[b]).sum(-1))
        cols.append(0.5 * (codes_j[a] * codes_i[b]).sum(-1))
    return torch.stack(cols, -1)


def _theta_sum(logits: torch.Tensor) -> torch.Tensor:
    """Theta_ij: the sum of the pair's 2T logits (last axis), the private part's per-edge function."""
    return logits.sum(-1)


def _softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum_theta log(1 + e^theta) over the pair's 2T logits: the label-free (public) per-pair loss."""
    return F.softplus(logits).sum(-1)


def _neg_softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum_theta log(1 + e^-theta) over the pair's 2T logits: a linked pair's loss in the public prior."""
    return F.softplus(-logits).sum(-1)


def per_edge_theta_grads(model: DualStreamHasher, feats: dict[str, torch.Tensor], i: np.ndarray, j: np.ndarray,
                         fn=_theta_sum) -> dict[str, torch.Tensor]:
    """Per-example gradients of fn(logits of pair (i, j)) (default Theta_ij, the sum of the 2T logits).

    ``torch.func``: ``vmap(grad(f))`` over pairs, with ``functional_call`` on the
    model's parameters, so each example's gradient is computed separately.
    Returns {parameter name: (E, *parameter shape)}. The model is run as it is
    (call ``model.eval()`` first: a dropout mask would make each gradient random).
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    ii = torch.as_tensor(np.asarray(i), dtype=torch.long, device=next(iter(feats.values())).device)
    jj = torch.as_tensor(np.asarray(j), dtype=torch.long, device=ii.device)
    x = {v: torch.stack([t[ii], t[jj]], 1) for v, t in feats.items()}  # (E, 2, d_v)

    def theta(p, xs):
        codes = torch.func.functional_call(model, (p, buffers), ({v: t for v, t in xs.items()},))
        return fn(_pair_logits({v: h[0] for v, h in codes.items()}, {v: h[1] for v, h in codes.items()}))

    return torch.func.vmap(torch.func.grad(theta), in_dims=(None, 0))(params, x)


def clip_and_sum(grads: dict[str, torch.Tensor], clip_norm: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """sum_e g_e * min(1, C / ||g_e||), ||g_e|| the L2 norm over all parameters concatenated.

    Returns (the clipped sum per parameter, the per-example norms before clipping).
    Each clipped term has norm <= C, so adding or removing one term moves the sum
    by at most C in L2 (the triangle inequality is not even needed: the change is
    the term itself).
    """
    flat = [g.reshape(g.shape[0], -1) for g in grads.values()]
    norms = torch.sqrt(sum((f * f).sum(1) for f in flat))
    scale = torch.clamp(clip_norm / torch.clamp(norms, min=1e-12), max=1.0)
    return {k: torch.tensordot(scale, g, dims=1) for k, g in grads.items()}, norms


def ghost_clipped_edge_sum(model: DualStreamHasher, feats: dict[str, torch.Tensor], i: np.ndarray, j: np.ndarray,
                           clip_norm: float, fn=_theta_sum) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The same as ``clip_and_sum(per_edge_theta_grads(...), C)``, without materialising per-edge gradients.

    Only for MLPEncoder streams (Linear-ReLU-Dropout-Linear-tanh) in eval mode.
    For a Linear layer z = W x + b that sees the two items i, j of edge e, the
    edge's gradient is G_e = d_i x_i^T + d_j x_j^T with d the backpropagated
    signal dTheta_e/dz of each item, so (the identity behind ghost clipping; Li,
    Tramer, Liang, Hashimoto, arXiv 2110.05679, Section 4, with a "sequence" of
    length 2; per-example norms from layer signals as in Goodfellow, arXiv
    1510.01799)

        ||G_e||_F^2 = |d_i|^2 |x_i|^2 + |d_j|^2 |x_j|^2 + 2 (d_i . d_j)(x_i . x_j),
        ||grad b||^2 = |d_i + d_j|^2.

    One forward of the 2E endpoint rows (row e is item i_e, row E + e is j_e, so
    every row feeds exactly one Theta_e) and one backward of sum_e Theta_e give
    every d; the squared norms of all layers and views add up to ||grad Theta_e||^2.
    The clipped sum is then one more backward of sum_e w_e Theta_e, w_e =
    min(1, C / ||grad Theta_e||) held constant. tests/test_dpsgd.py checks norms
    and sums against the vmap path. Returns (clipped sum per parameter, norms).
    ``fn`` replaces Theta_e by any per-pair function of the pair's logits (the identity holds for
    any scalar f_e that reads only the rows of its own pair): ``_softplus_sum`` for the public part.
    """
    for v, enc in model.encoders.items():
        if not isinstance(enc, MLPEncoder):
            raise ValueError(f"ghost clipping supports MLPEncoder streams only; view {v!r} is {type(enc).__name__}")
    if model.training:
        raise ValueError("ghost clipping needs the model in eval mode (no dropout)")
    e = len(i)
    dev = next(iter(feats.values())).device
    rows = torch.as_tensor(np.concatenate([np.asarray(i), np.asarray(j)]), dtype=torch.long, device=dev)
    xs, z1s, a1s, z2s, codes = {}, {}, {}, {}, {}
    for v, enc in model.encoders.items():
        lin1, _, _, lin2 = enc.net
        xs[v] = feats[v][rows]
        z1s[v] = lin1(xs[v])
        a1s[v] = torch.relu(z1s[v])
        z2s[v] = lin2(a1s[v])
        codes[v] = torch.tanh(z2s[v])
    theta = fn(_pair_logits({v: h[:e] for v, h in codes.items()}, {v: h[e:] for v, h in codes.items()}))  # (E,)
    views = list(model.encoders)
    sig = torch.autograd.grad(theta.sum(), [z1s[v] for v in views] + [z2s[v] for v in views], retain_graph=True)
    sq = theta.new_zeros(e)
    with torch.no_grad():
        for d, inp in zip(sig, [xs[v] for v in views] + [a1s[v] for v in views]):
            di, dj, xi, xj = d[:e], d[e:], inp[:e], inp[e:]
            sq += ((di * di).sum(1) * (xi * xi).sum(1) + (dj * dj).sum(1) * (xj * xj).sum(1)
                   + 2 * (di * dj).sum(1) * (xi * xj).sum(1))  # weight
            sq += ((di + dj) ** 2).sum(1)  # bias
        norms = torch.sqrt(torch.clamp(sq, min=0.0))
        w = torch.clamp(clip_norm / torch.clamp(norms, min=1e-12), max=1.0)
    names = [k for k, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    grads = torch.autograd.grad((w * theta).sum(), params, allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(p)) for k, g, p in zip(names, grads, params)}, norms


def clipped_edge_sum(model: DualStreamHasher, feats: dict[str, torch.Tensor], i: np.ndarray, j: np.ndarray, *,
                     clip_norm: float, method: str = "auto", chunk_size: int = 128, fn=_theta_sum
                     ) -> dict[str, torch.Tensor]:
    """sum over edges (i, j) of grad Theta_ij clipped to L2 norm C (all parameters concatenated).

    method 'vmap': torch.func per-example gradients, ``chunk_size`` edges at a
    time (any network); 'ghost': ``ghost_clipped_edge_sum`` (MLP streams, same
    result, no per-example gradients held); 'auto': ghost where it applies.
    """
    out = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for part, _ in _clipped_chunks(model, feats, i, j, clip_norm, method, chunk_size, fn):
        for k in out:
            out[k] += part[k]
    return out


def _clipped_chunks(model: DualStreamHasher, feats: dict[str, torch.Tensor], i: np.ndarray, j: np.ndarray,
                    clip_norm: float, method: str, chunk_size: int, fn=_theta_sum):
    """Yield (clipped sum, per-pair norms) chunk by chunk: the one dispatch behind ``clipped_edge_sum``
    and ``pair_grad_norms`` ('auto': ghost where every stream is an MLP, else vmap)."""
    if method == "auto":
        method = "ghost" if all(isinstance(enc, MLPEncoder) for enc in model.encoders.values()) else "vmap"
    if method == "ghost":
        step = max(chunk_size, 4096)  # per-edge state is O(hidden), not O(parameters)
    elif method == "vmap":
        step = chunk_size
    else:
        raise ValueError(f"per-edge gradient method={method!r}: choose auto, vmap or ghost")
    for s in range(0, len(i), step):
        if method == "ghost":
            yield ghost_clipped_edge_sum(model, feats, i[s:s + step], j[s:s + step], clip_norm, fn)
        else:
            yield clip_and_sum(per_edge_theta_grads(model, feats, i[s:s + step], j[s:s + step], fn), clip_norm)


def pair_grad_norms(model: DualStreamHasher, feats: dict[str, torch.Tensor], i: np.ndarray, j: np.ndarray, *,
                    method: str = "auto", chunk_size: int = 128, fn=_theta_sum) -> np.ndarray:
    """||grad fn(logits_ij)|| (all parameters concatenated; fn = Theta_ij by default) for each pair (i_e, j_e),
    float64, shape (E,).

    The same norms that ``clipped_edge_sum`` compares with C (ghost or vmap, ``method`` as there);
    call ``model.eval()`` first. Used on PUBLIC pairs only (``public_clip_norm``)."""
    out = [nrm.detach().cpu().numpy().astype(np.float64)
           for _, nrm in _clipped_chunks(model, feats, i, j, 1.0, method, chunk_size, fn)]
    return np.concatenate(out) if out else np.zeros(0)


def _dpsgd_start(features: dict[str, np.ndarray], bits: int, hidden: int, cnn_views: tuple[str, ...],
                 device: torch.device, init_state: dict | None) -> tuple[DualStreamHasher, dict[str, torch.Tensor]]:
    """DP-SGD's starting model (eval mode: no dropout; ``init_state`` loaded if given, else torch's
    initialisation) and the features as float32 tensors on ``device``."""
    model = DualStreamHasher({v: x.shape[1] for v, x in features.items()}, bits, hidden, cnn_views).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.eval()
    tensors = {v: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device) for v, x in features.items()}
    return model, tensors


DPSGD_CLIP_QUANTILE = 0.9
DPSGD_EDGES_CLIP_QUANTILE = 0.1  # 'edges' sampling: the quantile of ||grad l^+_ij|| over public pairs (sixth pass)


def public_clip_norm(features: dict[str, np.ndarray], *, bits: int, hidden: int, init_state: dict,
                     pairs: tuple[np.ndarray, np.ndarray], device: torch.device, cnn_views: tuple[str, ...] = (),
                     quantile: float = DPSGD_CLIP_QUANTILE, linked: bool = False) -> float:
    """DP-SGD's clip norm C by a public rule (``--dpsgd-clip auto``; issue 16, fifth pass): the
    ``quantile`` of ||grad Theta_ij|| over PUBLIC pairs, for the model DP-SGD starts from.

    ``linked=True`` (the 'edges' sampling of ``train_dpsgd``, sixth pass; with quantile
    ``DPSGD_EDGES_CLIP_QUANTILE``): the norms are those of that sampling's per-edge function,
    sum_theta log(1 + e^-theta) (2T times the linked-pair loss l^+_ij), over the same public pairs. Why: its
    gradient sigmoid(-theta) grad theta is 1.5-4x smaller than grad Theta_ij (MIRFlickr interaction
    graph, warm start: 7.6 / 13.6 / 19.5 at the 10th / 50th / 90th percentile against 24 / 27 / 30),
    so a C from grad Theta_ij clips nothing and the noise, sigma C, dwarfs the edge terms. The
    public pairs stand in for the edges: on that graph the edges' norms (a NOT PRIVATE diagnostic,
    not used by the rule) are 6.3 / 13.1 / 19.2. At the 10th percentile nearly every edge term is
    clipped to C: the update is close to a sum of edge gradient directions.

    Reads: the public features of the training items, ``init_state`` (the public-only warm start, or
    a random initialisation: no private data either way) and ``pairs``, a uniform sample of pairs
    drawn by a public generator. It reads no label and no edge, so C is a public constant fixed before
    the mechanism's first step, and the proof of ``privacy.EdgeDPSGD`` (sensitivity C) holds as for
    any C > 0.

    What it changes (measured; README, "DP-SGD", fifth pass). grad Theta_ij has nearly the same
    norm for every pair (synthetic default, warm start: 57 / 64 / 72 at the 10th / 50th / 90th
    percentile; MIRFlickr 24 / 27 / 30). At C = 1 (the default until then) every edge term is cut
    25-70x to a unit direction, and so is every label-free term sigmoid(theta) grad theta except
    for pairs already far apart (sigmoid(theta) below about 1/30). Under 'sgd' (learning rate
    lr / u, u = C / (2T B)) C then nearly cancels out of the update, which becomes a sum of per-pair
    gradient DIRECTIONS: the label-free term loses its sigmoid weight, and with one view an edge's
    public and private terms cancel exactly. With C at the 90th percentile about nine terms in ten
    are unclipped and the update is the pairwise likelihood's own gradient. It converges where the
    normalised update drifts (synthetic, no noise: above the non-private reference), and since its
    terms are smaller against the same noise (lr sigma per weight), epsilon now matters. It is the
    default; ``--dpsgd-clip 1`` gives the normalised update, which was stronger on the MIRFlickr
    label graph (README).
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile={quantile!r} must be in (0, 1]")
    model, tensors = _dpsgd_start(features, bits, hidden, cnn_views, device, init_state)
    i, j = (np.asarray(a, dtype=np.int64) for a in pairs)
    if not len(i):
        raise ValueError("public_clip_norm needs at least one public pair")
    norms = pair_grad_norms(model, tensors, i, j, fn=_neg_softplus_sum if linked else _theta_sum)
    c = float(np.quantile(norms, quantile))
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"the public gradient norms give C = {c!r}; pass --dpsgd-clip a positive number")
    return c


DPSGD_OPTIMIZERS = ("sgd", "adam", "adam-eps")


def dpsgd_optimizer(params, name: str, *, lr: float, clip_norm: float, n_logits: int,
                    expected_batch_pairs: float) -> torch.optim.Optimizer:
    """The optimiser of ``train_dpsgd``, its settings from public quantities only (C, 2T, B, lr).

    One clipped pair term moves the gradient by at most u = C / (2T B) (the step minimises the mean over
    B expected pairs of the 2T-logit loss). 'adam': Adam(lr), the pre-issue-16 update; it divides each
    coordinate by its running gradient scale, so a small, noise-free clipped signal becomes full-size
    steps of about lr. 'sgd': plain SGD with learning rate lr / u = lr 2T B / C, so one clipped pair term
    moves the parameters by at most lr, whatever the noise. 'adam-eps': Adam(lr, eps = u); coordinates
    whose gradient scale is below u get SGD-like steps (lr / u times the momentum), larger ones Adam's."""
    unit = clip_norm / (n_logits * expected_batch_pairs)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr / unit)
    if name == "adam-eps":
        return torch.optim.Adam(params, lr=lr, eps=unit)
    raise ValueError(f"optimizer={name!r}: choose {', '.join(DPSGD_OPTIMIZERS)}")


def train_dpsgd(features: dict[str, np.ndarray], edge_lookup, *, bits: int, steps: int, mechanism,
                lr: float, hidden: int, device: torch.device, log_every: int = 50,
                per_edge: str = "auto", chunk_size: int = 128, alignment: float = 0.0,
                quantization: float = 0.0, balance: float = 0.0, cnn_views: tuple[str, ...] = (),
                public_seed: int = 0, public_clip: bool = True, public_pairs: int | None = None,
                init_state: dict | None = None, debug_not_private_log: bool = False,
                optimizer: str = "sgd", prior_pairs: np.ndarray | None = None,
                prior_weight: float = 0.5, sampling: str = "pairs",
                edge_denominator: float | None = None) -> DualStreamHasher:
    """Edge-level DP-SGD baseline on the pairwise (first-order) likelihood; returns the model (eval mode).

    The mechanism (Poisson sampling of pairs, the only access to the graph, per-edge clipping to C,
    Gaussian noise) and its proof are ``privacy.EdgeDPSGD``, passed in as ``mechanism`` (hashing.py
    does not import privacy.py); this function computes gradients and applies the updates.

    Data. ``features[v]`` are the (N, d_v) public features of the training items 0..N-1.
    ``edge_lookup(i, j) -> bool array`` is handed to the mechanism, which calls it once per step on
    the secretly sampled pairs only.

    Loss. The DCMH pairwise likelihood (Jiang & Li, arXiv 1602.02255, eq. 2) with hard labels
    S_ij in {0, 1}, cross- and intra-modal as in ``holistic_loss``'s first-order term: for each
    unordered pair i < j and each of the 2T logits theta in {theta^{ab}_ij, theta^{ab}_ji : views
    a <= b}, theta^{ab}_ij = 1/2 h^a_i . h^b_j,

        l_ij = 1/(2T) sum_theta [ log(1 + e^theta) - S_ij theta ],

    and the step minimises (1/B) sum over sampled pairs, B = the mechanism's expected batch (a
    fixed, public denominator). The gradient is (P - Q) / (2T B), with the label-free public part
    P = sum over S' of grad sum_theta log(1 + e^theta), and the private part Q = the mechanism's
    noisy sum of clipped grad Theta_ij over the sampled edges.

    Public part. Computed on S': ``public_pairs`` pairs (default round(B)) drawn uniformly from a
    public generator seeded by ``public_seed``, independent of the secret sample S, and rescaled
    by B / |S'| (unbiased for E[P(S)]). It reads no label, so how it is computed is
    post-processing. ``public_clip=True`` (default; our choice, issue 16) clips each pair's public
    gradient to the same norm C as the private terms. Why: unclipped, a pair's label-free gradient
    sum_theta sigmoid(theta) grad theta has norm far above C, while its private counterpart is cut
    to C; the public part then swamps the label signal and DP-SGD learns only the label-free
    repulsion (measured: no better than chance, at any epsilon). With both clipped to C, an edge's
    public and private terms cancel as they do in the unclipped loss. ``public_clip=False`` keeps
    the pre-issue-16 update exactly (tests/test_dpsgd.py pins it bit for bit).

    Hyper-parameters (the rule; README, "DP-SGD: why it did not learn"). They read only public
    quantities, never the private graph: steps T = 300, expected batch B = 4096 pairs, ``lr`` = 4e-3
    and the public sample |S'| = B are fixed constants; q = B / M from the public N ('pairs'), or
    q = E / max(m~, E) from the released edge count m~ with E = 2048 expected edges a step ('edges', which
    ``--dpsgd-sampling auto``, the CLI default, takes below released density 0.1;
    ``privacy.dpsgd_edge_rate``, 5% of the budget); the noise multiplier from (q, T,
    epsilon, delta) (the steps' share of them) by ``privacy.calibrate_noise_multiplier``; the clip norm
    C (the mechanism's) by ``public_clip_norm`` from public pairs at the public starting model
    (``--dpsgd-clip auto``, the default since the fifth pass), or a given constant (1, the earlier
    default, is far below the per-pair gradient norms, so under 'sgd' C nearly cancels out).
    The optimiser (``optimizer``, ``dpsgd_optimizer``; issue 16, third pass): 'sgd' (default) is
    plain SGD with learning rate lr / u, u = C / (2T B) the largest gradient one clipped pair term
    can make (2T here is the number of logits per pair, ``n_logits``). So one pair term moves the
    weights by at most lr, the Gaussian noise (norm sigma C / (2T B) per coordinate) moves each
    coordinate by lr sigma per step, and the step size does not depend on the noise or on the graph.
    (Under 'edges' B is |S'|, and a private edge term moves the weights by at most
    lr (1 - w) |S'| / (2E), E from the released count: below lr when E >= |S'| / 2.)
    'adam' is the pre-issue-16 Adam(lr): it divides each coordinate by its running gradient scale,
    so with little noise the small clipped signal became full-size steps of about lr that undid the
    warm start (measured: sanity mode 0.640 -> 0.597 I->T in 100 steps on the synthetic default),
    and noise damped them (epsilon 8 above the sanity mode). 'adam-eps' is Adam(lr, eps = u).
    A user who tunes any of them on their private graph spends privacy budget that no statement
    counts.

    Public prior (``prior_pairs``; issue 16, fourth pass). The public-feature kNN graph (an (m, 2)
    array of public pairs, ``privacy.public_support``) joins the objective as it does for every
    graph-trained method (``holistic_loss`` with two target graphs, the prior balanced on its own):

        (1 - w) * [the pairwise likelihood of the private graph, above]
          + w * 1/2 [mean over prior pairs of l^+ + mean over all pairs of l^-],

    w = ``prior_weight`` (default 1/2: the two graphs' equal shares in ``holistic_loss``), l^+ =
    1/(2T) sum_theta log(1 + e^-theta), l^- = 1/(2T) sum_theta log(1 + e^theta). The prior term
    reads public data only (|S'| / 4 kNN pairs per step, drawn with replacement by the public
    generator after S'; the all-pairs mean on S'), so it is post-processing and costs no budget; its per-pair gradients are clipped to C like
    every other term, so that all terms are in the same units under 'sgd'. Why: trained to
    convergence without noise, the pairwise likelihood alone ends below the public-only model it
    starts from, and with the prior it ends above the non-private reference (README, "DP-SGD";
    measured, 3 seeds). The private part is multiplied by 1 - w after the noise (post-processing).

    Sampling (``sampling``; issue 16, sixth pass). 'pairs' is the update above: the mechanism's
    q = B / M, so a step samples B times the density edges (about 10 on a graph of mean degree 25 over
    10,000 items) against B public pairs, and on sparse graphs the private term vanishes (measured:
    no better than public-only on the MIRFlickr interaction graph at any epsilon). 'edges' (what
    ``--dpsgd-sampling auto`` takes below released density 0.1) is the pair-balanced likelihood (as
    ``holistic_loss`` with pair balance, except that l^- is averaged over all pairs, not the
    non-edges only: the difference is of the order of the density):

        (1 - w) * 1/2 [(1/m) sum over edges of l^+ + mean over all pairs of l^-]
          + w * 1/2 [mean over prior pairs of l^+ + mean over all pairs of l^-],

    estimated per step by (1/E) * (the mechanism's noisy sum of clipped grad l^+_ij over its sampled
    edges), E = ``edge_denominator`` = q * max(m~, 2048), the expected number of sampled edges by the
    released count m~, floored (``privacy.dpsgd_edge_rate`` sets q from it), and the
    all-pairs mean of l^- on S' (|S'| = ``public_pairs``, required here; clipped to C). Each edge
    enters through one clipped summand S_ij clip_C(grad l^+_ij): the mechanism's proof holds as it
    stands. Under 'sgd' the learning-rate unit u uses B = |S'|.

    Warm start. ``init_state`` (a state_dict, e.g. of the public-only model, which reads no private
    data) replaces the random initialisation: post-processing of public data, no budget.

    Which terms may be used. Only terms in which one edge changes one additive, clipped summand;
    the triangle term couples pairs and is not used. Quantization, bit balance and cross-modal
    alignment read no label; they may join the public part, computed on the items of S'
    (weights ``quantization``, ``balance``, ``alignment``; default 0: DESIGN.md's DP-SGD baseline
    uses only pairwise terms). They are not clipped: under 'sgd' (learning rate lr / u) their
    gradient takes steps far larger than the clipped pair terms' (measured unstable at the holistic
    weights 0.5 / 0.1 / 0.1; README).

    Dropout. The model stays in eval mode throughout (no dropout), so per-example gradients are
    deterministic. The network is otherwise the same DualStreamHasher as ``train_hashing``'s.

    Randomness. The DP noise and the secret sample's seed come from the mechanism's noise source,
    never from torch's generator. Model initialisation uses torch's global generator
    (``set_seed``): public randomness.

    Logging. Every ``log_every`` steps: step, |S'| and the label-free loss part on S' (public), and
    the norm of the noisy update (post-processing). The number of sampled edges and the exact loss
    are un-noised statistics of the private graph; they are printed only with
    ``debug_not_private_log=True``, which voids the guarantee for whoever sees the log.

    Per-edge gradients (``per_edge``). 'vmap': torch.func ``vmap(grad(.))`` with
    ``functional_call``, materialised ``chunk_size`` edges at a time (any network). 'ghost': the
    same clipped sum from per-layer signals (MLP streams only; ``ghost_clipped_edge_sum``, tested
    equal to vmap). 'auto' (default) takes ghost where it applies.
    """
    n = len(next(iter(features.values())))
    if n < 2:
        raise ValueError(f"train_dpsgd needs at least 2 training items, got {n}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    if mechanism is None or not hasattr(mechanism, "step"):
        raise ValueError(f"mechanism={mechanism!r}: pass a privacy.EdgeDPSGD")
    if getattr(mechanism, "n", n) != n:
        raise ValueError(f"the mechanism is built for {mechanism.n} items, the features have {n}")
    if per_edge not in ("auto", "vmap", "ghost"):
        raise ValueError(f"per_edge={per_edge!r}: choose auto, vmap or ghost")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    if public_pairs is not None and not (isinstance(public_pairs, int) and public_pairs >= 1):
        raise ValueError(f"public_pairs={public_pairs!r} must be an integer >= 1")
    if prior_pairs is not None:
        prior_pairs = np.asarray(prior_pairs, dtype=np.int64)
        if prior_pairs.ndim != 2 or prior_pairs.shape[1] != 2 or not len(prior_pairs):
            raise ValueError(f"prior_pairs has shape {prior_pairs.shape}; expected a non-empty (m, 2) array")
        if not public_clip:
            raise ValueError("prior_pairs needs public_clip=True (the prior's pair terms are clipped like the rest)")
    if not (math.isfinite(prior_weight) and 0 <= prior_weight < 1):
        raise ValueError(f"prior_weight={prior_weight!r} must be in [0, 1)")
    if optimizer not in DPSGD_OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: choose {', '.join(DPSGD_OPTIMIZERS)}")
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr={lr!r} must be a finite number >= 0")
    if sampling not in ("pairs", "edges"):
        raise ValueError(f"sampling={sampling!r}: choose pairs or edges")
    if sampling == "edges":
        if public_pairs is None or not public_clip:
            raise ValueError("sampling='edges' needs public_pairs (the size of S') and public_clip=True")
        if edge_denominator is None or not (math.isfinite(edge_denominator) and edge_denominator > 0):
            raise ValueError(f"sampling='edges' needs edge_denominator > 0 (E = q * max(m~, 1)), "
                             f"got {edge_denominator!r}")
    if mechanism.noise_multiplier == 0:
        print("WARNING: train_dpsgd with noise_multiplier=0 adds no noise: NOT PRIVATE.", flush=True)
    if debug_not_private_log:
        print("WARNING: debug_not_private_log prints un-noised statistics of the private graph: NOT PRIVATE.",
              flush=True)

    expected_batch_pairs = mechanism.expected_batch_pairs
    clip_norm = mechanism.clip_norm
    n_pub = max(1, int(round(expected_batch_pairs))) if public_pairs is None else int(public_pairs)
    n_pub = min(n_pub, mechanism.m)
    edges = sampling == "edges"
    if edges:  # the learning-rate unit and the public term's denominator: the public sample S'
        expected_batch_pairs = float(n_pub)
    model, tensors = _dpsgd_start(features, bits, hidden, cnn_views, device, init_state)
    names = [k for k, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    n_logits = 2 * len(_view_pairs(list(features)))
    denom = n_logits * float(expected_batch_pairs)
    opt = dpsgd_optimizer(model.parameters(), optimizer, lr=lr, clip_norm=clip_norm, n_logits=n_logits,
                          expected_batch_pairs=float(expected_batch_pairs))
    public_rng = np.random.default_rng(public_seed)  # S' is public: its own stream, unrelated to S

    edge_fn = _neg_softplus_sum if edges else _theta_sum  # the per-edge function f_ij of privacy.EdgeDPSGD

    def clipped_sum(i, j, c):
        return clipped_edge_sum(model, tensors, i, j, clip_norm=c, method=per_edge, chunk_size=chunk_size,
                                fn=edge_fn)

    for step in range(1, steps + 1):
        # ---- private part (privacy.EdgeDPSGD): secret Poisson sample S, clipped per-edge sum, noise
        priv, noise, (si, sj, is_edge) = mechanism.step(edge_lookup, clipped_sum, sum(sizes))
        if noise is not None:
            z = torch.from_numpy(noise).to(device)
            for k, chunk in zip(names, torch.split(z, sizes)):
                priv[k] += chunk.view_as(priv[k])
        pi, pj = mechanism.public_sample(n_pub, public_rng)  # S': independent, label-free

        # ---- public part on S': label-free pairwise term (+ optional label-free item terms)
        items, inv = np.unique(np.concatenate([pi, pj]), return_inverse=True)
        codes = model({v: x[torch.from_numpy(items).to(device)] for v, x in tensors.items()})
        a = torch.from_numpy(inv[:len(pi)]).to(device)
        b = torch.from_numpy(inv[len(pi):]).to(device)
        logits = _pair_logits({v: h[a] for v, h in codes.items()}, {v: h[b] for v, h in codes.items()})
        pub_pair = F.softplus(logits).sum() * (float(expected_batch_pairs) / n_pub) / denom
        pub = pub_pair if not public_clip else pub_pair.new_zeros(())
        extra: dict[str, torch.Tensor] = {}
        if alignment and len(codes) == 2:
            ha, hb = codes.values()
            extra["alignment"] = ((ha - hb) ** 2).mean()
        if quantization:
            extra["quantization"] = torch.stack([((h - h.sign()) ** 2).mean() for h in codes.values()]).mean()
        if balance:
            extra["balance"] = torch.stack([(h.mean(0) ** 2).mean() for h in codes.values()]).mean()
        weight = {"alignment": alignment, "quantization": quantization, "balance": balance}
        for k, v in extra.items():
            pub = pub + weight[k] * v
        opt.zero_grad()
        if pub.requires_grad:
            pub.backward()
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if public_clip:  # each public pair's label-free gradient clipped to C, like the private terms
            pclip = clipped_edge_sum(model, tensors, pi, pj, clip_norm=clip_norm, method=per_edge,
                                     chunk_size=chunk_size, fn=_softplus_sum)
            scale = (float(expected_batch_pairs) / n_pub) / denom
        pos = None
        if prior_pairs is not None:  # the public prior's linked pairs, sampled with the public generator
            pick = public_rng.integers(0, len(prior_pairs), size=max(1, n_pub // 4))
            pos = clipped_edge_sum(model, tensors, prior_pairs[pick, 0], prior_pairs[pick, 1], clip_norm=clip_norm,
                                   method=per_edge, chunk_size=chunk_size, fn=_neg_softplus_sum)
            w_priv, w_neg, w_pos = 1.0 - prior_weight, 1.0 - prior_weight / 2, prior_weight / 2 / (n_logits * len(pick))
        if edges:  # the pair-balanced likelihood: negatives 1/2, private edges (1 - w)/2, prior edges w/2
            w = prior_weight if pos is not None else 0.0
            w_neg = 0.5 / (n_logits * n_pub)
            w_priv = (1.0 - w) * 0.5 / (n_logits * float(edge_denominator))
            w_pos = w * 0.5 / (n_logits * len(pick)) if pos is not None else 0.0
        upd_sq = 0.0
        with torch.no_grad():
            for k, p in model.named_parameters():
                if edges:
                    p.grad += pclip[k] * w_neg + priv[k] * w_priv
                    if pos is not None:
                        p.grad += pos[k] * w_pos
                elif pos is None:  # the pairwise likelihood alone (these expressions are pinned bit for bit)
                    if public_clip:
                        p.grad += pclip[k] * scale
                    p.grad -= priv[k] / denom
                else:
                    p.grad += pclip[k] * (scale * w_neg) + pos[k] * w_pos
                    p.grad -= priv[k] * (w_priv / denom)
                upd_sq += float((p.grad ** 2).sum())
        opt.step()

        if log_every and (step % log_every == 0 or step == steps or step == 1):
            msg = (f"  dpsgd step {step:5d}/{steps}  public pairs {n_pub}"
                   f"  label-free loss {float(pub_pair.detach()):.4f}"
                   + "".join(f"  {k} {float(v.detach()):.4f}" for k, v in extra.items())
                   + f"  noisy grad norm {upd_sq ** 0.5:.4g}")  # no elapsed time: it grows with sampled edges
            if debug_not_private_log and edges:
                msg += f"  [NOT PRIVATE: sampled pairs {len(si)}, edges {int(is_edge.sum())}]"
            elif debug_not_private_log:
                with torch.no_grad():
                    c = model({v: x for v, x in tensors.items()})
                    ti = torch.from_numpy(si).to(device)
                    tj = torch.from_numpy(sj).to(device)
                    lg = _pair_logits({v: h[ti] for v, h in c.items()}, {v: h[tj] for v, h in c.items()})
                    y = torch.from_numpy(is_edge).to(device).float()[:, None]
                    exact = float((F.softplus(lg) - y * lg).sum()) / denom
                msg += f"  [NOT PRIVATE: sampled pairs {len(si)}, edges {int(is_edge.sum())}, loss {exact:.4f}]"
            print(msg, flush=True)
    model.eval()
    return model
