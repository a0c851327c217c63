"""The batch-size study: learning-rate rules, both protocols' arithmetic, sharpness vs the exact Hessian,
equal tuning budgets in updates, intervals over seeds and the findings they allow."""

import math

import pytest
import torch

from descentlab.cli import main
from descentlab.experiments.batch_size import BatchSizeSettings, run_batch_size, scaled_lr, train_to_loss
from descentlab.files import load_torch
from descentlab.problems.workloads import get_workload


def test_scaling_rules_are_the_stated_formulas():
    assert scaled_lr(0.1, 128, 32, "linear") == pytest.approx(0.4)
    assert scaled_lr(0.1, 8, 32, "sqrt") == pytest.approx(0.05)
    with pytest.raises(ValueError, match="rule"):
        scaled_lr(0.1, 8, 32, "cubic")


def test_settings_are_validated():
    with pytest.raises(ValueError, match="sizes"):
        BatchSizeSettings(workload="moons", sizes=(0,))
    with pytest.raises(ValueError, match="lr_rule"):
        BatchSizeSettings(workload="moons", sizes=(8,), lr_rule="cubic")
    with pytest.raises(ValueError, match="epochs"):
        BatchSizeSettings(workload="moons", sizes=(8,), epochs=0)
    with pytest.raises(ValueError, match="protocol"):
        BatchSizeSettings(workload="moons", sizes=(8,), protocol="same-time")
    with pytest.raises(ValueError, match="train_to"):
        BatchSizeSettings(workload="moons", sizes=(8,), train_to=0.0)
    with pytest.raises(ValueError, match="max_updates"):
        BatchSizeSettings(workload="moons", sizes=(8,), max_updates=0)


SETTINGS = BatchSizeSettings(workload="moons", sizes=(200, None), epochs=2, budget=2, seeds=2, records_per_epoch=2,
                             protocol="same-epochs", tune_updates=40)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return run_batch_size(SETTINGS, tmp_path_factory.mktemp("bs") / "run", workers=1)


def _exact_top_eigenvalue(workload, params, k):
    model = workload.make_model().double()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([params[name][k].double().reshape(-1) for name in names])
    X, y = workload.X_train.double(), workload.y_train

    def loss(vector):
        pieces, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            pieces[name] = vector[offset:offset + size].reshape(shape)
            offset += size
        return workload.loss_fn(torch.func.functional_call(model, pieces, (X,)), y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    return torch.linalg.eigvalsh(hessian)[-1].item()


def test_table_arithmetic_and_same_epochs_for_every_size(study):
    rows = {r["batch_size"]: r for r in study.read_csv("summary.csv")}
    assert set(rows) == {"200", "full"}
    # moons has 800 training points: 4 updates per epoch at 200, one at full batch
    assert int(rows["200"]["updates_per_epoch"]) == 4 and int(rows["full"]["updates_per_epoch"]) == 1
    for row in rows.values():
        assert float(row["seconds_per_epoch"]) == pytest.approx(
            float(row["seconds_per_update"]) * int(row["updates_per_epoch"]))
        if math.isfinite(float(row["updates_to_target"])):
            assert float(row["seconds_to_target"]) == pytest.approx(
                float(row["updates_to_target"]) * float(row["seconds_per_update"]))
        assert float(row["accuracy_gap"]) == pytest.approx(float(row["train_accuracy"]) - float(row["test_accuracy"]))
        assert float(row["lr_over_b"]) == pytest.approx(float(row["lr"]) / int(row["B"]))
    assert {r["batch_size"]: int(r["B"]) for r in rows.values()} == {"200": 200, "full": 800}
    curves = study.read_csv("curves.csv")
    for label in ("200", "full"):
        assert max(float(r["epoch"]) for r in curves if r["batch_size"] == label) == pytest.approx(2.0)
    trials = study.read_csv("trials.csv")
    protocol = study.read_json("protocol.json")
    for label in ("200", "full"):
        mine = [t for t in trials if t["batch_size"] == label]
        assert len(mine) == 2 + protocol["widenings"][label]
        # the same budget in updates for every candidate at every size (not in epochs)
        assert {int(t["updates"]) for t in mine} == {40}
        assert {float(t["epochs"]) for t in mine} == {40 / (4 if label == "200" else 1)}


def test_summary_means_and_intervals_are_those_of_the_seeds(study):
    from scipy import stats

    per_seed = study.read_csv("seeds.csv")
    assert len(per_seed) == 4 and {r["batch_size"] for r in per_seed} == {"200", "full"}
    for row in study.read_csv("summary.csv"):
        mine = [r for r in per_seed if r["batch_size"] == row["batch_size"]]
        for key in ("sharpness", "epsilon_sharpness", "loss_gap", "test_accuracy"):
            values = [float(r[key]) for r in mine]
            assert float(row[key]) == pytest.approx(sum(values) / 2)
            if len(set(values)) > 1:  # oracle: scipy's t interval of the mean
                low, high = stats.t.interval(0.95, 1, loc=sum(values) / 2, scale=stats.sem(values))
                assert (float(row[f"{key}_low"]), float(row[f"{key}_high"])) == pytest.approx((low, high))
        for r in mine:
            assert float(r["loss_gap"]) == pytest.approx(float(r["test_loss"]) - float(r["train_loss"]))
            assert float(r["epsilon_sharpness"]) > 0


def test_sharpness_is_the_top_eigenvalue_of_the_exact_hessian(study):
    workload = get_workload("moons")
    info = study.path / "runs" / "final-b200"
    params = load_torch(info / "final_params.pt")
    import json

    values = json.loads((info / "result.json").read_text())["sharpness"]
    for k in range(2):
        assert values[k] == pytest.approx(_exact_top_eigenvalue(workload, params, k), rel=1e-3)


def test_linear_rule_scales_the_reference_rate(tmp_path):
    settings = BatchSizeSettings(workload="moons", sizes=(100, 400), epochs=1, budget=2, seeds=1, lr_rule="linear",
                                 ref_size=100, records_per_epoch=1, protocol="same-epochs", tune_updates=20)
    run = run_batch_size(settings, tmp_path / "lin", workers=1)
    chosen = run.read_json("protocol.json")["chosen_lr"]
    assert chosen["400"] == pytest.approx(4 * chosen["100"])
    assert run.read_json("protocol.json")["tuned_sizes"] == ["100"]



def test_a_reference_size_outside_the_sizes_is_tuned_and_scaled_from(tmp_path):
    # --sizes 200,400 --ref-size 100 --lr-rule sqrt: the rate is tuned at 100 (not one of the
    # sizes) and scaled by sqrt(B / 100); it used to raise after the arguments had been accepted
    settings = BatchSizeSettings(workload="moons", sizes=(200, 400), epochs=1, budget=2, seeds=1, lr_rule="sqrt",
                                 ref_size=100, records_per_epoch=1, protocol="same-epochs", tune_updates=20)
    run = run_batch_size(settings, tmp_path / "sqrt", workers=1)
    protocol = run.read_json("protocol.json")
    assert protocol["tuned_sizes"] == ["100"]
    trials = run.read_csv("trials.csv")
    assert {t["batch_size"] for t in trials} == {"100"}
    tuned = min(trials, key=lambda t: float(t["final_val_loss"]))  # the rate with the lowest validation loss
    assert protocol["chosen_lr"]["200"] == pytest.approx(float(tuned["lr"]) * 2 ** 0.5)
    assert protocol["chosen_lr"]["400"] == pytest.approx(float(tuned["lr"]) * 2)


def test_batch_size_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["batch-size", "--workload", "moons", "--sizes", "400,full", "--epochs", "1", "--budget", "1",
                 "--seeds", "1", "--workers", "1", "--protocol", "same-epochs", "--tune-updates", "10",
                 "--out", str(out)]) == 0
    text = (out / "report.html").read_text()
    assert "Sharpness vs generalisation gap" in text and text.count("<img") == 6
    for name in ("time_vs_batch.png", "loss_by_updates.png", "loss_by_seconds.png", "sharpness_vs_batch.png",
                 "sharpness_vs_noise.png", "sharpness_vs_gap.png"):
        assert (out / name).exists()
    printed = capsys.readouterr().out
    assert "batch  full" in printed and "After the same number of epochs" in printed
    for bad in (["--sizes", "8,zero"], ["--train-to", "0"], ["--max-updates", "0"], ["--tune-updates", "0"],
                ["--epsilon", "0"], ["--protocol", "same-time"]):
        with pytest.raises(SystemExit) if bad[0] == "--protocol" else _exit_2(capsys):
            assert main(["batch-size", *bad, "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


class _exit_2:
    """The command's one-line error for bad input (exit status 2 is asserted by the caller)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        err = self.capsys.readouterr().err.strip()
        assert err.startswith("descentlab batch-size: error:") and "\n" not in err
        return False


def plain_sgd(data, make_model, lr, seed, updates, batch=100):
    """The oracle for train_to_loss: the seed's model trained by torch's SGD in a plain loop on
    batches of ``batch`` drawn by a seeded permutation per epoch."""
    torch.manual_seed(seed)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(data.X_train)
    per_epoch = n // batch
    for update in range(updates):
        if update % per_epoch == 0:
            order = torch.randperm(n, generator=generator)
        index = order[(update % per_epoch) * batch:(update % per_epoch + 1) * batch]
        optimizer.zero_grad()
        data.loss_fn(model(data.X_train[index]), data.y_train[index]).backward()
        optimizer.step()
    return model


def test_train_to_loss_stops_at_the_first_check_below_the_target():
    # oracle: the same seed's model, data order and updates written out as a plain torch loop
    workload = get_workload("moons", dtype=torch.float64)
    result = train_to_loss(workload, "sgd", 0.3, 100, seed=4, target=0.45, max_updates=400, checks_per_epoch=8)
    losses = [loss for _, _, loss in result.curve]
    assert result.reached and losses[-1] <= 0.45 < min(losses[:-1])
    assert result.updates == result.curve[-1][0] and result.epochs == pytest.approx(result.updates / 8)
    assert [u for u, _, _ in result.curve] == list(range(0, result.updates + 1, 1))  # 8 updates/epoch, 8 checks
    model = plain_sgd(workload, workload.make_model, lr=0.3, seed=4, updates=result.updates)
    for mine, theirs in zip(result.model.parameters(), model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)  # float64, same ops in the same order
    capped = train_to_loss(workload, "sgd", 0.3, 100, seed=4, target=1e-6, max_updates=5)
    assert not capped.reached and capped.updates == 5


def test_train_to_loss_checks_a_batch_norm_model_in_eval_mode():
    # oracle: the same seed's model and batches in a plain torch loop, its loss taken in eval mode
    # only at the end; a check in training mode would move the running statistics
    from types import SimpleNamespace

    moons = get_workload("moons", dtype=torch.float64)

    def make_model():
        return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, 2)).double()

    workload = SimpleNamespace(X_train=moons.X_train, y_train=moons.y_train, loss_fn=moons.loss_fn,
                               make_model=make_model)
    result = train_to_loss(workload, "sgd", 0.1, 100, seed=2, target=0.0, max_updates=24, checks_per_epoch=2)
    assert result.model.training and [u for u, _, _ in result.curve] == [0, 4, 8, 12, 16, 20, 24]
    model = plain_sgd(moons, make_model, lr=0.1, seed=2, updates=24)
    model.eval()
    with torch.no_grad():
        expected = float(moons.loss_fn(model(moons.X_train), moons.y_train))
    assert result.curve[-1][2] == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def same_loss(tmp_path_factory):
    settings = BatchSizeSettings(workload="moons", sizes=(200, None), epochs=2, budget=2, seeds=2, train_to=0.3,
                                 max_updates=3000, tune_updates=40)
    return run_batch_size(settings, tmp_path_factory.mktemp("bs") / "loss", workers=1)


def test_same_loss_protocol_measures_every_size_at_the_target(same_loss):
    import json

    rows = {r["batch_size"]: r for r in same_loss.read_csv("summary.csv")}
    assert same_loss.read_json("protocol.json")["protocol"] == "same-loss"
    workload = get_workload("moons")
    for label in ("200", "full"):
        row = rows[label]
        assert row["reached"] == "2/2" and float(row["train_loss"]) <= 0.3
        assert float(row["seconds_per_update"]) == pytest.approx(
            float(row["seconds_to_target"]) / float(row["updates_to_target"]))
        per_epoch = 4 if label == "200" else 1
        assert float(row["epochs_to_target"]) == pytest.approx(float(row["updates_to_target"]) / per_epoch)
        assert float(row["loss_gap"]) == pytest.approx(float(row["test_loss"]) - float(row["train_loss"]))
        point = same_loss.path / "runs" / f"final-b{label}"
        measured = json.loads((point / "result.json").read_text())["runs"]
        params = load_torch(point / "final_params.pt")
        for k, run in enumerate(measured):
            assert run["train_loss"] <= 0.3
            assert run["sharpness"] == pytest.approx(_exact_top_eigenvalue(workload, params, k), rel=1e-3)
            # the full training gradient's norm, by plain autograd on the stored weights
            model = workload.make_model()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(params[name][k])
            loss = workload.loss_fn(model(workload.X_train), workload.y_train)
            norm = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]).norm()
            assert run["grad_norm"] == pytest.approx(float(norm), rel=1e-4)
    curves = same_loss.read_csv("curves.csv")
    assert {r["batch_size"] for r in curves} == {"200", "full"}
    from descentlab.report.render import render

    html = render(same_loss).read_text()
    assert "At the same training loss (0.3, reached by 4 of 4 runs)" in html and "Keskar" in html


def _seed_rows(effect, noise, sizes=(1, 8, 64), seeds=5):
    """seeds.csv rows whose sharpness and gap rise with B by ``effect`` per size, plus seeded noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for index, size in enumerate(sizes):
        for seed in range(seeds):
            rows.append({"batch_size": str(size), "B": size, "lr_over_b": 0.1 / size, "reached": "True",
                         "sharpness": 1 + effect * index + noise * rng.standard_normal(),
                         "epsilon_sharpness": 0.1 + noise * rng.standard_normal(),
                         "loss_gap": 0.05 + effect * index / 10 + noise / 10 * rng.standard_normal()})
    return rows


def test_findings_state_a_trend_only_when_its_interval_excludes_zero():
    from scipy import stats

    from descentlab.report.batch_size_page import findings

    rows = _seed_rows(effect=1.0, noise=0.05)
    lines = findings(rows, "same-loss", 0.02)
    assert lines[0] == "At the same training loss (0.02, reached by 15 of 15 runs), over 3 batch sizes:"
    sharp = next(line for line in lines if line.startswith("sharpness"))
    assert "rises with the batch size" in sharp and "falls with lr/B" in sharp
    # the largest against the smallest batch: Welch's interval, as scipy computes it
    big = [r["sharpness"] for r in rows if r["B"] == 64]
    small = [r["sharpness"] for r in rows if r["B"] == 1]
    low, high = stats.ttest_ind(big, small, equal_var=False).confidence_interval(0.95)
    assert f"batch 64 against batch 1: higher by" in sharp and f"[{low:.3g}, {high:.3g}]" in sharp
    assert "epsilon-sharpness" in lines[2] and "no trend detectable at this size" in lines[2]
    assert lines[-1].endswith("is borne out here: larger batches ended sharper (detected); larger batches had a "
                              "larger gap (detected).")
    flat = findings(_seed_rows(effect=0.0, noise=0.05), "same-loss", 0.02)
    assert "neither shown nor refuted at this size" in flat[-1]
    opposite = findings(_seed_rows(effect=-1.0, noise=0.05), "same-loss", 0.02)
    assert "contradicted here" in opposite[-1]
