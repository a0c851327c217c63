"""How much of a mini-batch gradient is signal: the full gradient against the sampling noise.

A mini-batch of B samples drawn without replacement from N gives the gradient g_B, an unbiased
estimate of the full gradient ∇L with

    E ||g_B − ∇L||² = tr Σ_B = (S² / B) (1 − B / N),      S² = (1/(N−1)) Σ_i ||g_i − ∇L||²,

the per-sample gradient variance (a finite population's; Cochran 1977, "Sampling Techniques",
thm. 2.2). Its *signal-to-noise ratio* is SNR = ||∇L||² / tr Σ_B. Where SNR < 1 a step follows
the noise more than the slope: SGD at a constant rate then hovers at a *noise floor* instead of
going down, and only a smaller rate or a larger batch lowers it. The batch size at which
SNR = 1 is B* = S² / (||∇L||² + S²/N).

Both are measured on a sample of n samples split at random into m disjoint batches of b: for a
random partition, E[(1/(m−1)) Σ_j ||g_j − ḡ||²] = S²/b exactly (the batch means' covariance
−S²/n cancels), so S² ≈ b · that spread; and E||ḡ||² = ||∇L||² + (S²/n)(1 − n/N), from which
the squared norm of the full gradient is estimated without bias (clamped at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from descentlab.checks import check_int
from descentlab.curvature import EmpiricalLoss
from descentlab.curvature.batches import batch_size as batch_count
from descentlab.curvature.batches import take
from descentlab.ranks import smallest, world_size

__all__ = ["NoiseEstimate", "gradient_noise"]


@dataclass(frozen=True)
class NoiseEstimate:
    """The gradient's signal and the mini-batch noise at one point (see the module docstring).

    Attributes:
        batch_size: B, the training batch size the noise is given for.
        n_data: N, the training samples batches are drawn from.
        grad_norm_sq: ||∇L||², estimated without bias from the sample.
        per_sample_variance: S², the per-sample gradient variance.
        noise_sq: tr Σ_B = (S²/B)(1 − B/N).
        n_batches, sample_batch: m and b of the measurement.
    """

    batch_size: int
    n_data: int
    grad_norm_sq: float
    per_sample_variance: float
    noise_sq: float
    n_batches: int
    sample_batch: int

    @property
    def snr(self) -> float:
        """||∇L||² / tr Σ_B (``inf`` when there is no noise)."""
        return self.grad_norm_sq / self.noise_sq if self.noise_sq > 0 else math.inf

    @property
    def critical_batch(self) -> float:
        """B* = S² / (||∇L||² + S²/N): the batch size at which SNR = 1."""
        denominator = self.grad_norm_sq + self.per_sample_variance / self.n_data
        return self.per_sample_variance / denominator if denominator > 0 else math.inf

    def to_dict(self) -> dict[str, float]:
        """Plain numbers for the evidence of a verdict."""
        return {"batch_size": self.batch_size, "n_data": self.n_data, "grad_norm_sq": self.grad_norm_sq,
                "per_sample_variance": self.per_sample_variance, "noise_sq": self.noise_sq,
                "snr": _finite(self.snr), "critical_batch": _finite(self.critical_batch),
                "n_batches": self.n_batches, "sample_batch": self.sample_batch}


def gradient_noise(loss: EmpiricalLoss, *, batch_size: int, n_data: int, n_batches: int = 16,
                   seed: int = 0) -> NoiseEstimate:
    """Measure :class:`NoiseEstimate` on the sample that ``loss`` holds in memory.

    ``loss`` is the data layer over the sample at the point (its model, loss function,
    parameters and eval-mode policy: dropout and batch-norm in eval mode make the gradients
    deterministic and leave the model's buffers alone). The sample is split by a seeded
    permutation into ``n_batches`` disjoint batches (fewer when it is small, at least 2); each
    costs one forward and backward (:meth:`~descentlab.curvature.EmpiricalLoss.gradients`).
    Under ``torch.distributed`` each rank holds its own sample: the batches of all ranks are one
    partition, their sums all-reduced, so every rank gets the same estimate. ``batch_size`` and
    ``n_data`` are the whole job's: the samples of one optimizer step over all ranks, and the
    whole training set.
    """
    check_int("batch_size", batch_size)
    check_int("n_data", n_data)
    X, y = loss.one_batch()
    n = batch_count(X, y)
    m = max(2, min(int(n_batches), n))
    # under torch.distributed every rank splits its own sample into m batches of one size b,
    # the smallest any rank can fill: together they are one partition of m x ranks batches
    b = int(smallest(n // m))
    if b < 1:
        raise ValueError(f"the sample has {n} samples: too few to measure the gradient noise")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: m * b]  # take() moves it to the data
    parts = []
    for j in range(m):
        index = order[j * b:(j + 1) * b]
        parts.append((take(X, index), take(y, index)))
    G = loss.gradients(parts).double()
    # the batches' sum and sum of squared norms, over every rank's batches: their mean and spread
    sums = loss.allreduce(torch.cat([G.sum(dim=0), (G * G).sum().reshape(1)]))
    batches = m * world_size()
    mean = sums[:-1] / batches
    spread = max(0.0, float(sums[-1]) - batches * float(mean @ mean)) / (batches - 1)
    variance = b * spread  # S²
    used = batches * b
    grad_sq = max(0.0, float(mean @ mean) - variance / used * max(0.0, 1.0 - used / n_data))
    noise = variance / batch_size * max(0.0, 1.0 - batch_size / n_data)
    return NoiseEstimate(int(batch_size), int(n_data), grad_sq, variance, noise, batches, b)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
