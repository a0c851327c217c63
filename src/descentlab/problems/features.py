"""Tabular data whose features live on mismatched scales, and their standardisation.

:func:`breast_cancer` is scikit-learn's Wisconsin breast-cancer table (569 tumours, 30
measured features, two classes; shipped with scikit-learn, never downloaded) *as measured*:
a feature such as "mean area" runs in the hundreds to thousands while "mean fractal
dimension" stays near 0.06, four orders of magnitude apart -- the situation the course's
feature-normalisation lecture starts from. :func:`standardise` rescales every feature to mean
0 and spread 1 with the training set's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["FeatureData", "breast_cancer", "standardise"]


@dataclass(frozen=True)
class FeatureData:
    """A train/validation split of a feature table (features as measured, not rescaled).

    Attributes:
        X_train, X_val: ``(N, D)`` features.
        y_train, y_val: ``(N,)`` class indices (``int64``).
        names: the D feature names.
    """

    X_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    X_val: torch.Tensor = field(repr=False)
    y_val: torch.Tensor = field(repr=False)
    names: tuple[str, ...] = field(repr=False)

    def column(self, name: str) -> int:
        """The index of feature ``name`` (``ValueError`` naming the valid ones otherwise)."""
        if name not in self.names:
            raise ValueError(f"unknown feature {name!r}; valid: {', '.join(self.names)}")
        return self.names.index(name)

    def __repr__(self) -> str:
        spread = self.X_train.std(dim=0)
        return (f"FeatureData(train={tuple(self.X_train.shape)}, val={tuple(self.X_val.shape)}, "
                f"feature spread {float(spread.min()):.3g} to {float(spread.max()):.3g})")


def breast_cancer(seed: int = 0, dtype: torch.dtype = torch.float64) -> FeatureData:
    """The breast-cancer table, 80/20 stratified split (``seed`` fixes it), features as measured."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    table = load_breast_cancer()
    X_train, X_val, y_train, y_val = train_test_split(table.data, table.target, test_size=0.2,
                                                      random_state=seed, stratify=table.target)
    return FeatureData(torch.as_tensor(X_train, dtype=dtype), torch.as_tensor(y_train, dtype=torch.long),
                       torch.as_tensor(X_val, dtype=dtype), torch.as_tensor(y_val, dtype=torch.long),
                       tuple(str(n) for n in table.feature_names))


def standardise(X_train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(X - mean) / std`` per feature with the *training* set's mean and (unbiased) std, applied
    to ``X_train`` and every tensor in ``others``; a constant feature is only centred."""
    mean = X_train.mean(dim=0)
    spread = X_train.std(dim=0)
    spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    return tuple((X - mean) / spread for X in (X_train, *others))
