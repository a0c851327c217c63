"""The batch-size study: learning-rate rules, the table's arithmetic, sharpness vs the exact Hessian."""

import math

import pytest
import torch

from descentlab.cli import main
from descentlab.experiments.batch_size import BatchSizeSettings, run_batch_size, scaled_lr
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


SETTINGS = BatchSizeSettings(workload="moons", sizes=(200, None), epochs=2, budget=2, seeds=2, records_per_epoch=2)


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
        assert float(row["accuracy_gap"]) == pytest.approx(float(row["train_accuracy"]) - float(row["val_accuracy"]))
    curves = study.read_csv("curves.csv")
    for label in ("200", "full"):
        assert max(float(r["epoch"]) for r in curves if r["batch_size"] == label) == pytest.approx(2.0)
    trials = study.read_csv("trials.csv")
    assert [sum(t["batch_size"] == label for t in trials) for label in ("200", "full")] == [2, 2]


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
                                 ref_size=100, records_per_epoch=1)
    run = run_batch_size(settings, tmp_path / "lin", workers=1)
    chosen = run.read_json("protocol.json")["chosen_lr"]
    assert chosen["400"] == pytest.approx(4 * chosen["100"])
    assert run.read_json("protocol.json")["tuned_sizes"] == ["100"]
    with pytest.raises(ValueError, match="ref_size"):
        run_batch_size(BatchSizeSettings(workload="moons", sizes=(100,), lr_rule="sqrt", ref_size=32),
                       tmp_path / "bad", workers=1)


def test_batch_size_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["batch-size", "--workload", "moons", "--sizes", "400,full", "--epochs", "1", "--budget", "1",
                 "--seeds", "1", "--workers", "1", "--out", str(out)]) == 0
    text = (out / "report.html").read_text()
    assert "Sharpness vs generalisation gap" in text and text.count("<img") == 4
    for name in ("time_vs_batch.png", "loss_by_updates.png", "loss_by_seconds.png", "sharpness_vs_gap.png"):
        assert (out / name).exists()
    assert "batch   full" in capsys.readouterr().out
    assert main(["batch-size", "--sizes", "8,zero", "--out", str(tmp_path / "x")]) == 2
