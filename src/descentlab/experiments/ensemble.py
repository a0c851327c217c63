"""Many small models trained at once as one stacked ensemble, or one after another.

*Stacked.* K members share one architecture. Their parameters are stacked along a new
leading dimension and one forward pass evaluates all of them, each on its own mini-batch
(:class:`~descentlab.engine.stack.Stack`: ``torch.func.vmap`` over ``functional_call``).
The sum of the K member losses is backpropagated once: member k's loss depends only on
slice k of every stacked tensor, so the gradient at slice k is exactly member k's gradient.

A *real* registry optimizer (``descentlab.optim.make_optimizer``) then steps the stacked
tensors. This equals K separate optimizers exactly when the optimizer is element-wise
(:attr:`descentlab.optim.OptimizerSpec.elementwise`): the update of each scalar depends
only on that scalar's own gradient history and its group's hyperparameters. An optimizer
that reduces over a whole tensor (a global gradient norm, SWATS's switch test, which
projects over all parameters) would let the members talk to each other, so such optimizers
(and models with buffers or dropout) train *separately*, one member after another, with the
same initialisations and data order.

*Per-member learning rates.* Adam-family updates are not linear in the learning rate once
you count everything a step touches (AdamW's decoupled decay ``θ ← θ(1 − ηλ)``, schedulers,
wrappers that keep slow weights), so rescaling a shared step is not a safe trick. Instead
each distinct rate gets its own ``param_group`` holding its own stacked leaf tensors
``[S, ...]``; the forward pass concatenates the groups along the member dimension. The
optimizer then applies every group's exact rate, for any element-wise optimizer, and any
``torch.optim.lr_scheduler`` works per group unchanged. It is also cheaper than one ensemble
per rate: one forward, backward and optimizer step serve every rate (``bench/ensemble.py``
times both; ``bench/RESULTS.md``, section ensemble).

*Seeds.* Member ``Member(seed, lr)`` starts from ``torch.manual_seed(seed); make_model()``
and draws its data order from its own ``torch.Generator`` seeded with ``seed``, so two
optimizers given the same seeds see the same initial weights and the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descentlab.engine.callbacks import LoopState
from descentlab.engine.stack import Stack, unstackable_reason
from descentlab.engine.steps import StepInfo, batch_loss, run_steps
from descentlab.engine.timing import seconds_per_step

__all__ = [
    "Member",
    "EnsembleResult",
    "train_members",
    "train_stacked",
    "train_separately",
    "is_elementwise",
    "unstackable_reason",
    "eval_steps",
    "time_per_update",
    "TIMED_UPDATES",
]

#: Updates timed by :func:`time_per_update` (after three untimed warm-up updates).
TIMED_UPDATES = 200


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: its seed (initialisation and data order) and learning rate."""

    seed: int
    lr: float


@dataclass(frozen=True)
class EnsembleResult:
    """Curves and final weights of K members, recorded at the same steps.

    Attributes:
        members: the members, in the order of every row below.
        steps: the update counts at which the curves were recorded (0 and the last included).
        seconds: ``[K, T]`` training wall-clock (evaluation excluded) up to each recorded step.
            A stacked ensemble trains its members together, so each member is charged the
            ensemble's time divided by K (the amortised cost of one run).
        train_loss, val_loss: ``[K, T]`` loss on the whole training / validation set.
        train_accuracy, val_accuracy: ``[K, T]`` fraction correct (NaN for regression).
        stacked: True if the members trained as one vmapped ensemble.
        reason: why they did not (empty when stacked).
        wall_seconds: total training wall-clock of all K members together.
        params: the final parameters, each ``[K, ...]`` (row k = member k), by name.
    """

    members: tuple[Member, ...]
    steps: tuple[int, ...]
    seconds: torch.Tensor = field(repr=False)
    train_loss: torch.Tensor = field(repr=False)
    train_accuracy: torch.Tensor = field(repr=False)
    val_loss: torch.Tensor = field(repr=False)
    val_accuracy: torch.Tensor = field(repr=False)
    stacked: bool
    reason: str
    wall_seconds: float
    params: Mapping[str, torch.Tensor] = field(repr=False)

    def __repr__(self) -> str:
        final = ", ".join(f"{v:.4g}" for v in self.train_loss[:, -1].tolist())
        return (
            f"EnsembleResult(K={len(self.members)}, steps={self.steps[-1]}, stacked={self.stacked}, "
            f"final_train_loss=[{final}], wall_seconds={self.wall_seconds:.3g})"
        )

    def load_member(self, index: int, model: nn.Module) -> nn.Module:
        """Copy member ``index``'s final weights into ``model`` (same architecture) and return it."""
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(self.params[name][index])
        return model


def is_elementwise(optimizer: str) -> bool:
    """Whether registry optimizer ``optimizer`` (wrappers included) may step stacked members.

    True when the base entry is :attr:`~descentlab.optim.OptimizerSpec.elementwise` and every
    wrapper is too (a wrapper factory declares ``elementwise = False`` when it is not;
    wrappers that draw random numbers, such as gradient noise, declare it False too, since
    one draw over a stacked tensor is not K separate draws).
    """
    from descentlab.optim.registry import OPTIMIZERS, WRAPPERS, parse_name

    wrappers, base = parse_name(optimizer)
    if not OPTIMIZERS[base].elementwise:
        return False
    return all(bool(getattr(WRAPPERS[w][0], "elementwise", True)) for w in wrappers)


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The update counts at which curves are recorded: 0, every ``eval_every``, and ``steps``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    points = list(range(0, steps, eval_every))
    return points + [steps]


def train_members(
    workload: Any,
    optimizer: str,
    members: Sequence[Member],
    *,
    steps: int,
    batch_size: int | None,
    eval_every: int = 10,
    hyperparameters: Mapping[str, Any] | None = None,
    schedule: str | None = None,
    stack: bool | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> EnsembleResult:
    """Train ``members`` on ``workload`` with registry optimizer ``optimizer``.

    Stacks them (:func:`train_stacked`) when the optimizer is element-wise and the model has no
    buffers or dropout, otherwise trains them one after another (:func:`train_separately`)
    and says why through ``log``. ``stack=False`` forces separate runs; ``stack=True`` insists
    on stacking and raises ``ValueError`` if that would be wrong.

    ``workload`` is anything with ``make_model``, ``loss_fn``, ``X_train``, ``y_train``, ``X_val``,
    ``y_val`` and ``task`` (a :class:`descentlab.problems.workloads.Workload`). ``batch_size=None``
    (or at least the training-set size) means full batch.
    """
    reason = ""
    if not is_elementwise(optimizer):
        reason = f"optimizer {optimizer!r} is not element-wise across models"
    else:
        with torch.random.fork_rng(devices=[]):
            reason = unstackable_reason(workload.make_model())
    if stack and reason:
        raise ValueError(f"stack=True but the members cannot be stacked: {reason}")
    if stack is False and not reason:
        reason = "stacking switched off by the caller"
    kwargs = dict(steps=steps, batch_size=batch_size, eval_every=eval_every,
                  hyperparameters=hyperparameters, schedule=schedule, progress=progress)
    if reason:
        if log is not None:
            log(f"{optimizer}: training {len(members)} runs one after another ({reason})")
        return train_separately(workload, optimizer, members, reason=reason, **kwargs)
    if log is not None:
        log(f"{optimizer}: training {len(members)} runs as one stacked ensemble")
    return train_stacked(workload, optimizer, members, **kwargs)


class _Batches:
    """Per-member mini-batch indices: each member reshuffles every epoch with its own generator."""

    def __init__(self, seeds: Sequence[int], n: int, batch_size: int | None) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")
        self.n = n
        self.full = batch_size is None or batch_size >= n
        self.batch_size = n if self.full else int(batch_size)
        self.per_epoch = math.ceil(n / self.batch_size)
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self.order: torch.Tensor | None = None
        self.position = 0

    def next(self) -> torch.Tensor | None:
        """``[K, B]`` indices of the next batch, or None for the full batch in natural order."""
        if self.full:
            return None
        if self.order is None or self.position >= self.per_epoch:
            self.order = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])
            self.position = 0
        start = self.position * self.batch_size
        self.position += 1
        return self.order[:, start:start + self.batch_size]


def _validate(members: Sequence[Member], steps: int, eval_every: int) -> list[int]:
    if not members:
        raise ValueError("members must not be empty")
    for member in members:
        if not (member.lr > 0 and math.isfinite(member.lr)):
            raise ValueError(f"lr must be a positive finite number, got {member.lr}")
    return eval_steps(steps, eval_every)


def _init_model(workload: Any, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return workload.make_model()


def _metrics(output: torch.Tensor, target: torch.Tensor, loss_fn: Callable,
             classification: bool) -> tuple[float, float]:
    loss = float(loss_fn(output, target))
    accuracy = float((output.argmax(-1) == target).double().mean()) if classification else math.nan
    return loss, accuracy


def _make_scheduler(optimizer: torch.optim.Optimizer, schedule: str | None):
    if not schedule:
        return None
    from descentlab.schedules import make_scheduler

    return make_scheduler(optimizer, schedule)


def train_stacked(
    workload: Any,
    optimizer: str,
    members: Sequence[Member],
    *,
    steps: int,
    batch_size: int | None,
    eval_every: int = 10,
    hyperparameters: Mapping[str, Any] | None = None,
    schedule: str | None = None,
    progress: bool = False,
) -> EnsembleResult:
    """Train all members as one vmapped ensemble (see the module docstring for when it is exact).

    The caller is responsible for the optimizer being element-wise (:func:`is_elementwise`);
    :func:`train_members` checks it.
    """
    from descentlab.optim import make_optimizer

    record_at = _validate(members, steps, eval_every)
    loss_fn = workload.loss_fn
    classification = workload.task == "classification"

    # One param group per distinct learning rate, each a block of leaves [S, ...] per parameter.
    lrs: list[float] = []
    for m in members:
        if m.lr not in lrs:
            lrs.append(m.lr)
    groups = [[i for i, m in enumerate(members) if m.lr == lr] for lr in lrs]
    order = [i for group in groups for i in group]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    stack = Stack([_init_model(workload, members[i].seed) for i in order], loss_fn)  # refuses an unstackable model
    leaves = stack.leaves([len(group) for group in groups])
    opt = make_optimizer(
        optimizer,
        [{"params": list(leaf.values()), "lr": lr} for leaf, lr in zip(leaves, lrs)],
        **dict(hyperparameters or {}),
    )
    scheduler = _make_scheduler(opt, schedule)

    X, y = workload.X_train, workload.y_train
    sampler = _Batches([members[i].seed for i in order], X.shape[0], batch_size)
    K, T = len(members), len(record_at)
    curves = {key: torch.full((K, T), math.nan, dtype=torch.float64)
              for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    clock = torch.zeros(T, dtype=torch.float64)
    per_member_loss = torch.func.vmap(loss_fn, in_dims=(0, None))

    def evaluate(column: int) -> None:
        with torch.no_grad():
            params = Stack.join(leaves)
            for prefix, (Xe, ye) in (("train", (X, y)), ("val", (workload.X_val, workload.y_val))):
                out = stack.outputs(params, Xe, shared=True)
                curves[f"{prefix}_loss"][:, column] = per_member_loss(out, ye).double()
                if classification:
                    curves[f"{prefix}_accuracy"][:, column] = (out.argmax(-1) == ye).double().mean(-1)

    def batches():
        while True:
            index = sampler.next()
            if index is None:
                yield X.expand(K, *X.shape), y.expand(K, *y.shape)
            else:
                flat_index = index.reshape(-1).to(X.device)  # index_select: much faster than X[index] on CPU
                yield (X.index_select(0, flat_index).view(*index.shape, *X.shape[1:]),
                       y.index_select(0, flat_index).view(*index.shape, *y.shape[1:]))

    elapsed = 0.0
    column = 1
    bar = _progress(steps, f"{optimizer} x{K}", progress)

    def record(loop: LoopState, info: StepInfo) -> None:
        nonlocal elapsed, column
        elapsed += info.seconds
        if bar is not None:
            bar.update(1)
        if info.step == record_at[column]:
            clock[column] = elapsed
            evaluate(column)
            column += 1

    evaluate(0)  # (the loop's model is the skeleton: no hook here reads it; the optimizer steps the leaves)
    run_steps(LoopState(stack.skeleton, opt, scheduler), lambda batch: stack.total_loss(Stack.join(leaves), *batch),
              batches(), steps=steps, after_step=record)
    if bar is not None:
        bar.close()

    final = {name: t.detach()[inverse].clone() for name, t in Stack.join(leaves).items()}
    return EnsembleResult(
        members=tuple(members),
        steps=tuple(record_at),
        seconds=(clock / K).expand(K, T).clone(),
        train_loss=curves["train_loss"][inverse],
        train_accuracy=curves["train_accuracy"][inverse],
        val_loss=curves["val_loss"][inverse],
        val_accuracy=curves["val_accuracy"][inverse],
        stacked=True,
        reason="",
        wall_seconds=elapsed,
        params=final,
    )


def train_separately(
    workload: Any,
    optimizer: str,
    members: Sequence[Member],
    *,
    steps: int,
    batch_size: int | None,
    eval_every: int = 10,
    hyperparameters: Mapping[str, Any] | None = None,
    schedule: str | None = None,
    progress: bool = False,
    reason: str = "",
) -> EnsembleResult:
    """Train the members one after another, each an ordinary ``nn.Module`` with its own optimizer.

    Same initialisation and data order per seed as :func:`train_stacked`; works for every
    optimizer and model.
    """
    from descentlab.optim import make_optimizer

    record_at = _validate(members, steps, eval_every)
    classification = workload.task == "classification"
    X, y = workload.X_train, workload.y_train
    K, T = len(members), len(record_at)
    curves = {key: torch.full((K, T), math.nan, dtype=torch.float64)
              for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    seconds = torch.zeros(K, T, dtype=torch.float64)
    finals: list[dict[str, torch.Tensor]] = []
    total = 0.0
    bar = _progress(steps * K, f"{optimizer} x{K} (separate)", progress)
    for k, member in enumerate(members):
        model = _init_model(workload, member.seed)
        opt = make_optimizer(optimizer, model.parameters(), lr=member.lr, **dict(hyperparameters or {}))
        scheduler = _make_scheduler(opt, schedule)
        sampler = _Batches([member.seed], X.shape[0], batch_size)

        def evaluate(column: int) -> None:
            model.eval()
            with torch.no_grad():
                for prefix, (Xe, ye) in (("train", (X, y)), ("val", (workload.X_val, workload.y_val))):
                    loss, accuracy = _metrics(model(Xe), ye, workload.loss_fn, classification)
                    curves[f"{prefix}_loss"][k, column] = loss
                    curves[f"{prefix}_accuracy"][k, column] = accuracy
            model.train()

        def batches():
            while True:
                index = sampler.next()
                yield (X, y) if index is None else (X[index[0]], y[index[0]])

        elapsed, column = 0.0, 1

        def record(loop: LoopState, info: StepInfo) -> None:
            nonlocal elapsed, column
            elapsed += info.seconds
            if bar is not None:
                bar.update(1)
            if info.step == record_at[column]:
                seconds[k, column] = elapsed
                evaluate(column)
                column += 1

        evaluate(0)
        run_steps(LoopState(model, opt, scheduler), batch_loss(model, workload.loss_fn), batches(), steps=steps,
                  after_step=record)
        total += elapsed
        finals.append({name: p.detach().clone() for name, p in model.named_parameters()})
    if bar is not None:
        bar.close()
    params = {name: torch.stack([f[name] for f in finals]) for name in finals[0]}
    return EnsembleResult(
        members=tuple(members),
        steps=tuple(record_at),
        seconds=seconds,
        train_loss=curves["train_loss"],
        train_accuracy=curves["train_accuracy"],
        val_loss=curves["val_loss"],
        val_accuracy=curves["val_accuracy"],
        stacked=False,
        reason=reason,
        wall_seconds=total,
        params=params,
    )


def time_per_update(workload: Any, optimizer: str, lr: float, batch_size: int | None, seed: int = 0,
                    updates: int = TIMED_UPDATES) -> float:
    """Mean seconds per update of one plain ``nn.Module`` and its optimizer at this batch size.

    Times ``updates`` updates (forward, backward, step) cycling through one shuffled epoch,
    after three untimed warm-up updates. This is the cost of one run, the same measure for an
    optimizer that trains stacked and one that trains separately, so their seconds compare.
    """
    from descentlab.optim import make_optimizer

    model = _init_model(workload, seed)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    X, y = workload.X_train, workload.y_train
    n = X.shape[0]
    b = n if batch_size is None or batch_size >= n else batch_size
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def batches():
        i = 0
        while True:
            start = (i * b) % n
            yield (X, y) if b >= n else (X[order[start:start + b]], y[order[start:start + b]])
            i += 1

    return seconds_per_step(model, opt, workload.loss_fn, batches(), steps=updates, repeats=1, warmup=3)


def _progress(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="step", leave=False)
