"""Schedules against their closed forms written out here, and against torch's schedulers."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descentlab.cli import main
from descentlab.errors import UserInputError
from descentlab.schedules import (SCHEDULES, Constant, CosineRestarts, Exponential, Noam, StepDecay, WarmupCosine,
                                  WarmupInverseSqrt, WarmupLinear, make_scheduler, parse_schedule)

T = range(0, 400)


def torch_factors(make, steps=400, lr=1.0):
    """The factor torch's scheduler applies at each step (lr starts at 1)."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"] / lr)
        opt.step()
        sched.step()
    return out


def test_closed_forms():
    for t in T:
        assert Constant()(t) == 1.0
        w, total = 50, 300
        expected_linear = t / w if t < w else 1 - min(1, (t - w) / (total - w)) * (1 - 0.1)
        assert WarmupLinear(w, total, 0.1)(t) == pytest.approx(expected_linear, abs=1e-15)
        expected_cos = t / w if t < w else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1, (t - w) / (total - w))))
        assert WarmupCosine(w, total, 0.1)(t) == pytest.approx(expected_cos, abs=1e-15)
        assert WarmupInverseSqrt(w)(t) == pytest.approx(t / w if t < w else (w / t) ** 0.5, abs=1e-15)
        n = t + 1  # Vaswani et al.: lrate = d^-0.5 * min(step^-0.5, step * warmup^-1.5), step from 1
        assert Noam(512, 40)(t) == pytest.approx(512 ** -0.5 * min(n ** -0.5, n * 40 ** -1.5), rel=1e-14)
    assert max(Noam(512, 40)(t) for t in T) == pytest.approx(Noam(512, 40)(39))  # the peak is at the warm-up's end
    assert WarmupCosine(10, 100)(10) == 1.0 and WarmupLinear(10, 100)(100) == 0.0


@pytest.mark.parametrize("ours, theirs", [
    (Exponential(0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    (StepDecay(every=30, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=30, gamma=0.5)),
    (CosineRestarts(period=40, mult=1, final=0.1),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=40, T_mult=1, eta_min=0.1)),
    (CosineRestarts(period=10, mult=2, final=0.0),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2)),
    (WarmupLinear(0, 200, 0.25), lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.25, total_iters=200)),
], ids=["exponential", "step", "restarts", "restarts-mult2", "linear-decay"])
def test_matches_torch_scheduler(ours, theirs):
    expected = torch_factors(theirs)
    got = torch_factors(lambda o: make_scheduler(o, ours))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosine_decay_matches_torch_after_the_warmup():
    w, total, final = 25, 225, 0.2
    expected = torch_factors(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - w, eta_min=final),
                             steps=total - w + 1)
    ours = WarmupCosine(w, total, final)
    assert [ours(w + s) for s in range(total - w + 1)] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_spec_strings_round_trip_and_bad_specs_are_named():
    for name in SCHEDULES:
        schedule = parse_schedule(name)
        assert parse_schedule(str(schedule)) == schedule
    assert parse_schedule("warmup-cosine:warmup=100,total=1000") == WarmupCosine(100, 1000, 0.0)
    assert parse_schedule(" noam : d_model = 64 , warmup = 400 ".replace(" : ", ":")) == Noam(64, 400)
    for spec, words in [("cosine", "unknown schedule 'cosine'"), ("noam:dmodel=3", "no parameter 'dmodel'"),
                        ("step:every", "expected key=value"), ("step:every=2.5", "every must be an integer"),
                        ("exponential:gamma=2", "gamma must be"), ("warmup-cosine:warmup=10,total=5", "total must"),
                        ("step:every=2,every=3", "every given twice"), ("", "non-empty")]:
        with pytest.raises(UserInputError, match=words):
            parse_schedule(spec)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.sampled_from(["gamma", "warmup", "period", "final"]), st.floats(min_value=-1e6, max_value=-1e-6))
def test_invalid_parameters_raise_value_error_naming_them(argument, value):
    make = {"gamma": lambda v: Exponential(v), "warmup": lambda v: WarmupInverseSqrt(int(v) - 1),
            "period": lambda v: CosineRestarts(period=int(v)), "final": lambda v: WarmupCosine(final=v)}[argument]
    with pytest.raises(ValueError, match=argument):
        make(value)


def test_scheduler_resumes_from_the_step_count_alone():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.5)
    sched = make_scheduler(opt, "warmup-rsqrt:warmup=10")
    for _ in range(37):
        opt.step()
        sched.step()
    fresh_opt = torch.optim.SGD([p], lr=0.5)
    fresh = make_scheduler(fresh_opt, "warmup-rsqrt:warmup=10")
    fresh.load_state_dict(sched.state_dict())
    fresh_opt.load_state_dict(opt.state_dict())
    assert fresh.last_epoch == 37 and fresh_opt.param_groups[0]["lr"] == pytest.approx(0.5 * (10 / 37) ** 0.5)


def test_schedules_command_draws_a_png(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["schedules", "--steps", "100", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "warmup-cosine:warmup=10,total=100" in text and "noam" in text
    assert main(["schedules", "--schedule", "noam:dmodel=3"]) == 2
    assert "no parameter 'dmodel'" in capsys.readouterr().err
