"""Remedy trials: bit-identical forks, stacked trials equal separate ones, the winners the presets
call for, and continuing a run with the winner (in a user's loop, and in train() across a resume)."""

import copy
import math

import pytest
import torch
from torch import nn

from descentlab.cli import main
from descentlab.critical import StallMonitor
from descentlab.critical.remedies import LOWER_FACTOR, MENU, RAISE_TO, Remedy, remedies_for
from descentlab.critical.trials import fork, run_trials
from descentlab.engine import Callback, Change, LoopState, Request
from descentlab.experiments.rundir import RunDir
from descentlab.experiments.train import TrainConfig, train
from descentlab.optim import clear_state, make_optimizer
from descentlab.problems.workloads import get_workload

from helpers import loss_of_flat, watched_steps


def test_a_budget_short_of_the_menu_tries_keep_and_the_likeliest_fix_and_measures_them_alike():
    monitor, stall, loop = _monitored_to_first_stall("minimum", lr=1e-5)
    full = {t["remedy"]: t for t in stall.trials["trials"]}
    steps = monitor.diagnoser.options.trial_steps

    def trials_within(remedies):  # one second a trial step: room for this many trials
        return monitor.diagnoser._trials(stall, loop.model, loop.optimizer, loop.batch_size, 1.0,
                                         lambda expected: expected <= remedies * steps)[0]

    record = trials_within(2)
    assert record["status"] == "ran" and record["left_out"]["remedies"] == ["momentum", "adam"]
    assert record["left_out"]["expected_seconds"] == len(MENU["slow"]) * steps
    by_name = {t["remedy"]: t for t in record["trials"]}
    assert set(by_name) == {"keep", "raise-rate"} and record["winner"] == "raise-rate"
    for name, trial in by_name.items():  # the same fork, seed and steps as the whole menu's trials
        assert trial["losses"] == pytest.approx(full[name]["losses"], rel=1e-5)
    assert trials_within(3)["left_out"]["remedies"] == ["adam"]
    assert "left_out" not in trials_within(4)
    skipped = trials_within(1)  # keep alone compares nothing
    assert skipped["status"] == "skipped (budget)" and skipped["remedies"] == list(MENU["slow"])


def _trained(name, optimizer="noisy:adam", steps=5):
    workload = get_workload(name)
    torch.manual_seed(0)
    model = workload.make_model()
    opt = make_optimizer(optimizer, model.parameters(), lr=1e-2)
    X, y = workload.X_train, workload.y_train
    for _ in range(steps):
        opt.zero_grad()
        workload.loss_fn(model(X), y).backward()
        opt.step()
    return workload, model, opt


def _tensors(value):
    """Every tensor in a (nested) state dict, in a fixed order."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):
        return [t for k in sorted(value, key=str) for t in _tensors(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def test_fork_starts_from_bit_identical_weights_and_optimizer_state():
    workload, model, opt = _trained("moons")
    copy_model, copy_opt = fork(model, opt)
    for a, b in zip(model.parameters(), copy_model.parameters()):
        assert a is not b and torch.equal(a, b)
    original, forked = opt.state_dict(), copy_opt.state_dict()
    assert original["param_groups"] == forked["param_groups"] and original["noise"]["t"] == forked["noise"]["t"]
    assert len(_tensors(original)) > 10 and all(torch.equal(a, b) for a, b in zip(_tensors(original), _tensors(forked)))
    # the copied optimizer steps the copied parameters, and only them
    copied = {id(p) for g in copy_opt.param_groups for p in g["params"]}
    assert copied == {id(p) for p in copy_model.parameters()}
    before = [p.detach().clone() for p in model.parameters()]
    copy_opt.zero_grad()
    workload.loss_fn(copy_model(workload.X_train), workload.y_train).backward()
    copy_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_every_trial_starts_at_the_run_and_keep_takes_the_runs_own_next_step():
    """``keep`` with one recorded step equals one plain step of the run's optimizer on the same batch;
    the run itself is untouched."""
    workload, model, opt = _trained("moons", optimizer="adam")
    X, y = workload.X_train, workload.y_train
    before = [p.detach().clone() for p in model.parameters()]
    remedies = [Remedy("keep", "carry on"), Remedy("lower-rate", "x0.3", Change(lr_factor=0.3))]
    result = run_trials(model, opt, workload.loss_fn, (X, y), remedies, steps=1, batch_size=32, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    start = workload.loss_fn(model(X), y).item()
    assert all(t.steps == (0, 1) and t.losses[0] == start for t in result.trials)
    # the same batch the trials drew: the first 32 of a permutation from a generator seeded 7
    index = torch.randperm(len(X), generator=torch.Generator().manual_seed(7))[:32]
    plain_model, plain_opt = fork(model, opt)
    plain_opt.zero_grad()
    workload.loss_fn(plain_model(X[index]), y[index]).backward()
    plain_opt.step()
    expected = workload.loss_fn(plain_model(X), y).item()
    # float32, one step: the stacked (vmapped) forward rounds differently from the plain one
    assert result.get("keep").losses[1] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for t in result.trials:  # ranked by orders of magnitude per second: ln(L_fork / L_end) / seconds
        assert t.rate == pytest.approx(math.log(t.losses[0] / t.losses[-1]) / t.seconds, rel=1e-12)


def test_a_loss_that_is_not_positive_ranks_trials_by_the_plain_decrease():
    """The moons' loss shifted by -10 (a log-likelihood can be negative): no orders of magnitude
    to read, so every rate is the decrease over the seconds, and the table says so."""
    workload, model, opt = _trained("moons", optimizer="sgd")
    shifted = lambda out, y: workload.loss_fn(out, y) - 10.0  # noqa: E731
    remedies = [Remedy("keep", "carry on"), Remedy("lower-rate", "x0.3", Change(lr_factor=0.3))]
    result = run_trials(model, opt, shifted, (workload.X_train, workload.y_train), remedies, steps=5,
                        batch_size=32, seed=7)
    assert not result.logarithmic and result.to_dict()["logarithmic"] is False
    for t in result.trials:
        assert t.rate == pytest.approx((t.losses[0] - t.losses[-1]) / t.seconds, rel=1e-12)
    from descentlab.critical.stall import Stall
    from descentlab.report.diagnose_page import trial_lines

    stall = Stall(10, -9.7, 0.1, "loss", "diagnosed", trials={**result.to_dict(), "status": "ran", "fork_step": 10})
    header = trial_lines([stall])[1]
    assert "decrease per second" in header and "ln-decrease" not in header


def test_trials_are_ranked_by_the_orders_of_magnitude_they_take_off_the_loss():
    """A zoo stall (unscaled inputs, loss 25.26 at the fork): standardizing reached 0.084 in
    0.0103 s, Adam 0.585 in 0.0123 s. Their decreases are 2 % apart, so the clock decided
    between them; in orders of magnitude, 5.70 against 3.76 per the same steps, standardizing
    leads by 1.8x per second, past any clock's noise. A loss that is not positive everywhere
    falls back to the plain decrease."""
    from descentlab.critical.trials import Trial, progress, ranked

    start = 25.26
    assert progress(start, 0.084, logarithmic=True) == pytest.approx(math.log(25.26 / 0.084), rel=1e-15)
    assert progress(start, 0.084, logarithmic=False) == pytest.approx(25.176, rel=1e-12)
    assert math.isnan(progress(start, math.inf, logarithmic=True))

    def trial(name, end, seconds, logarithmic):
        gained = progress(start, end, logarithmic=logarithmic)
        return Trial(Remedy(name, name), (0, 50), (start, end), start - end, seconds, gained / seconds)

    for clock in (1.0, 1.5):  # Adam's step measured 1.5x faster than it is: a loaded machine
        names = [t.remedy.name for t in ranked([trial("standardize", 0.084, 0.0103, True),
                                                trial("adam", 0.585, 0.0123 / clock, True)])]
        assert names == ["standardize", "adam"]
    linear = [trial("standardize", 0.084, 0.0103, False), trial("adam", 0.585, 0.0123 / 1.5, False)]
    assert [t.remedy.name for t in ranked(linear)] == ["adam", "standardize"]  # what the plain decrease did


def test_stacked_trials_equal_trials_run_one_after_another():
    workload, model, opt = _trained("moons", optimizer="sgd", steps=20)
    remedies = remedies_for("noise_floor", {"noise": {"critical_batch": 50.0}}, opt, batch_size=8, n_data=800,
                            trial_steps=20)
    assert [r.name for r in remedies] == list(MENU["noise_floor"])
    kwargs = dict(steps=20, batch_size=8, seed=3, record_every=5)
    stacked = run_trials(model, opt, workload.loss_fn, (workload.X_train, workload.y_train), remedies, **kwargs)
    alone = run_trials(model, opt, workload.loss_fn, (workload.X_train, workload.y_train), remedies, stack=False,
                       **kwargs)
    assert stacked.stacked and not alone.stacked
    for a, b in zip(stacked.trials, alone.trials):
        # 20 float32 steps: rounding of vmapped and plain kernels apart, the same trajectories
        assert a.losses == pytest.approx(b.losses, rel=1e-4)
    assert stacked.get("larger-batch").remedy.change.batch_size == 50  # B* from the noise evidence, above 4 x 8


def _monitored_to_first_stall(name, lr=None, **options):
    """The preset trained (plain loop, at ``lr`` or its own rate) until the monitor's first diagnosed
    stall, remedies on, no budget cap."""
    workload = get_workload(name)
    torch.manual_seed(0)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr if lr is None else lr)
    X, y = workload.X_train, workload.y_train
    batch = workload.batch_size or len(X)
    monitor = StallMonitor(workload.loss_fn, (X, y), budget=None, remedies=True, **options)
    loop = LoopState(model, optimizer, batch_size=batch)
    monitor.on_train_start(loop)
    generator = torch.Generator().manual_seed(0)
    for step in range(1, workload.steps + 1):
        index = torch.randperm(len(X), generator=generator)[:batch]
        optimizer.zero_grad()
        loss = workload.loss_fn(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        loop.step = step
        monitor.on_step_end(loop, loss.detach())
        if monitor.stalls and monitor.stalls[-1].status == "diagnosed":
            return monitor, monitor.stalls[-1], loop
    raise AssertionError("no stall")


def test_at_the_unstable_preset_lowering_the_rate_wins():
    monitor, stall, loop = _monitored_to_first_stall("unstable")
    trials = stall.trials
    assert stall.verdict == "unstable" and trials["status"] == "ran"
    by_name = {t["remedy"]: t for t in trials["trials"]}
    assert set(by_name) == set(MENU["unstable"]) - {"lower-momentum"}  # plain GD: no momentum to ring
    # every remedy on this menu lowers the rate (at once, over time, or by restarting it from 0):
    # all reach the optimum 0.284, while the run as it is stays on its two-step oscillation
    assert trials["winner"] in ("lower-rate", "decay", "warm-up") and trials["ranking"][-1] == "keep"
    assert by_name["lower-rate"]["losses"][-1] < 0.2845 and abs(by_name["keep"]["decrease"]) < 1e-4
    assert by_name["lower-rate"]["decrease"] > 100 * abs(by_name["keep"]["decrease"])
    # report only: the run's optimizer is unchanged, and nothing is asked of the loop
    assert loop.optimizer.param_groups[0]["lr"] == 10.0 and monitor.control.pending is None


def test_a_slow_run_is_offered_half_its_largest_stable_rate_and_it_wins():
    # logistic regression on the moons, full-batch GD at lr 1e-5: 300,000x below its limit 2 / lambda_max
    monitor, stall, loop = _monitored_to_first_stall("minimum", lr=1e-5)
    assert stall.verdict == "slow" and stall.trials["status"] == "ran"
    by_name = {t["remedy"]: t for t in stall.trials["trials"]}
    assert set(by_name) == set(MENU["slow"]) and stall.trials["winner"] == "raise-rate"
    # oracle: the exact Hessian of the monitor's sample where the run stopped (the trials' fork
    # point; nothing was applied), so the raised rate is half of 2 / lambda_max there: 1 / lambda_max
    X, y = monitor.sample
    loss, theta = loss_of_flat(copy.deepcopy(loop.model).double(), get_workload("minimum").loss_fn, X.double(), y)
    lambda_max = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta)).max())
    raised = 1e-5 * by_name["raise-rate"]["change"]["change"]["lr_factor"]
    assert raised == pytest.approx(1.0 / lambda_max, rel=0.02)  # Lanczos' tolerance on lambda_max
    assert by_name["raise-rate"]["decrease"] > 10 * by_name["keep"]["decrease"] > 0


def test_at_the_saddle_preset_the_escapes_win():
    monitor, stall, loop = _monitored_to_first_stall("stall", escape=False)
    trials = stall.trials
    assert stall.verdict == "saddle" and trials["winner"] == "escape-fast" and trials["ranking"][:2] == \
        ["escape-fast", "escape"]
    by_name = {t["remedy"]: t for t in trials["trials"]}
    assert set(by_name) == set(MENU["saddle"]) and "lowered the loss" in by_name["escape"]["note"]
    # both escapes win on the loss decrease itself, not only per second; the faster rate by far
    others = max(t["decrease"] for n, t in by_name.items() if not n.startswith("escape"))
    assert by_name["escape"]["decrease"] > 1.5 * others and by_name["escape-fast"]["decrease"] > 5 * others
    # the largest |eigenvalue| at this saddle is its lambda_max: the rate 1 / lambda_max, what raise-rate would set
    rate = by_name["escape-fast"]["change"]["change"]["lr_factor"] * loop.optimizer.param_groups[0]["lr"]
    assert rate == pytest.approx(1.0 / stall.evidence["curvature"]["max_eigenvalue"])
    assert not stall.escaped  # escape=False, apply_remedy=False: nothing moved the run


def test_at_a_maximum_the_fast_escape_runs_at_half_the_limit_of_its_largest_curvature_and_repairs_the_run():
    """The zoo's linear angle regression started half a turn from its teacher (1 - cos at its
    maximum, 9 parameters, full-batch GD at lr 0.02): ``escape-fast`` steps out along the most
    negative eigenvector and sets the rate to 1/ρ, ρ the largest |eigenvalue| of the sample's
    exact float64 Hessian at the stall (GD's limit 2/ρ halved); applied, the run ends within the
    zoo's 10 % of the same model trained from PyTorch's initialisation from step 0 (the plain
    escape at the run's rate ends at 0.99 against the counterpart's 3e-5)."""
    from descentlab.experiments.zoo import REPAIR_TOLERANCE, run_case
    from descentlab.problems.zoo import get_case

    case = get_case("maximum-mlp-angles")
    X, y = case.dataset().X, case.dataset().y
    torch.manual_seed(0)
    model = case.make_model()
    loop = LoopState(model, torch.optim.SGD(model.parameters(), lr=case.optimizer.lr), batch_size=len(X))
    monitor = StallMonitor(case.loss_fn, (X, y), budget=None, remedies=True, seed=0)
    monitor.on_train_start(loop)
    watched_steps(loop, monitor, lambda: case.loss_fn(model(X), y), case.steps, until=lambda m: m.stalls)
    stall = monitor.stalls[0]
    assert stall.verdict == "maximum" and not stall.escaped
    Xs, ys = monitor.sample
    loss, theta = loss_of_flat(copy.deepcopy(model).double(), case.loss_fn, Xs.double(), ys)
    radius = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta)).abs().max())
    fast = next(t for t in stall.trials["trials"] if t["remedy"] == "escape-fast")
    assert case.optimizer.lr * fast["change"]["change"]["lr_factor"] == pytest.approx(RAISE_TO * 2.0 / radius, rel=1e-3)
    remedied = run_case(case, apply_remedy=True)
    healthy = run_case(case.fixed, monitor=False)
    assert remedied.applied[0].startswith("escape-fast at")
    assert remedied.final_loss <= (1 + REPAIR_TOLERANCE) * healthy.final_loss + 1e-3 * healthy.initial_loss


#: The rate of each remedy the unstable preset can win with, t steps after the stall: lr 10, trials of
#: 50 steps (lower-rate x 0.3; decay 1 / (1 + t / 12); warm-up over 25 steps, then sqrt(25 / t)).
_RATES = {"lower-rate": lambda t: 3.0, "decay": lambda t: 10.0 / (1 + t / 12),
          "warm-up": lambda t: 10.0 * (t / 25 if t < 25 else math.sqrt(25 / t))}


def test_apply_remedy_in_a_users_loop_is_a_request_the_loop_applies_as_a_scheduler():
    monitor, stall, loop = _monitored_to_first_stall("unstable", apply_remedy=True)
    winner = stall.trials["winner"]
    assert stall.remedy_applied == winner and monitor.control.pending.name == winner
    assert loop.optimizer.param_groups[0]["lr"] == 10.0  # requested, not made: the loop makes it
    monitor.control.apply(loop)
    assert monitor.control.pending is None and loop.scheduler is not None
    rate = _RATES[winner]
    for t in range(40):
        assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(rate(t), rel=1e-12)
        assert loop.scheduler.get_last_lr() == [loop.optimizer.param_groups[0]["lr"]]
        loop.optimizer.step()
        loop.scheduler.step()


def test_a_request_the_loop_does_not_apply_is_reported_once(caplog):
    monitor, stall, loop = _monitored_to_first_stall("unstable", apply_remedy=True)
    with caplog.at_level("WARNING", logger="descentlab.monitor"):
        for step in range(stall.diagnosed_at + 1, stall.diagnosed_at + 30):
            loop.step = step
            monitor.on_step_end(loop, torch.tensor(0.3))
    lines = [r.getMessage() for r in caplog.records if "has not been applied" in r.getMessage()]
    assert len(lines) == 1 and "monitor.control.apply(loop)" in lines[0]


class _SwitchAt(Callback):
    """A callback that asks train() to continue with ``remedy`` at ``step`` (as an applied remedy does)."""

    def __init__(self, step, remedy):
        super().__init__()
        self.at, self.remedy, self.done, self.seen = step, remedy, False, []

    def on_step_end(self, loop, loss):
        if loop.step == self.at + 1:
            self.seen.append((type(loop.optimizer).__name__, loop.batch_size))
        if not self.done and loop.step == self.at:
            self.done = True
            self.control.request(Request(loop.step, self.remedy.name, self.remedy.change, seed=loop.step))

    def state_dict(self):
        return {"done": self.done, "seen": self.seen}

    def load_state_dict(self, state):
        self.done, self.seen = state["done"], state["seen"]


def test_train_continues_with_a_new_optimizer_noise_and_batch_and_resumes_bit_for_bit(tmp_path):
    workload = get_workload("moons")
    config = TrainConfig(optimizer="sgd", lr=0.1, batch_size=32, steps=60, checkpoint_every=20)
    remedy = Remedy("adam+", "Adam with noise on batches of 100",
                    Change(optimizer="adam", lr=1e-3, noise=True, batch_size=100))
    callback = _SwitchAt(30, remedy)
    whole = train(workload, config, tmp_path / "a", callbacks=[callback], progress=False)
    assert callback.seen == [("GradientNoise", 100)]
    rows = RunDir.open(tmp_path / "a").read_csv("metrics.csv")
    # from step 31 on the rate is Adam's, and 800 samples in batches of 100 make 8 steps an epoch
    assert float(rows[30]["lr"]) == pytest.approx(1e-3) and float(rows[29]["lr"]) == pytest.approx(0.1)
    assert [int(r["epoch"]) for r in rows[30:39]] == [2] * 8 + [3]

    class Crash(_SwitchAt):
        def on_step_end(self, loop, loss):
            if loop.step == 45:
                raise KeyboardInterrupt
            super().on_step_end(loop, loss)

    with pytest.raises(KeyboardInterrupt):
        train(workload, config, tmp_path / "b", callbacks=[Crash(30, remedy)], progress=False)
    resumed = train(workload, config, tmp_path / "b", callbacks=[_SwitchAt(30, remedy)], resume=True, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert strip(RunDir.open(tmp_path / "b").read_csv("metrics.csv")) == strip(rows)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_cli_trials_are_recorded_reported_and_applied(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["diagnose", "--workload", "unstable", "--steps", "200", "--max-stalls", "1", "--apply-remedy",
                 "--trial-steps", "30", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    run = RunDir.open(out)
    stall = run.read_json("stalls.json")[0]
    trials = stall["trials"]
    assert trials["status"] == "ran" and trials["steps"] == 30 and stall["remedy_applied"] == trials["winner"]
    assert all(len(t["losses"]) == len(t["steps"]) and t["steps"][0] == 0 and t["steps"][-1] == 30
               for t in trials["trials"])
    assert f"continued with: {trials['winner']}" in printed and "remedy trials at stall 1" in printed
    rows = run.read_csv("metrics.csv")
    # the run went on below the largest stable rate, and reached the optimum (0.284) it oscillated above
    assert float(rows[-1]["lr"]) < stall["evidence"]["rate"]["largest_stable_lr"] < 10.0
    assert float(rows[-1]["train_loss"]) < 0.2845 < float(rows[110]["train_loss"])
    html = (out / "report.html").read_text()
    assert "Remedy trials at stall 1" in html and (out / "stall-1-trials.png").exists()


def test_remedies_for_respects_the_menu_and_the_optimizer():
    model = nn.Linear(2, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    assert [r.name for r in remedies_for("saddle", {}, sgd, batch_size=None, n_data=10, trial_steps=20,
                                          can_escape=True)] == ["keep", "escape", "momentum", "noise", "adam"]
    # escape-fast needs the curvature and a plain rule: at a saddle of |eigenvalue| 0.5 under GD, the rate 1/0.5
    measured = {"rate": {"limit": 2.0, "scale": 1.0, "preconditioned": False},
                "curvature": {"min_eigenvalue": -0.5, "max_eigenvalue": 0.25}}
    fast = {r.name: r for r in remedies_for("saddle", measured, sgd, batch_size=None, n_data=10, trial_steps=20,
                                            can_escape=True)}["escape-fast"]
    assert fast.escape and 0.1 * fast.change.lr_factor == pytest.approx(2.0)
    preconditioned = {**measured, "rate": {**measured["rate"], "preconditioned": True}}
    assert "escape-fast" not in [r.name for r in remedies_for("saddle", preconditioned, sgd, batch_size=None,
                                                              n_data=10, trial_steps=20, can_escape=True)]
    # Adam has momentum and adaptive rates already; no escape direction without negative curvature
    assert [r.name for r in remedies_for("saddle", {}, adam, batch_size=None, n_data=10, trial_steps=20)] == \
        ["keep", "noise"]
    assert remedies_for("minimum", {"loss": {"stuck_high": False}}, sgd, batch_size=None, n_data=10, trial_steps=20) == []
    assert remedies_for("diverged", {}, sgd, batch_size=None, n_data=10, trial_steps=20) == []
    assert remedies_for("noise_floor", {}, sgd, batch_size=None, n_data=10, trial_steps=20)[-1].name == "decay"
    # lower-rate: x 0.3, or to half the limit where x 0.3 would leave the sharpness above it
    # (closed form: the sharpness is linear in the rate, so the factor is 0.5 / ratio)
    for ratio, factor in ((None, 0.3), (1.2, 0.3), (10.0, 0.05)):
        evidence = {"rate": {"ratio": ratio}}
        lower = {r.name: r for r in remedies_for("unstable", evidence, sgd, batch_size=None, n_data=10,
                                                 trial_steps=20)}["lower-rate"]
        assert lower.change.lr_factor == pytest.approx(factor)
    decay = Remedy("decay", "", Change(schedule="inverse-time:tau=5"))
    assert decay.rate_factor(0) == 1 and decay.rate_factor(20) == pytest.approx(1 / 5)
    warm = Remedy("warm-up", "", Change(schedule="warmup-rsqrt:warmup=10"))
    assert warm.rate_factor(0) == 0 and warm.rate_factor(5) == 0.5 and warm.rate_factor(10) == 1
    assert warm.rate_factor(40) == pytest.approx(0.5)  # sqrt(10 / 40)
    with pytest.raises(ValueError, match="steps"):
        run_trials(model, sgd, nn.functional.mse_loss, (torch.zeros(4, 2), torch.zeros(4, 2)), [decay], steps=0,
                   batch_size=None)


def test_readme_protocol_snippet_runs_as_written(capsys):
    """README's loop with a LoopState: the unstable preset's winner is requested, applied by the loop in
    one call and composed with the loop's StepLR; the closed form of the rate, the optimum by sklearn."""
    from helpers import readme_block
    from test_diagnose_verdicts import _optimum_loss

    namespace: dict = {}
    exec(compile(readme_block("In your own training loop, the same monitor"), "README.md", "exec"), namespace)
    exec(compile(readme_block("The monitor is a `descentlab.engine.Callback`"), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    request, how = namespace["monitor"].control.applied[0]
    assert request.name == "warm-up" and "composed" in how and f"step {request.step}: warm-up" in printed
    t = 300 - request.step  # the warm-up over 25 steps, then sqrt(25 / t); StepLR halved it at step 200
    assert namespace["loop"].scheduler.get_last_lr()[0] == pytest.approx(10 * math.sqrt(25 / t) * 0.5, rel=1e-12)
    workload = namespace["workload"]
    final = workload.loss_fn(namespace["model"](workload.X_train), workload.y_train).item()
    assert final == pytest.approx(_optimum_loss(workload), abs=1e-3)


def test_a_diverged_run_is_rolled_back_to_its_last_good_point_at_half_its_limit_and_resumes_bit_for_bit(tmp_path):
    # teacher-student at lr 5, full batch: past 2 / lambda_max from the first step, non-finite by step ~12
    workload = get_workload("teacher-student")
    X, y = workload.X_train, workload.y_train
    config = TrainConfig(optimizer="sgd", lr=5.0, batch_size=None, steps=80, checkpoint_every=20)

    def monitor():
        return StallMonitor(workload.loss_fn, (X, y), budget=None, remedies=True, apply_remedy=True)

    watched = monitor()
    whole = train(workload, config, tmp_path / "a", callbacks=[watched], progress=False)
    stall = watched.stalls[0]
    assert whole.status == "completed" and stall.verdict == "diverged" and stall.remedy_applied == "rollback"
    back = stall.evidence["rollback"]
    rows = RunDir.open(tmp_path / "a").read_csv("metrics.csv")
    after = next(i for i, r in enumerate(rows) if float(r["lr"]) < 5.0)
    assert int(rows[after]["step"]) == stall.step + 1 and back["to_step"] == 0  # the bad step was not taken
    # the weights put back are the initial ones: the next step's full-batch loss is the first step's
    assert float(rows[after]["train_loss"]) == pytest.approx(float(rows[0]["train_loss"]), rel=1e-6)
    # oracle: the exact Hessian of the monitor's sample at the initial weights (eigvalsh): the
    # sharpness lr * lambda_max against GD's limit 2, so the rate becomes 5 * 0.5 / (5 lambda / 2) = 1 / lambda
    torch.manual_seed(config.seed)
    start = workload.make_model().double()
    Xs, ys = watched.sample
    loss, theta = loss_of_flat(start, workload.loss_fn, Xs.double(), ys.double())
    lambda_max = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta)).max())
    assert 5.0 * lambda_max / 2 > RAISE_TO / LOWER_FACTOR  # so the factor is not the floor's 0.3
    assert float(rows[after]["lr"]) == pytest.approx(1.0 / lambda_max, rel=2e-3)
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])

    class Crash(StallMonitor):
        def on_step_end(self, loop, loss):
            if loop.step == 50:
                raise KeyboardInterrupt
            super().on_step_end(loop, loss)

    with pytest.raises(KeyboardInterrupt):
        train(workload, config, tmp_path / "b", callbacks=[Crash(workload.loss_fn, (X, y), budget=None, remedies=True,
                                                                 apply_remedy=True)], progress=False)
    resumed = train(workload, config, tmp_path / "b", callbacks=[monitor()], resume=True, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert strip(RunDir.open(tmp_path / "b").read_csv("metrics.csv")) == strip(rows)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["adam", "lookahead:adam", "momentum"])
def test_clear_state_makes_the_next_step_a_fresh_optimizers_first(name):
    # oracle: a new optimizer of the same kind, built at the same weights, takes the same first step
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    X, y = torch.randn(16, 3), torch.randn(16, 2)
    opt = make_optimizer(name, model.parameters(), lr=0.05)
    for _ in range(7):
        opt.zero_grad()
        nn.functional.mse_loss(model(X), y).backward()
        opt.step()
    twin = copy.deepcopy(model)
    fresh = make_optimizer(name, twin.parameters(), lr=0.05)
    clear_state(opt)
    for m, o in ((model, opt), (twin, fresh)):
        for _ in range(6):  # past lookahead's k = 5: its slow weights start from the weights now
            o.zero_grad()
            nn.functional.mse_loss(m(X), y).backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_a_users_loop_that_steps_through_a_non_finite_loss_is_rolled_back_at_the_next_check():
    # the README's loop, which never looks at the loss: SGD with momentum steps on through NaN
    # weights until the monitor's next check, which puts the last good point back
    workload = get_workload("teacher-student")
    X, y = workload.X_train, workload.y_train
    torch.manual_seed(0)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0, momentum=0.9)
    loop = LoopState(model, optimizer, batch_size=len(X), total_steps=100)
    monitor = StallMonitor(workload.loss_fn, (X, y), budget=None, remedies=True, apply_remedy=True)
    monitor.on_train_start(loop)
    with torch.no_grad():
        initial = float(workload.loss_fn(model(X), y))
    watched_steps(loop, monitor, lambda: workload.loss_fn(model(X), y), 100)
    names = [request.name for request, _ in monitor.control.applied]
    assert names and set(names) == {"rollback"} and not monitor.control.should_stop
    stall = monitor.stalls[0]
    assert stall.verdict == "diverged" and stall.evidence["rollback"]["to_step"] == 0
    with torch.no_grad():
        final = float(workload.loss_fn(model(X), y))
    assert math.isfinite(final) and final < 0.5 * initial


@pytest.mark.parametrize("momentum, limit", [(0.0, 2.0), (0.9, 2 * 1.9)], ids=["gd", "heavy-ball"])
def test_the_standardized_problems_rate_is_its_stability_limit_over_its_exact_lambda_max(momentum, limit):
    """Logistic regression on moons measured in units 1e5 apart: the rate test of the model fed the
    standardized inputs (weights as they are) gives the largest stable rate limit / λ_max of that
    problem's exact float64 Hessian (2/λ for GD, 2(1+β)/λ for heavy ball), and ``standardize`` at an
    ``unscaled_inputs`` stall sets the rate to half of it; the model is not changed."""
    from descentlab.critical.diagnosis import standardized_rate
    from descentlab.curvature import EmpiricalLoss
    from descentlab.engine.model_changes import InputStandardizer

    workload = get_workload("moons")
    X = workload.X_train * torch.tensor([1000.0, 0.01])
    y = workload.y_train
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=3e-6, momentum=momentum)
    inputs = (X.double().mean(dim=0).tolist(), X.double().std(dim=0).tolist())
    Xs = InputStandardizer(*inputs)(model, (X,))[0]
    rate = standardized_rate(EmpiricalLoss(model, nn.functional.cross_entropy, (Xs, y), eval_mode=True), optimizer)
    loss, theta = loss_of_flat(copy.deepcopy(model).double(), nn.functional.cross_entropy, Xs.double(), y)
    lambda_max = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta)).max())
    assert rate["largest_stable_lr"] == pytest.approx(limit / lambda_max, rel=0.02)  # Lanczos' tolerance
    menu = remedies_for("unscaled_inputs", {"standardized_rate": rate}, optimizer, batch_size=None, n_data=len(X),
                        trial_steps=10, inputs=inputs)
    standardize = next(r for r in menu if r.name == "standardize")
    assert 3e-6 * standardize.change.lr_factor == pytest.approx(RAISE_TO * limit / lambda_max, rel=0.02)
    assert all(torch.equal(a, b) for a, b in zip(before.values(), model.state_dict().values()))


def test_a_fresh_start_on_standardized_inputs_is_tried_at_the_rate_its_own_curvature_allows():
    """Logistic regression on the breast-cancer features as measured, full-batch GD at lr 1e-4 (the
    zoo's case): at its ``unscaled_inputs`` stall, ``standardize-reinit`` is tried at half the
    largest stable rate of the re-initialised model on the standardized sample, 2 / λ_max of that
    problem's exact float64 Hessian (it was tried at the raw scales' 1e-4, where a fresh start
    cannot move)."""
    from descentlab.engine.model_changes import InputStandardizer, reinitialize
    from descentlab.problems.zoo_data import dataset

    data = dataset("breast-cancer-raw")
    X, y = data.X, data.y
    torch.manual_seed(0)
    model = nn.Linear(30, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    loop = LoopState(model, optimizer, batch_size=len(X), n_train=len(X), total_steps=300)
    monitor = StallMonitor(nn.functional.cross_entropy, (X, y), optimizer=optimizer, budget=None, remedies=True)
    monitor.on_train_start(loop)
    watched_steps(loop, monitor, lambda: nn.functional.cross_entropy(model(X), y), 60,
                  until=lambda m: bool(m.stalls))
    stall = monitor.stalls[0]
    trial = {t["remedy"]: t for t in stall.trials["trials"]}["standardize-reinit"]
    change = trial["change"]["change"]
    Xs = InputStandardizer(*change["standardize"])(model, (monitor.sample[0],))[0]
    fresh = copy.deepcopy(model)
    reinitialize(fresh, change["reinit"], change["init"], seed=stall.trials["fork_step"])  # the monitor's seed 0
    loss, theta = loss_of_flat(fresh.double(), nn.functional.cross_entropy, Xs.double(), monitor.sample[1])
    lambda_max = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta)).max())
    assert stall.verdict == "unscaled_inputs"
    assert stall.evidence["standardized_rate"]["fresh"]["largest_stable_lr"] == pytest.approx(2 / lambda_max,
                                                                                              rel=0.02)
    assert 1e-4 * change["lr_factor"] == pytest.approx(RAISE_TO * 2 / lambda_max, rel=0.02)


def test_an_unscaled_run_standardized_at_the_rate_its_new_problem_allows_ends_with_its_counterpart():
    """The zoo's logistic regression on moons in units 1e5 apart (full-batch GD at lr 3e-6, which
    the raw scales allow and nothing more): with ``apply_remedy`` it is standardized at the rate
    the standardized problem allows (its weights kept or drawn again: a convex problem, one
    optimum either way) and ends within the zoo's 10 % of the same model trained on
    the moons as generated at lr 2 from step 0; standardized at its old rate it had stayed put."""
    from descentlab.experiments.zoo import REPAIR_TOLERANCE, run_case
    from descentlab.problems.zoo import get_case

    case = get_case("unscaled-mlp-moons-logistic")
    remedied = run_case(case, apply_remedy=True)
    healthy = run_case(case.fixed, monitor=False)
    assert remedied.stalls[0]["verdict"] == "unscaled_inputs"
    assert remedied.applied[0].split(" at ")[0] in ("standardize", "standardize-reinit")
    assert remedied.final_loss <= (1 + REPAIR_TOLERANCE) * healthy.final_loss


def test_a_flat_run_held_past_its_clamp_is_given_a_fresh_output_layer_and_ends_with_its_counterpart():
    """The zoo's tanh MLP whose output (bias 20) is clamped to [0, 9]: every prediction is past the
    bound, so ``torch.clamp`` passes no gradient to any weight (oracle: every gradient exactly 0 on
    all the data) and momentum, Adam and noise cannot move it. ``reinit-head`` re-initialises the
    output layer (the model's last ``nn.Linear``) at the scale PyTorch built it. The monitor's
    look at its second check (step 20) finds the gradient of the tracked samples exactly 0 and
    diagnoses at once, without waiting two windows for the plateau test: applied there, the run
    ends within the zoo's 10 % of the same model trained from PyTorch's initialisation from step 0."""
    from descentlab.experiments.zoo import REPAIR_TOLERANCE, run_case
    from descentlab.problems.zoo import get_case

    case = get_case("flat-mlp-digits")
    X, y = case.dataset().X, case.dataset().y
    torch.manual_seed(0)
    model = case.make_model()
    case.loss_fn(model(X), y).backward()
    assert all(float(p.grad.abs().max()) == 0 for p in model.parameters())
    last_linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    remedied = run_case(case, apply_remedy=True)
    healthy = run_case(case.fixed, monitor=False)
    stall = remedied.stalls[0]
    assert stall["verdict"] == "flat" and remedied.applied[0] == "reinit-head at step 20"
    assert stall["summary"].startswith("step 20: the gradient exactly 0 at loss")
    # the output layer was the one re-drawn: its bias left 20, where no gradient could have moved it
    assert float(dict(remedied.model.named_modules())[last_linear].bias.abs().max()) < 10
    assert remedied.final_loss <= (1 + REPAIR_TOLERANCE) * healthy.final_loss
    assert remedied.final_loss < 0.1 * remedied.initial_loss


def test_the_output_layer_is_the_last_weight_layer_that_holds_no_other():
    """A module with a parameter of its own (a transformer's position table) is listed after the
    layers inside it; the output layer is the last one that holds none."""
    model = nn.Linear(2, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    layers = {"layers": {"layers": [{"name": n} for n in ("net.blocks.0.qkv", "net.blocks.0.out", "net.head", "net")],
                         "units": []}}
    head = {r.name: r for r in remedies_for("flat", layers, sgd, batch_size=None, n_data=10,
                                            trial_steps=20)}["reinit-head"]
    assert head.change.reinit == ("net.head",) and head.change.init == "default"
    root = {"layers": {"layers": [{"name": "0"}, {"name": "2"}, {"name": ""}], "units": []}}
    assert {r.name: r for r in remedies_for("flat", root, sgd, batch_size=None, n_data=10,
                                            trial_steps=20)}["reinit-head"].change.reinit == ("2",)


def test_a_rollback_trial_starts_from_the_weights_it_is_given_with_the_rate_lowered_and_fresh_state():
    """Least squares, one step of SGD with momentum from a fork whose run is elsewhere: the
    rollback member starts from ``restore`` (not the run's weights), with its momentum forgotten
    and the rate × 0.3, so its loss after one step is the closed form
    L(θ₀ − 0.3 η ∇L(θ₀)), ∇L(θ) = Xᵀ(Xθ − y)/n for L = ½ mean (Xθ − y)²."""
    from descentlab.critical.remedies import rollback

    torch.manual_seed(0)
    X, y = torch.randn(32, 3, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    loss_fn = lambda out, target: 0.5 * ((out.reshape(-1) - target) ** 2).mean()  # noqa: E731
    for _ in range(3):  # a run with momentum built up, away from θ₀
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        optimizer.step()
    theta0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    remedy = rollback(None)
    assert remedy.restore and remedy.change.lr_factor == LOWER_FACTOR and remedy.change.fresh_state
    result = run_trials(model, optimizer, loss_fn, (X, y), [Remedy("keep", "carry on"), remedy], steps=1,
                        batch_size=None, restore=(theta0,))
    grad = X.T @ (X @ theta0.reshape(-1) - y) / len(X)
    after = theta0.reshape(-1) - LOWER_FACTOR * 0.2 * grad
    expected = float(0.5 * ((X @ after - y) ** 2).mean())
    assert result.get("rollback").losses[-1] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="restore"):
        run_trials(model, optimizer, loss_fn, (X, y), [remedy], steps=1, batch_size=None)


def test_a_run_whose_rate_threw_its_units_dead_is_rolled_back_by_its_trials_and_ends_with_its_counterpart():
    """The zoo's ReLU CNN under full-batch GD at lr 4: the first steps throw the loss to 1e11 and
    leave its units dead. Its loss is far above its best, so the trials try the rollback too: the
    weights of the lowest tracked loss put back, the rate × 0.3, and the run
    ends within the zoo's 10 % of the same network trained at lr 0.4 from step 0 (re-initialising
    the dead layer in place diverges again: the rest of the network was thrown far off)."""
    from descentlab.experiments.zoo import REPAIR_TOLERANCE, run_case
    from descentlab.problems.zoo import get_case

    case = get_case("dead-cnn-high-rate")
    remedied = run_case(case, apply_remedy=True)
    healthy = run_case(case.fixed, monitor=False)
    assert remedied.stalls[0]["verdict"] == "dead_units" and remedied.applied[0].startswith("rollback at")
    assert "rolled back to step" in remedied.stalls[0]["summary"] and "the rate x 0.3" in remedied.stalls[0]["summary"]
    assert remedied.final_loss <= (1 + REPAIR_TOLERANCE) * healthy.final_loss


def test_rollbacks_are_offered_only_where_the_run_lost_its_progress():
    """``rollback`` only with ``can_roll_back``; at an exploding gradient ``rollback-clip`` too,
    at the run's rate with the gradients clipped to their typical norm."""
    model = nn.Linear(2, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    evidence = {"gradient": {"typical": 2.5}, "layers": {"layers": [{"name": "w"}], "units": []}}
    plain = [r.name for r in remedies_for("exploding_gradient", evidence, sgd, batch_size=None, n_data=10,
                                          trial_steps=20)]
    assert "rollback" not in plain and "rollback-clip" not in plain
    menu = {r.name: r for r in remedies_for("exploding_gradient", evidence, sgd, batch_size=None, n_data=10,
                                            trial_steps=20, can_roll_back=True)}
    assert menu["rollback"].restore and menu["rollback"].change.lr_factor == LOWER_FACTOR
    clipped = menu["rollback-clip"]
    assert clipped.restore and clipped.change.clip == 2.5 and clipped.change.lr_factor == 1.0
    assert clipped.change.fresh_state and Remedy.from_dict(clipped.to_dict()) == clipped
    assert "rollback-clip" not in [r.name for r in remedies_for("unstable", evidence, sgd, batch_size=None,
                                                                n_data=10, trial_steps=20, can_roll_back=True)]


def test_trials_within_the_clocks_noise_of_the_best_are_ranked_by_their_decrease():
    """The zoo's three measurements of one stall (carrying on against Adam, decreases 0.0886 and
    0.0969 after 50 steps): 4 % apart per second, the larger decrease first; 44 % apart, the
    faster; a trial that diverged last, one that rose below every one that fell."""
    from descentlab.critical.trials import CLOCK_NOISE, Trial, ranked

    def trial(name, decrease, seconds):
        return Trial(Remedy(name, name), (0, 50), (1.0, 1.0 - decrease), decrease, seconds,
                     decrease / seconds if math.isfinite(decrease) else math.nan)

    assert CLOCK_NOISE == 0.1
    close = [trial("keep", 0.0886, 0.0259), trial("momentum", -0.521, 0.0312), trial("adam", 0.0969, 0.0294)]
    assert [t.remedy.name for t in ranked(close)] == ["adam", "keep", "momentum"]
    apart = [trial("keep", 0.0886, 0.0258), trial("adam", 0.0969, 0.0503), trial("warm-up", math.nan, 0.03)]
    assert [t.remedy.name for t in ranked(apart)] == ["keep", "adam", "warm-up"]
    # the band is measured from the best: 0.5 per second is within 10 % of 0.54 (and its decrease,
    # 0.6, is the larger: first), 0.48 is not
    band = [trial("a", 0.48, 1.0), trial("b", 0.54, 1.0), trial("c", 0.6, 1.2)]
    assert [t.remedy.name for t in ranked(band)] == ["c", "b", "a"]
    assert ranked([trial("rose", -0.1, 1.0)])[0].remedy.name == "rose"
