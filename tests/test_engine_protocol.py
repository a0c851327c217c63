"""The protocol between a loop and its callbacks: a change as data, made by one function, its rate
a torch scheduler (replacing or composed with the loop's), requests applied through Control."""

import io
import math

import pytest
import torch
from torch import nn

from descentlab.engine import Callback, Change, Control, LoopState, RemedyLR, Request, apply_change
from descentlab.optim.noise import GradientNoise


def _sgd(lr=0.1, groups=1):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    params = [{"params": [model.weight], "lr": lr}, {"params": [model.bias], "lr": lr / 2}][:groups] if groups > 1 \
        else model.parameters()
    return model, torch.optim.SGD(params, lr=lr, momentum=0.0)


def _rates(optimizer, scheduler, steps):
    """The rate of each group the optimizer uses at each of ``steps`` steps (step, then scheduler step)."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        assert scheduler.get_last_lr() == seen[-1]  # get_last_lr is the rate in use
        optimizer.step()
        scheduler.step()
    return seen


def test_a_relative_change_without_a_scheduler_sets_the_closed_form_rate():
    _, opt = _sgd(0.1, groups=2)
    done = apply_change(Change(lr_factor=0.3, schedule="inverse-time:tau=4"), opt)
    assert done.text == "" and isinstance(done.scheduler, RemedyLR)
    expected = [[0.1 * 0.3 / (1 + t / 4), 0.05 * 0.3 / (1 + t / 4)] for t in range(12)]
    for got, want in zip(_rates(opt, done.scheduler, 12), expected):
        assert got == pytest.approx(want, rel=1e-14)


def test_warm_up_restarts_from_zero_and_decays_as_one_over_the_square_root():
    _, opt = _sgd(0.2)
    done = apply_change(Change(schedule="warmup-rsqrt:warmup=5"), opt)
    expected = [0.2 * (t / 5 if t < 5 else math.sqrt(5 / t)) for t in range(15)]
    assert [r[0] for r in _rates(opt, done.scheduler, 15)] == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("inner", ["lambda-cosine", "exponential"])
def test_a_relative_change_composes_with_the_loops_scheduler(inner):
    """The oracle: the loop's own scheduler run alone on a twin optimizer, times the remedy's factor."""
    def make(opt):
        if inner == "exponential":  # chainable: each step multiplies the rate the group has now
            return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / 40)))

    _, opt = _sgd(0.1)
    _, twin = _sgd(0.1)
    scheduler, alone = make(opt), make(twin)
    for _ in range(7):  # the run had its schedule for 7 steps before the stall
        opt.step(), scheduler.step(), twin.step(), alone.step()
    done = apply_change(Change(lr_factor=0.3, schedule="inverse-time:tau=10"), opt, scheduler)
    assert "composed" in done.text
    rates = _rates(opt, done.scheduler, 20)
    own = []
    for _ in range(20):
        own.append(alone.get_last_lr()[0])
        twin.step(), alone.step()
    assert [r[0] for r in rates] == pytest.approx([b * 0.3 / (1 + t / 10) for t, b in enumerate(own)], rel=1e-12)


def test_an_absolute_rate_replaces_the_loops_scheduler_and_says_so():
    _, opt = _sgd(0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    done = apply_change(Change(lr=0.7), opt, scheduler)
    assert "replaced" in done.text
    assert _rates(opt, done.scheduler, 6) == [[0.7]] * 6
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)  # steps on a metric: cannot be a base
    assert "replaced" in apply_change(Change(lr_factor=0.5), opt, plateau).text


def test_the_rate_schedule_survives_a_weights_only_checkpoint():
    _, opt = _sgd(0.1)
    inner = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
    scheduler = apply_change(Change(lr_factor=0.5, schedule="inverse-time:tau=3"), opt, inner).scheduler
    _rates(opt, scheduler, 9)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    ahead = _rates(opt, scheduler, 5)
    _, again = _sgd(0.1)  # a resumed run: the same change made again, then the states loaded
    inner = torch.optim.lr_scheduler.ExponentialLR(again, gamma=0.95)
    resumed = apply_change(Change(lr_factor=0.5, schedule="inverse-time:tau=3"), again, inner).scheduler
    again.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert _rates(again, resumed, 5) == ahead


def test_a_new_optimizer_takes_the_same_parameters_with_fresh_state_and_ends_the_old_schedule():
    model, opt = _sgd(0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    done = apply_change(Change(optimizer="adam", lr=1e-3), opt, scheduler)
    assert isinstance(done.optimizer, torch.optim.Adam) and done.scheduler is None and "ended" in done.text
    assert [p for g in done.optimizer.param_groups for p in g["params"]] == list(model.parameters())
    assert done.optimizer.state_dict()["state"] == {} and done.optimizer.param_groups[0]["lr"] == 1e-3


def test_momentum_and_seeded_noise():
    _, opt = _sgd(0.1)
    assert apply_change(Change(momentum=0.9), opt).optimizer.param_groups[0]["momentum"] == 0.9
    draws = []
    for _ in range(2):
        model, opt = _sgd(0.1)
        wrapped = apply_change(Change(noise=True), opt, seed=11).optimizer
        assert isinstance(wrapped, GradientNoise)
        model.weight.grad = torch.zeros_like(model.weight)
        model.bias.grad = torch.zeros_like(model.bias)
        wrapped.step()  # zero gradient: the step is the noise alone
        draws.append(model.weight.detach().clone())
    assert torch.equal(draws[0], draws[1])
    adam = apply_change(Change(momentum=0.8), torch.optim.Adam(nn.Linear(2, 1).parameters())).optimizer
    assert adam.param_groups[0]["betas"] == (0.8, 0.999)  # Adam's momentum is its beta1
    with pytest.raises(ValueError, match="momentum"):
        apply_change(Change(momentum=0.9), torch.optim.Adagrad(nn.Linear(2, 1).parameters()))


def test_bad_changes_name_the_argument():
    for kwargs, name in [({"lr_factor": 0.0}, "lr_factor"), ({"lr": -1.0}, "lr"), ({"momentum": 1.5}, "momentum"),
                         ({"batch_size": 0}, "batch_size"), ({"schedule": "nope"}, "schedule")]:
        with pytest.raises(ValueError, match=name):
            Change(**kwargs)
    assert Change().is_empty and not Change(noise=True).is_empty
    assert Change.from_dict(Change(lr_factor=0.3, schedule="inverse-time:tau=4").to_dict()).rate_factor(4) == 0.5


class _Asker(Callback):
    def on_step_end(self, loop, loss):
        if loop.step == 3:
            self.control.request(Request(3, "smaller", Change(lr_factor=0.5, batch_size=16)))
        if loop.step == 5:
            self.control.request_stop("enough")


def test_a_loop_applies_a_callbacks_request_in_one_call_and_stops_when_asked():
    model, opt = _sgd(0.1)
    loop = LoopState(model, opt, batch_size=64)
    asker = _Asker()
    asker.on_train_start(loop)
    for step in range(1, 10):
        loop.step = step
        asker.on_step_end(loop, torch.tensor(1.0))
        if asker.control.pending:
            loop = asker.control.apply(loop)
        if asker.control.should_stop:
            break
    assert loop.step == 5 and asker.control.stop_reason == "enough"
    assert loop.batch_size == 16 and isinstance(loop.scheduler, RemedyLR) and opt.param_groups[0]["lr"] == 0.05
    assert [r.name for r, _ in asker.control.applied] == ["smaller"] and asker.control.pending is None
    again = Control()
    again.load_state_dict(asker.state_dict()["control"])
    assert again.applied == asker.control.applied and again.stop_reason == "enough"
    assert Control().apply(loop) is loop  # nothing pending: nothing changes
