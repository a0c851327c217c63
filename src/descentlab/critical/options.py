"""How a stall is diagnosed and acted on: one options dataclass for the diagnoser.

The settings of the point's classification (how many eigenpairs, how precise, how many
products at most), the escape (its longest step), the loss slice kept at a saddle, and the
remedy trials (whether they run, their length, whether the run continues with the winner)
are fields of one frozen :class:`DiagnosisOptions`, checked when it is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from descentlab.checks import check_choice, check_int, check_number
from descentlab.critical.classify import GRAD_TOL, METHODS
from descentlab.monitor_defaults import TRIAL_STEPS

__all__ = ["DiagnosisOptions"]


@dataclass(frozen=True)
class DiagnosisOptions:
    """What a diagnosis measures and does.

    Classification of the point (:func:`~descentlab.critical.classify`):

    Attributes:
        grad_tol: the point is critical when ``||∇L|| <= grad_tol · max(1, |L|)``.
        eig_tol: an eigenvalue is zero when ``|λ| <= eig_tol · max(1, max|λ|)``; ``None``: by dtype.
        k: extreme eigenpairs, half from each end (2 + 2: the signs and the escape direction
            are all a verdict needs).
        lanczos_tol: Lanczos' relative residual (1e-2: fit for a sign, an eigenvalue lies within
            its residual of the Ritz value; λ_max to ~1e-4 for the sharpness).
        max_matvecs: Hessian-vector products a classification may spend at most.
        dense_threshold: the exact Hessian (``dense()`` + ``eigh``) up to this many parameters,
            Lanczos at both ends above.
        method: ``"auto"`` (by ``dense_threshold``), ``"exact"`` or ``"lanczos"``.
        certify_sign: stop Lanczos as soon as its Ritz values prove a saddle.

    The action at a saddle:

    Attributes:
        escape: step along the most negative eigenvector (a line search that never raises the loss).
        max_step: the escape's longest step, halved until the loss falls enough.
        slice_radius: half-width of the loss slice along that eigenvector kept for the report (0: none).
        slice_points: points of that slice.

    Remedy trials (:mod:`~descentlab.critical.trials`):

    Attributes:
        remedies: try the remedies that fit the verdict from a fork of the run and rank them.
        trial_steps: the length of every trial.
        apply_remedy: continue with the trials' winner (requested through the monitor's
            :class:`~descentlab.engine.Control`; an escape is made by the monitor itself).
    """

    grad_tol: float = GRAD_TOL
    eig_tol: float | None = None
    k: int = 4
    lanczos_tol: float = 1e-2
    max_matvecs: int = 300
    dense_threshold: int = 256
    method: str = "auto"
    certify_sign: bool = True
    escape: bool = True
    max_step: float = 1.0
    slice_radius: float = 2.0
    slice_points: int = 41
    remedies: bool = False
    trial_steps: int = TRIAL_STEPS
    apply_remedy: bool = False

    def __post_init__(self) -> None:
        check_number("grad_tol", self.grad_tol, low=0.0, low_open=True)
        if self.eig_tol is not None:
            check_number("eig_tol", self.eig_tol, low=0.0, low_open=True)
        check_int("k", self.k, low=2)
        check_number("lanczos_tol", self.lanczos_tol, low=0.0, low_open=True)
        check_int("max_matvecs", self.max_matvecs)
        check_int("dense_threshold", self.dense_threshold)
        check_choice("method", self.method, METHODS)
        check_number("max_step", self.max_step, low=0.0, low_open=True)
        check_number("slice_radius", self.slice_radius)
        check_int("slice_points", self.slice_points, low=3)
        check_int("trial_steps", self.trial_steps)
        for name in ("certify_sign", "escape", "remedies", "apply_remedy"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.apply_remedy and not self.remedies:
            raise ValueError("apply_remedy needs remedies=True (the winner comes from the trials)")

    def classify_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~descentlab.critical.classify` these options set
        (no minimum-ratio estimate: its 1,600 products decide no verdict)."""
        return {"grad_tol": self.grad_tol, "eig_tol": self.eig_tol, "k": self.k, "lanczos_tol": self.lanczos_tol,
                "max_matvecs": self.max_matvecs, "dense_threshold": self.dense_threshold, "method": self.method,
                "certify_sign": self.certify_sign, "ratio_probes": 0}

    def exact(self, n_params: int) -> bool:
        """Whether a model of ``n_params`` parameters gets the exact Hessian."""
        return self.method == "exact" or self.method == "auto" and n_params <= self.dense_threshold

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a run's config)."""
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names (what ``StallMonitor`` takes as keyword shortcuts)."""
        return tuple(f.name for f in fields(cls))

