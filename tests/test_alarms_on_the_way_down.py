"""An alarm (the loop's gradient grew, the tracked loss bounced) asks for a diagnosis at once,
without a plateau. On a loss that surely fell until then, only a verdict that explains a rise is
told: a healthy run's noisy batches throw its loss up now and then on the way down, and a noise
floor, a saddle or a slow pace describe where a loss stops, not a blip on a descent. And ``slow``
is not told while the schedule raises the rate. Oracles: the fall of a noiseless exponential in
closed form; the runs' own losses on the data (the healthy ones end far below where the alarms
used to come; the kicked one is thrown far above where it was)."""

import math

import pytest
import torch
from sklearn.datasets import load_digits, load_wine, make_moons
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.critical.plateau import PlateauTest
from descentlab.experiments.zoo import run_case
from descentlab.problems.workloads import get_workload
from descentlab.problems.zoo import get_case

WINDOW, EVERY, REL_TOL = 50, 10, 1e-3


def _fed(losses, start=10):
    test = PlateauTest(WINDOW, EVERY, REL_TOL)
    for i, value in enumerate(losses):
        test.add(start + EVERY * i, value)
    return test


@pytest.mark.parametrize("rate, fell", [(1e-4, True), (1e-5, False), (0.0, False), (-1e-3, False)])
def test_fell_before_last_reads_the_fall_of_the_logarithm_before_the_latest_point(rate, fell):
    # exp(-rate * t): its logarithm falls rate * WINDOW a window, exactly (no residual: sigma 0)
    steps = [10 + EVERY * i for i in range(12)]
    losses = [2.0 * math.exp(-rate * t) for t in steps] + [50.0]  # the spike itself is left out
    assert (rate * WINDOW >= REL_TOL) is fell
    assert _fed(losses).fell_before_last() is fell


def test_fell_before_last_cannot_tell_on_too_few_points_or_a_loss_that_is_not_positive():
    assert _fed([1.0, 0.5, 3.0]).fell_before_last() is None  # two points before the latest
    assert _fed([1.0, 0.5, 0.25, 3.0]).fell_before_last() is True
    assert _fed([1.0, 0.0, 0.0, 0.0, 1.0]).fell_before_last() is None


def _run(model, X, y, optimizer, steps, batch, scheduler=None, kick=None, loss_fn=F.cross_entropy):
    monitor = StallMonitor(loss_fn, (X, y), optimizer=optimizer, batch_size=batch)
    generator = torch.Generator().manual_seed(1)
    losses, order = {}, torch.randperm(len(X), generator=generator)
    for step in range(1, steps + 1):
        if kick is not None and step == kick[0]:
            for group in optimizer.param_groups:
                group["lr"] = kick[1]
        start = (step - 1) * batch % (len(X) // batch * batch)
        if step > 1 and start == 0:
            order = torch.randperm(len(X), generator=generator)  # a new epoch
        index = order[start:start + batch]
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        monitor.update(step, loss.detach(), model)
        if step in (30, 200, steps):
            model.eval()
            with torch.no_grad():
                losses[step] = loss_fn(model(X), y).item()
    return monitor, losses


def test_a_healthy_noisy_run_is_not_told_a_noise_floor_on_its_way_down():
    # BatchNorm and dropout at batch 16: the batch gradients span 300-1,000x between checks, so the
    # growth alarm fires every ~10 checks; the loss on the data falls ~50x meanwhile
    data = load_wine()
    X = torch.tensor(data.data, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    monitor, losses = _run(model, X, y, optimizer, 500, 16)
    assert losses[500] < 0.1 * losses[30]  # healthy: far below where the first alarm came
    assert [(s.step, s.verdict) for s in monitor.stalls] == []


def test_slow_is_not_told_while_a_one_cycle_schedule_raises_the_rate():
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.LayerNorm(128), nn.GELU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.3, total_steps=1500)
    monitor, losses = _run(model, X, y, optimizer, 450, 64, scheduler=scheduler)
    assert losses[450] < 0.5 * losses[30]
    assert [(s.step, s.verdict) for s in monitor.stalls] == []


def test_a_rate_kick_on_the_way_down_is_still_told_with_its_cause():
    workload = get_workload("digits-mlp")
    X, y = workload.X_train, workload.y_train
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor, losses = _run(model, X, y, optimizer, 240, 64, kick=(201, 3.0))
    assert losses[30] > losses[200] and losses[240] > 10 * losses[200]  # it fell, then the kick threw it up
    # told once: not again at each check it keeps rising, nor as batches "left behind" (the data's loss
    # is read after the steps its batches were read before)
    assert [s.verdict for s in monitor.stalls] == ["unstable"] and 200 < monitor.stalls[0].step <= 220
    assert monitor.stalls[0].evidence["rate"]["ratio"] >= 1.0


def test_a_run_rolled_back_from_a_divergence_forgets_the_batch_losses_of_the_steps_that_diverged():
    # the batches' losses of the diverging steps (up to 1e22) against the data's would make every
    # later ratio look like batches left far behind (biased_batches, "2.8e-23 of their ratio")
    run = run_case(get_case("diverged-cnn-digits"), apply_remedy=True)
    assert run.applied == ("rollback at step 9",)
    assert [s["verdict"] for s in run.stalls] == ["diverged"]
    assert max(run.losses[-20:]) < 0.1 * run.initial_loss  # the rolled-back run trains (the data's loss)


def test_a_noise_floor_left_alone_is_told_once_while_the_loss_creeps_along_it():
    # batch-1 SGD on the moons: the loss creeps 0.28 -> 0.25 over 2,000 steps, one plateau after
    # another at the same noise floor (before: five stalls, the same verdict and advice each time)
    torch.manual_seed(0)
    X, y = make_moons(500, noise=0.1, random_state=0)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor, losses = _run(model, X, y, optimizer, 3000, 1)
    assert [s.verdict for s in monitor.stalls] == ["noise_floor"]
    first = monitor.stalls[0]
    assert first.evidence["noise"]["snr"] < 1.0  # the oracle of the verdict: the batch gradient is mostly noise
    assert 0.5 * first.loss < losses[3000] < first.loss  # it crept on, but not to a new place


def test_a_loss_a_rate_rise_threw_up_is_unstable_with_the_rate_of_its_best_though_within_the_limit():
    # a tanh MLP trained at 0.1, the rate then set to 1.0: the loss is thrown up ~10x and held there,
    # while the sharpness where it landed is within the limit (before: "slow, raise the rate")
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor, losses = _run(model, X, y, optimizer, 300, 64, kick=(201, 1.0))
    assert losses[300] >= 3 * losses[200]  # the oracle: thrown up and held there
    first = monitor.stalls[0]
    assert first.verdict == "unstable" and 200 < first.step <= 300
    assert first.evidence["rate"]["ratio"] < 1.0  # not by the sharpness: by the rate's rise
    assert first.evidence["loss"]["best_lr"] == pytest.approx(0.1) and first.evidence["rate"]["lr"] == 1.0
    assert "lower the rate back toward 0.1" in first.remedy


def test_a_noise_floor_is_not_told_in_a_cosine_schedules_tail():
    # AdamW with a cosine over the run and label smoothing: the loss levels off as the rate goes to 0
    # (at step 1,370 the rate is 2 % of its peak); the schedule is doing what the noise floor's remedy
    # would (before: "noise_floor at 1370: decay the rate")
    digits = load_digits()
    X, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Dropout(0.1), nn.Linear(128, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1500)
    monitor, losses = _run(model, X, y, optimizer, 1500, 64, scheduler=scheduler,
                           loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1))
    assert (1 + math.cos(math.pi * 1370 / 1500)) / 2 < 0.1  # the tail: the rate under a tenth of its peak
    assert losses[1500] < 0.5 * losses[30]
    assert [(s.step, s.verdict) for s in monitor.stalls] == []
