"""Dual-stream hashing networks and the holistic structural loss (the "distill" step).

This module never sees the private graph or the training labels. It receives
public features and a target provider ``targets(idx) -> (B, B) array`` built by
privacy.py from the released synthetic graph (or, for the non-private baseline
only, from the true graph).

Sources:
  * Jiang & Li, "Deep Cross-Modal Hashing", CVPR 2017 (arXiv 1602.02255): the
    pairwise likelihood with theta_ij = 1/2 h_i^T h_j (their eq. 2), the
    quantization and bit-balance terms (eq. 3).
  * Tang et al., "LINE: Large-scale Information Network Embedding", WWW 2015
    (arXiv 1503.03578): first- vs second-order proximity, which motivates the
    motif term.

The holistic loss, per batch of B training items with relaxed codes
H_img, H_txt in (-1, 1)^{B x bits} and soft targets S in [0, 1]^{B x B}:

  first-order  L1 = mean_{a,b in views} BCE(sigmoid(1/2 H_a H_b^T), S)          (DCMH eq. 2 with soft S)
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


def holistic_loss(codes: dict[str, torch.Tensor], target: torch.Tensor, w: LossWeights
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """The holistic structural loss of the module docstring; returns (total, parts)."""
    views = list(codes)
    parts: dict[str, torch.Tensor] = {}
    zero = target.new_zeros(())
    if w.first_order:
        terms = [F.binary_cross_entropy_with_logits(0.5 * codes[a] @ codes[b].T, target)
                 for i, a in enumerate(views) for b in views[i:]]
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
    """Per-dimension mean/std of public training features."""
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        return cls(x.mean(0), x.std(0) + 1e-6)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


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
