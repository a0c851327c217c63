"""Outputs a bounded function makes (a sigmoid, tanh or softmax in front of a loss that wants raw
scores, or a ReLU, which holds the outputs it zeroes where they are): the floor it puts under the
loss against an exhaustive search of the box, the loss
recognised by value, the bound found in the forward pass, and the verdict and its remedy on
README's loop, with the healthy uses of a bounded output (probabilities into BCELoss, a tanh
regression on targets inside its range) left alone."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.layer_signals import measure_layers
from descentlab.critical.output_floor import loss_floor, output_bound, recognise_loss
from descentlab.critical.verdicts import FLOOR_HELD, decide
from descentlab.curvature import EmpiricalLoss
from descentlab.engine import LoopState

from helpers import watched_steps


def _grid(low, high, points):
    return torch.linspace(low, high, points, dtype=torch.float64)


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-1.0, 1.0), (0.0, 6.0)])
def test_the_cross_entropy_floor_is_the_lowest_loss_on_a_grid_of_the_box(low, high):
    """Every score vector of a 41-point grid of [low, high]^3 (three classes, true class 0): the
    least cross-entropy on it is log(1 + 2e^{-w}), reached at a corner of the box."""
    grid = _grid(low, high, 41)
    scores = torch.cartesian_prod(grid, grid, grid)
    least = F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long), reduction="none").min()
    out, y = torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.long)
    assert loss_floor("cross_entropy", out, y, low, high) == pytest.approx(float(least), rel=1e-12)
    assert float(least) == pytest.approx(math.log1p(2 * math.exp(-(high - low))), rel=1e-12)


@pytest.mark.parametrize("smoothing, width", [(0.1, 1.0), (0.1, 10.0), (0.3, 2.0)])
def test_the_label_smoothed_cross_entropy_floor_is_the_lowest_loss_on_a_grid_of_the_box(smoothing, width):
    """Three classes, label smoothing ε, scores in [0, w]: the least loss on a 41-point grid of the box
    (a finer one along the gap that matters); where w is past the gap the smoothed targets want, the
    floor is the loss's own lowest value (the targets' entropy), which the unbounded call gives."""
    grid = _grid(0.0, width, 81)
    scores = torch.cartesian_prod(grid, grid, grid)
    least = F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long), reduction="none",
                            label_smoothing=smoothing).min()
    out, y = torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.long)
    floor = loss_floor("cross_entropy", out, y, 0.0, width, smoothing=smoothing)
    assert floor <= float(least) + 1e-12 and floor == pytest.approx(float(least), abs=2e-4)
    q = torch.tensor([1 - smoothing + smoothing / 3, smoothing / 3, smoothing / 3], dtype=torch.float64)
    entropy = float(-(q * q.log()).sum())
    free = loss_floor("cross_entropy", out, y, -math.inf, math.inf, smoothing=smoothing)
    assert free == pytest.approx(entropy, rel=1e-12)
    assert (floor == pytest.approx(free, rel=1e-12)) == (width >= math.log(q[0] / q[1]))


def test_held_is_the_share_of_what_is_left_to_learn_that_the_bound_forbids():
    """Soft labels 0.6 under a sigmoid's [0, 1]: their best score logit(0.6) = 0.41 is inside the box,
    so the floor is the labels' own entropy and the bound forbids nothing (held 0), however close
    the loss is to that floor; hard labels under the same box: held = floor / loss."""
    out = torch.full((8, 1), 0.3, dtype=torch.float64)
    soft = torch.full((8, 1), 0.6, dtype=torch.float64)
    found = output_bound(out, soft, F.binary_cross_entropy_with_logits, ("3", nn.Sigmoid(), out))
    entropy = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert found.floor == pytest.approx(entropy, rel=1e-12) and found.free == pytest.approx(entropy, rel=1e-12)
    assert found.held == pytest.approx(0.0, abs=1e-12)
    hard = torch.ones(8, 1, dtype=torch.float64)
    found = output_bound(out, hard, F.binary_cross_entropy_with_logits, ("3", nn.Sigmoid(), out))
    assert found.free == 0.0 and found.floor == pytest.approx(math.log1p(math.exp(-1)), rel=1e-12)
    assert found.held == pytest.approx(found.floor / float(F.binary_cross_entropy_with_logits(out, hard)), rel=1e-12)


def test_softmax_outputs_reach_the_floor_of_the_unit_box_at_a_one_hot_row():
    """Probability rows of a 201-point grid of the simplex (three classes): the least cross-entropy
    on them is the box [0, 1]'s floor, log(1 + 2/e)."""
    steps = 200
    rows = torch.tensor([(i / steps, j / steps, (steps - i - j) / steps)
                         for i in range(steps + 1) for j in range(steps + 1 - i)], dtype=torch.float64)
    least = F.cross_entropy(rows, torch.zeros(len(rows), dtype=torch.long), reduction="none").min()
    out, y = torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    assert loss_floor("cross_entropy", out, y, 0.0, 1.0) == pytest.approx(float(least), rel=1e-12)


def test_the_bce_and_squared_error_floors_are_the_lowest_losses_on_a_grid_of_the_range():
    """Per target, the least of the loss over a fine grid of [low, high], averaged: binary
    cross-entropy with logits on hard and soft labels in [0, 1], squared error on targets reaching
    past [-1, 1]."""
    grid = _grid(0.0, 1.0, 100_001)
    labels = torch.tensor([0.0, 1.0, 0.3, 0.9, 1.0], dtype=torch.float64)
    least = torch.stack([F.binary_cross_entropy_with_logits(grid, t.expand_as(grid), reduction="none").min()
                         for t in labels]).mean()
    assert loss_floor("bce_with_logits", labels, labels, 0.0, 1.0) == pytest.approx(float(least), abs=1e-9)
    grid = _grid(-1.0, 1.0, 100_001)
    targets = torch.tensor([-3.0, -0.5, 0.2, 1.5, 2.0], dtype=torch.float64)
    least = torch.stack([((grid - t) ** 2).min() for t in targets]).mean()
    assert loss_floor("mse", targets, targets, -1.0, 1.0) == pytest.approx(float(least), abs=1e-9)
    assert float(least) == pytest.approx((4 + 0.25 + 1) / 5, abs=1e-9)


def test_outputs_held_at_a_flat_bound_stay_and_the_rest_go_to_their_best_against_a_grid():
    """Cross-entropy, three classes, true class 0, scores in [0, 6] (a hardtanh's box): the fixed
    scores kept, every free one over a 41-point grid of the box; the least loss per sample, averaged,
    is the floor. With a ReLU's [0, inf) a sample whose true score is free goes to 0, one whose true
    score is held at 0 to log 3 at best (every other score free to fall to 0)."""
    grid = _grid(0.0, 6.0, 41)
    out = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 6.0], [3.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    fixed = torch.tensor([[True, False, True], [False, True, True], [False, False, True], [True, True, False]])
    y = torch.zeros(4, dtype=torch.long)
    least = []
    for row, held in zip(out, fixed):
        choices = [row[j:j + 1] if held[j] else grid for j in range(3)]
        scores = torch.cartesian_prod(*choices)
        least.append(F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long), reduction="none").min())
    floor = loss_floor("cross_entropy", out, y, 0.0, 6.0, fixed=fixed)
    assert floor == pytest.approx(float(torch.stack(least).mean()), rel=1e-12)
    relu = loss_floor("cross_entropy", out, y, 0.0, math.inf, fixed=out <= 0)  # true held in rows 0, 1, 3
    assert relu == pytest.approx(3 * math.log(3) / 4, rel=1e-12)


def test_squared_error_and_bce_with_outputs_held_against_a_grid():
    """Per entry, the held output's loss as it is, a free one's least over a fine grid of [0, 4]."""
    grid = _grid(0.0, 4.0, 40_001)
    out = torch.tensor([0.0, 0.0, 1.5, 4.0, 0.0], dtype=torch.float64)
    fixed = torch.tensor([True, False, False, True, True])
    targets = torch.tensor([2.0, -1.0, 3.0, 5.0, -0.5], dtype=torch.float64)
    least = [((out[i] - t) ** 2 if fixed[i] else ((grid - t) ** 2).min()) for i, t in enumerate(targets)]
    assert loss_floor("mse", out, targets, 0.0, 4.0, fixed=fixed) == pytest.approx(float(torch.stack(least).mean()),
                                                                                 abs=1e-9)
    labels = torch.tensor([1.0, 0.0, 0.3, 1.0, 0.0], dtype=torch.float64)
    least = [F.binary_cross_entropy_with_logits(out[i], t) if fixed[i] else
             F.binary_cross_entropy_with_logits(grid, t.expand_as(grid), reduction="none").min()
             for i, t in enumerate(labels)]
    assert loss_floor("bce_with_logits", out, labels, 0.0, 4.0, fixed=fixed) == pytest.approx(
        float(torch.stack(least).mean()), abs=1e-9)


def test_a_relu_on_the_scores_is_named_its_floor_by_hand_and_taking_it_off_goes_through_it():
    """A ReLU after the last layer, into F.cross_entropy: scores cannot go below 0, and a sample whose
    true class's score the ReLU holds at 0 gets no gradient to raise it: its loss stays at ln 10 at
    best. Named at the first stall; on all the data at that point the floor is the share of samples
    whose true score is 0, times ln 10, counted by hand; the trial that takes the ReLU off wins and
    the run ends far below that floor."""
    monitor, model, X, y = _readme_loop(nn.ReLU(), F.cross_entropy, lambda t: t, steps=400)
    stall = monitor.stalls[0]
    assert stall.verdict == "bounded_outputs" and "take the relu at '3' off" in stall.remedy
    with torch.no_grad():
        scores = model(X)
    held = float((scores.gather(1, y[:, None]) <= 0).double().mean())
    outputs = measure_layers(EmpiricalLoss(model, F.cross_entropy, (X, y))).outputs
    assert outputs.family == "relu" and outputs.high == math.inf
    assert outputs.floor == pytest.approx(held * math.log(10), rel=1e-6)
    assert outputs.at_bound == pytest.approx(float((scores <= 0).double().mean()), rel=1e-12)
    assert F.cross_entropy(scores, y).item() >= outputs.floor and outputs.held >= FLOOR_HELD
    monitor, model, X, y = _readme_loop(nn.ReLU(), F.cross_entropy, lambda t: t, steps=400, remedies=True)
    assert monitor.stalls[0].remedy_applied == "raw-outputs" and isinstance(model[3], nn.Identity)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    with torch.no_grad():
        assert F.cross_entropy(model(X), y).item() < 0.25 * held * math.log(10)


def test_a_floor_below_half_the_start_is_read_at_a_window_end():
    """README's ReLU-on-scores loop: the loss halves by step 60, then creeps (0.99 at 200), where the
    looks that need a loss stuck high never run; the floor look at window 4's end names it. Oracle:
    the same loop unmonitored, still near 1 at step 300 while the MLP without the ReLU is at 0.05."""
    X, y = _digits()

    def run(head, monitored):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10), head)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64) if monitored else None
        for step in range(1, 301):
            index = torch.randint(0, len(X), (64,))
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X[index]), y[index])
            loss.backward()
            optimizer.step()
            if monitor is not None:
                monitor.update(step, loss.detach(), model)
        with torch.no_grad():
            return monitor, F.cross_entropy(model(X), y).item()

    monitor, _ = run(nn.ReLU(), True)
    stall = monitor.stalls[0]
    assert stall.verdict == "bounded_outputs" and stall.step == 200
    assert stall.loss < 0.5 * stall.evidence["loss"]["initial"]
    outputs = stall.evidence["layers"]["outputs"]
    assert outputs["floor"] <= outputs["value"] and outputs["held"] >= FLOOR_HELD
    _, held = run(nn.ReLU(), False)
    _, free = run(nn.Identity(), False)
    assert held > 0.9 and free < 0.1


class _GruReluScores(nn.Module):
    """A GRU reading the digits row by row, its last state to ten scores through a ReLU."""

    def __init__(self):
        super().__init__()
        self.gru, self.out, self.relu = nn.GRU(8, 32, batch_first=True), nn.Linear(32, 10), nn.ReLU()

    def forward(self, x):
        states, _ = self.gru(x.view(-1, 8, 8))
        return self.relu(self.out(states[:, -1]))


def _gru_loop(remedies, steps):
    X, y = _digits()
    torch.manual_seed(0)
    model = _GruReluScores()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loop = LoopState(model, optimizer, batch_size=64, n_train=len(X), changes_modules=True)
    monitor = StallMonitor(F.cross_entropy, (X, y), budget=None, remedies=remedies, apply_remedy=remedies,
                           max_stalls=1)
    monitor.on_train_start(loop)
    generator = torch.Generator().manual_seed(1)

    def step_loss():
        index = torch.randint(0, len(X), (64,), generator=generator)
        return F.cross_entropy(loop.model(X[index]), y[index])

    watched_steps(loop, monitor, step_loss, steps)
    with torch.no_grad():
        return monitor, loop.model, F.cross_entropy(loop.model(X), y).item(), X


def test_dead_units_that_make_the_outputs_are_taken_off_them():
    """A ReLU on a GRU's scores kills 7 of the 10 at once (step 30): ``dead_units`` names the site
    that makes the outputs and says to take it off; the trials rank that swap first, and the run goes
    on far below the run left alone (0.77). Oracle: the scores zero on every digit, counted by hand."""
    monitor, model, left_alone, X = _gru_loop(False, 30)
    stall = monitor.stalls[0]
    with torch.no_grad():
        dead = float((model(X) <= 0).all(0).double().mean())
    site = next(u for u in stall.evidence["layers"]["units"] if u["name"] == "relu")
    assert stall.verdict == "dead_units" and site["dead"] >= dead >= 0.5
    assert "make the model's outputs: take the relu at 'relu' off them" in stall.remedy
    monitor, model, remedied, _ = _gru_loop(True, 400)
    assert monitor.stalls[0].trials["ranking"][0] == "raw-outputs" and isinstance(model.relu, nn.Identity)
    _, _, left_alone, _ = _gru_loop(False, 400)
    assert remedied < 0.5 * left_alone


def test_a_relu_on_non_negative_regression_targets_is_left_alone():
    """Counts (a ReLU of a linear teacher, never below 0) fitted with a ReLU output under squared error:
    the outputs the ReLU holds at 0 sit where their targets are near 0, so the floor is a small share
    of the loss and the run is not told; it ends near the targets' noise."""
    X, _ = _digits()
    torch.manual_seed(0)
    targets = (X @ torch.randn(64, 1) / 4).relu()
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 1), nn.ReLU())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loop = LoopState(model, optimizer, batch_size=64, n_train=len(X))
    monitor = StallMonitor(F.mse_loss, (X, targets), budget=None)
    monitor.on_train_start(loop)
    generator = torch.Generator().manual_seed(0)

    def step_loss():
        index = torch.randint(0, len(X), (64,), generator=generator)
        return F.mse_loss(model(X[index]), targets[index])

    watched_steps(loop, monitor, step_loss, 400)
    assert all(s.verdict != "bounded_outputs" for s in monitor.stalls)
    outputs = measure_layers(EmpiricalLoss(model, F.mse_loss, (X, targets))).outputs
    assert outputs.family == "relu" and outputs.held < 0.5 * FLOOR_HELD
    with torch.no_grad():
        assert F.mse_loss(model(X), targets).item() < 0.05 * float(targets.var())


def test_the_loss_is_recognised_by_its_value_and_an_unknown_one_gets_no_floor():
    torch.manual_seed(0)
    out, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    assert recognise_loss(F.cross_entropy, out, y)[::2] == ("cross_entropy", 1.0)
    assert recognise_loss(nn.CrossEntropyLoss(reduction="sum"), out, y)[::2] == ("cross_entropy", 16.0)
    assert recognise_loss(nn.CrossEntropyLoss(label_smoothing=0.1), out, y)[::2] == ("cross_entropy", 1.0)
    assert recognise_loss(nn.CrossEntropyLoss(label_smoothing=0.1), out, y)[3] == 0.1
    assert recognise_loss(lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1), out, y) is None  # ε unknown
    assert recognise_loss(nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2, 5)), out, y) is None  # weighted
    assert recognise_loss(lambda o, t: F.nll_loss(torch.log_softmax(o, 1), t), out, y)[0] == "cross_entropy"
    sequence, tokens = torch.randn(2, 7, 5), torch.randint(0, 5, (2, 7))  # a language model's (B, T, V)
    assert recognise_loss(lambda o, t: F.cross_entropy(o.reshape(-1, 5), t.reshape(-1)), sequence,
                          tokens)[0] == "cross_entropy"
    labels = torch.randint(0, 2, (16, 5)).float()
    assert recognise_loss(F.binary_cross_entropy_with_logits, out, labels)[0] == "bce_with_logits"
    assert recognise_loss(F.binary_cross_entropy, torch.sigmoid(out), labels) is None  # probabilities: no floor
    assert recognise_loss(F.mse_loss, out, torch.randn(16, 5))[0] == "mse"
    half = out.bfloat16()  # a model run in bfloat16: its rounding allowed, another loss still told apart
    assert recognise_loss(F.cross_entropy, half, y)[0] == "cross_entropy"
    assert recognise_loss(F.mse_loss, half, labels.bfloat16())[0] == "mse"  # not BCE, tried before it


def test_the_bound_is_found_at_the_module_that_makes_the_outputs_or_a_softmax_written_as_a_function():
    torch.manual_seed(0)
    X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            return torch.softmax(self.linear(x), dim=1)

    def outputs(model):
        return measure_layers(EmpiricalLoss(model, F.cross_entropy, (X, y))).outputs

    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid())
    sigmoid = outputs(model)
    assert (sigmoid.by, sigmoid.family, sigmoid.low, sigmoid.high, sigmoid.module) == ("1", "sigmoid", 0, 1, True)
    assert sigmoid.loss == "cross_entropy" and sigmoid.floor == pytest.approx(math.log1p(2 / math.e), rel=1e-12)
    with torch.no_grad():
        assert sigmoid.value == pytest.approx(F.cross_entropy(model(X), y).item(), rel=1e-6)
    assert sigmoid.held == pytest.approx(sigmoid.floor / sigmoid.value, rel=1e-12)
    clipped = outputs(nn.Sequential(nn.Linear(4, 3), nn.ReLU6()))
    assert (clipped.family, clipped.low, clipped.high) == ("relu6", 0, 6)
    function = outputs(Functional())
    assert (function.by, function.family, function.module) == ("rows sum to 1", "softmax", False)
    assert outputs(nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))) is None  # log-probabilities: unbounded
    assert outputs(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))) is None  # a hidden tanh
    by_chance = torch.rand(8, 3)  # in [0, 1], no bounded module made them
    assert output_bound(by_chance, torch.randint(0, 3, (8,)), F.cross_entropy, None) is None


def test_the_verdict_needs_the_loss_near_its_floor():
    def evidence(held):
        return {"loss": {"value": 1.5, "initial": 2.3, "best": 1.5},
                "layers": {"outputs": {"held": held, "family": "sigmoid", "by": "3", "module": True, "low": 0.0,
                                       "high": 1.0, "loss": "cross_entropy", "value": 1.5, "floor": 1.5 * held}}}

    assert decide(evidence(FLOOR_HELD)) == "bounded_outputs"
    assert decide(evidence(0.97)) == "bounded_outputs"
    assert decide(evidence(0.6)) == "slow"  # the floor far below: something else holds the loss up


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)


def _readme_loop(head, loss_fn, target, *, steps, lr=0.1, remedies=False):
    """README's loop, SGD momentum 0.9 on batches of 64 of the digits, the MLP 64-64-10 with ``head``
    on its outputs; the monitor attached (no budget). Returns the monitor and the model."""
    X, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10), head)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loop = LoopState(model, optimizer, batch_size=64, n_train=len(X), changes_modules=True)
    monitor = StallMonitor(loss_fn, (X, target(y)), budget=None, remedies=remedies, apply_remedy=remedies)
    monitor.on_train_start(loop)
    generator = torch.Generator().manual_seed(0)

    def step_loss():
        index = torch.randint(0, len(X), (64,), generator=generator)
        return loss_fn(loop.model(X[index]), target(y)[index])

    watched_steps(loop, monitor, step_loss, steps, until=lambda m: bool(m.stalls))
    return monitor, loop.model, X, y


def test_a_double_softmax_is_named_and_taking_it_off_goes_through_the_floor():
    """A softmax in front of F.cross_entropy: the loss creeps toward log(1 + 9/e) = 1.46 (chance
    2.30). Named at the first stall with the floor in its evidence; the trial that swaps the
    softmax for the identity wins, and the run ends far below the floor."""
    monitor, model, X, y = _readme_loop(nn.Softmax(dim=1), F.cross_entropy, lambda t: t, steps=600, remedies=True)
    stall = monitor.stalls[0]
    floor = math.log1p(9 / math.e)
    assert stall.verdict == "bounded_outputs"
    outputs = stall.evidence["layers"]["outputs"]
    assert outputs["floor"] == pytest.approx(floor, rel=1e-12) and outputs["value"] >= floor
    assert outputs["held"] >= FLOOR_HELD and "take the softmax at '3' off" in stall.remedy
    assert stall.remedy_applied == "raw-outputs" and isinstance(model[3], nn.Identity)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(100):  # on from the remedied weights: through the floor the softmax kept
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    with torch.no_grad():
        assert F.cross_entropy(model(X), y).item() < 0.5 * floor


@pytest.mark.parametrize("case", ["probabilities into BCELoss", "a sigmoid into squared error on 0/1 targets"])
def test_bounded_outputs_a_loss_expects_raise_no_such_verdict(case):
    """Probabilities are what F.binary_cross_entropy and a 0/1 squared error want: no floor above 0,
    no ``bounded_outputs``, whatever else the monitor says."""
    if case == "probabilities into BCELoss":
        loss_fn = F.binary_cross_entropy
    else:
        loss_fn = F.mse_loss
    monitor, model, X, y = _readme_loop(nn.Sigmoid(), loss_fn, lambda t: F.one_hot(t, 10).float(), steps=400)
    assert all(s.verdict != "bounded_outputs" for s in monitor.stalls)
    outputs = measure_layers(EmpiricalLoss(model, loss_fn, (X, F.one_hot(y, 10).float()))).outputs
    assert outputs.family == "sigmoid"  # the bound is seen, and puts no floor above 0 under these losses
    assert (outputs.loss, outputs.floor) == ((None, None) if loss_fn is F.binary_cross_entropy else ("mse", 0.0))


def test_the_cli_names_a_double_softmax_swaps_it_and_draws_the_floor(tmp_path, monkeypatch, capsys):
    """`descentlab diagnose --model pkg:net --data digits.npz --apply-remedy` on an MLP whose author put
    a softmax in front of the command's cross-entropy: the stall is `bounded_outputs`, the run goes on
    with the softmax swapped out and ends below the floor, and the report draws the loss against it."""
    import json
    import textwrap

    import numpy as np
    from sklearn.datasets import load_digits

    from descentlab.cli import main

    package = tmp_path / "pkg_floor"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent("""
        from torch import nn

        def net():
            return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(dim=1))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    digits = load_digits()
    np.savez(tmp_path / "digits.npz", X=digits.data / 16, y=digits.target)
    out = tmp_path / "run"
    assert main(["diagnose", "--model", "pkg_floor.nets:net", "--data", str(tmp_path / "digits.npz"), "--steps", "400",
                 "--batch-size", "64", "--optimizer", "momentum", "--lr", "0.1", "--apply-remedy", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    stalls = json.loads((out / "stalls.json").read_text())
    assert stalls[0]["verdict"] == "bounded_outputs" and stalls[0]["remedy_applied"] == "raw-outputs"
    floor = math.log1p(9 / math.e)
    assert stalls[0]["evidence"]["layers"]["outputs"]["floor"] == pytest.approx(floor, rel=1e-12)
    final = float(printed.split("train loss ")[1].split(",")[0])
    assert final < 0.25 * floor
    assert (out / "stall-1-floor.png").stat().st_size > 0
