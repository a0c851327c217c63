"""Weights equal at two checks that moved in between: a 2-cycle at the edge of stability is no
"no weight moved" (exact to the bit on some CPUs: README's logistic regression at rate 10 on an
Intel Xeon). The cycle here is exact on every CPU: on a mean of (w·x)²/2 over x = ±1 the Hessian
is 1, and gradient descent at rate 2 takes w to w - 2w = -w."""

import torch
from torch import nn

from descentlab.critical import StallMonitor
from descentlab.critical.history import RunHistory


def _flip_problem():
    X = torch.tensor([1.0, -1.0] * 8)[:, None]
    y = torch.zeros(16)
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.75)

    def loss_fn(out, target):
        return 0.5 * (out.squeeze(-1) - target).pow(2).mean()

    return model, loss_fn, X, y


def _run(step_after_zero_grad: bool):
    model, loss_fn, X, y = _flip_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    monitor = StallMonitor(loss_fn, (X, y), optimizer=optimizer, batch_size=16, budget=None)
    weights = []
    for step in range(1, 101):
        optimizer.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        if step_after_zero_grad:
            optimizer.zero_grad()  # the bug: the step finds no gradient
        optimizer.step()
        weights.append(float(model.weight))
        if monitor.update(step, loss.detach(), model) is not None:
            break
    return monitor.stalls[0], weights


def test_a_two_cycle_is_the_rate_at_its_limit_not_still_weights():
    stall, weights = _run(step_after_zero_grad=False)
    assert weights[:3] == [-0.75, 0.75, -0.75]  # the oracle: every step moved the weight, and back
    assert stall.verdict == "unstable"
    rate = stall.evidence["rate"]
    # closed form: lambda_max = mean(x²) = 1; gradient descent's limit 2 / lr = 1, so lr · λ / 2 = 1
    assert rate["sharpness"] == 2.0 and rate["limit"] == 2.0 and rate["ratio"] == 1.0
    assert stall.evidence["layers"]["layers"][0]["update"] is None  # not measured: the checks read equal weights


def test_weights_no_step_reaches_are_still_told_as_still():
    stall, weights = _run(step_after_zero_grad=True)
    assert set(weights) == {0.75}
    assert stall.verdict == "no_learning_rate"
    assert stall.remedy.startswith("take the optimizer's step after each backward")
    assert stall.evidence["layers"]["layers"][0]["update"] == 0.0


def _flip(model, times):
    with torch.no_grad():
        for _ in range(times):
            model.weight.mul_(-1.0)


def test_the_history_tells_weights_that_came_back_from_weights_that_stayed_or_moved_on():
    """Checks at steps 10 and 20, the norms and sums read at step 11: w -> -w each step (the norm
    kept: the sum tells it), no step at all, and a step that moves the weight on."""
    for flips, shift, expected in ((True, 0.0, (True, True)), (False, 0.0, (False, False)),
                                   (False, 0.5, (True, False))):
        model, *_ = _flip_problem()
        history = RunHistory()
        history.observe(10, 1.0, model, 2.0)
        _flip(model, 1 if flips else 0)  # step 11
        history.observe_after(model)
        _flip(model, 9 if flips else 0)  # steps 12-20
        with torch.no_grad():
            model.weight.add_(shift)
        history.observe(20, 1.0, model, 2.0)
        assert (any(history.moved_after()), history.returned()) == expected


def test_a_weight_that_came_back_is_told_while_its_bias_drifts():
    """The weight cycles exactly while the bias drifts by a rounding a window (README's logistic
    regression at rate 10 under ATEN_CPU_CAPABILITY=default on an Intel Xeon): the weight's layer
    would read an update of 0, so the weights came back."""
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(0.75)
        layer.bias.fill_(0.5)
    history = RunHistory()
    history.observe(10, 1.0, layer, 2.0)
    with torch.no_grad():
        layer.weight.mul_(-1.0)  # step 11
    history.observe_after(layer)
    with torch.no_grad():
        layer.weight.mul_(-1.0)  # back by step 20
        layer.bias.add_(2.0 ** -20)
    history.observe(20, 1.0, layer, 2.0)
    assert history.moved_after() == [True, True] and history.returned()
