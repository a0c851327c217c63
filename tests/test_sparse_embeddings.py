"""Models with an embedding built ``sparse=True``, the way such models are trained: one ``SGD``
over everything (it steps sparse gradients), or ``SparseAdam`` for the embedding beside ``Adam``
for the rest. The monitor used to stop such a loop at its first step (the gradient norm of a sparse
tensor), its diagnosis failed (a sparse gradient in a flat vector), its trials stacked the forks'
weights (a sparse gradient for a stacked weight) and offered Adam (which refuses sparse gradients),
and beside a second optimizer it told at once that the rest "never move", then blamed clipping for
a loop gradient read on 3 % of the parameters. Oracles: the same model built dense, the gradient
norms computed by hand, torch's optimizers stepping each offered remedy, the entries counted."""

import copy
import logging

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.remedies import MENU, remedies_for
from descentlab.curvature import EmpiricalLoss, HessianOperator
from descentlab.engine.changes import apply_change


class Tokens(nn.Module):
    """Each digit's 64 pixels as tokens 0-16, embedded and classified."""

    def __init__(self, sparse: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(17, 8, sparse=sparse)
        self.head = nn.Linear(64 * 8, 10)

    def forward(self, x):
        return self.head(self.emb(x).flatten(1))


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data).long(), torch.tensor(digits.target)


def _run(caplog, two_optimizers: bool, lr: float, steps: int, remedies: bool = False):
    X, y = _digits()
    torch.manual_seed(0)
    model = Tokens()
    if two_optimizers:
        optimizer = torch.optim.SparseAdam(list(model.emb.parameters()), lr=lr)
        other = torch.optim.Adam(model.head.parameters(), lr=lr)
    else:
        optimizer, other = torch.optim.SGD(model.parameters(), lr=lr), None
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, total_steps=steps,
                           remedies=remedies)
    generator = torch.Generator().manual_seed(1)
    norms = []
    with caplog.at_level(logging.WARNING, logger="descentlab"):
        for step in range(1, steps + 1):
            index = torch.randint(0, len(X), (64,), generator=generator)
            optimizer.zero_grad()
            if other is not None:
                other.zero_grad()
            loss = F.cross_entropy(model(X[index]), y[index])
            loss.backward()
            held = [p for group in optimizer.param_groups for p in group["params"]]
            norms.append(float(torch.cat([p.grad.to_dense().flatten() for p in held]).norm()))
            optimizer.step()
            if other is not None:
                other.step()
            monitor.update(step, loss.detach(), model)
    return monitor, norms, [r.getMessage() for r in caplog.records]


def test_the_loop_gradient_norms_of_a_sparse_embedding_are_its_dense_norms(caplog):
    monitor, norms, _ = _run(caplog, two_optimizers=False, lr=0.01, steps=20)
    tolerance = 1e-5  # float32 sums of ~5,000 squares, read two ways
    for (step, low, high), first in zip(monitor.history.grad_norms, (0, 10)):
        window = norms[first:step]
        assert low == pytest.approx(min(window), rel=tolerance)
        assert high == pytest.approx(max(window), rel=tolerance)


def test_the_curvature_of_a_sparse_model_is_its_dense_twins_and_the_flag_is_restored():
    X, y = _digits()
    torch.manual_seed(0)
    sparse = Tokens()
    dense = Tokens(sparse=False)
    dense.load_state_dict(sparse.state_dict())
    data = (X[:200], y[:200])
    ours, twin = EmpiricalLoss(sparse, F.cross_entropy, data), EmpiricalLoss(dense, F.cross_entropy, data)
    value, gradient = ours.loss_and_gradient()
    expected_value, expected_gradient = twin.loss_and_gradient()
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(gradient, expected_gradient)
    v = torch.randn(ours.n_params, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(HessianOperator(sparse, F.cross_entropy, data).matvec(v),
                               HessianOperator(dense, F.cross_entropy, data).matvec(v))
    assert sparse.emb.sparse  # the user's module as it was


def test_a_stalled_sparse_model_is_diagnosed_and_its_trials_step_sparse_gradients(caplog):
    monitor, _, messages = _run(caplog, two_optimizers=False, lr=1e-6, steps=200, remedies=True)
    diagnosed = [s for s in monitor.stalls if s.status == "diagnosed"]
    assert diagnosed and diagnosed[0].verdict == "slow"
    assert diagnosed[0].trials["status"] == "ran"
    last = {t["remedy"]: t["losses"][-1] for t in diagnosed[0].trials["trials"]}
    assert set(last) == {"keep", "raise-rate", "momentum"}  # no Adam
    assert last["raise-rate"] < 0.5 * last["keep"]  # what the verdict asks for lowers the loss
    assert not [m for m in messages if "failed" in m]


@pytest.mark.parametrize("verdict", sorted(v for v, names in MENU.items() if {"adam", "noise"} & set(names)))
def test_every_remedy_offered_for_a_sparse_model_steps_it(verdict):
    X, y = _digits()
    torch.manual_seed(0)
    model = Tokens()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    evidence = {"loss": {"stuck_high": True}}
    menu = remedies_for(verdict, evidence, optimizer, batch_size=64, n_data=len(X), trial_steps=50, sparse=True)
    offered = remedies_for(verdict, evidence, optimizer, batch_size=64, n_data=len(X), trial_steps=50)
    assert len(menu) < len(offered)  # the dense model is offered more
    for remedy in menu:
        fork = copy.deepcopy(model)
        fork_optimizer = torch.optim.SGD(fork.parameters(), lr=0.01)
        applied = apply_change(remedy.change, fork_optimizer, model=fork)
        F.cross_entropy(fork(X[:64]), y[:64]).backward()
        applied.optimizer.step()  # torch's Adam would raise here: it does not take sparse gradients


def test_a_second_optimizer_is_seen_and_nothing_is_told_of_parameters_that_move(caplog):
    monitor, _, messages = _run(caplog, two_optimizers=True, lr=1e-7, steps=60, remedies=True)
    assert not [m for m in messages if "never move" in m or "does not hold" in m]
    assert monitor.history.stepped_elsewhere == pytest.approx(5130 / 5266)  # the head's entries of all
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert "clipping" not in stall.remedy  # the loop's norm covers the embedding alone: no ratio read
    assert stall.trials["status"].startswith("skipped (another optimizer steps 97% of the parameters")
