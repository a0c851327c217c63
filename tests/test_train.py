"""The training loop: seeded, resumable bit-for-bit, stops on a non-finite loss, validates first."""

import math

import pytest
import torch

from descentlab import files
from descentlab.engine import Callback
from descentlab.errors import UserInputError
from descentlab.experiments.rundir import RunDir
from descentlab.experiments.train import COLUMNS, TrainConfig, train
from descentlab.problems.workloads import get_workload


@pytest.fixture(scope="module")
def moons():
    return get_workload("moons")


def _metrics(path):
    rows = RunDir.open(path).read_csv("metrics.csv")
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_one_step_is_the_textbook_sgd_step_and_metrics_are_complete(tmp_path, moons):
    config = TrainConfig(optimizer="sgd", lr=0.1, batch_size=None, steps=1, seed=3)
    result = train(moons, config, tmp_path / "run", progress=False)
    # oracle: the same step by hand
    torch.manual_seed(3)
    model = moons.make_model()
    loss = moons.loss_fn(model(moons.X_train), moons.y_train)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.cat([(p - 0.1 * g).detach().flatten() for p, g in zip(model.parameters(), grads)])
    assert torch.allclose(_params(result.model), expected, atol=1e-7)
    rows = RunDir.open(result.path).read_csv("metrics.csv")
    assert tuple(rows[0].keys()) == COLUMNS and len(rows) == 1
    assert float(rows[0]["train_loss"]) == pytest.approx(loss.item(), rel=1e-6)
    assert float(rows[0]["grad_norm"]) == pytest.approx(torch.cat([g.flatten() for g in grads]).norm().item(), rel=1e-5)
    assert float(rows[0]["lr"]) == 0.1 and rows[0]["val_loss"] != "" and rows[0]["val_accuracy"] != ""
    assert RunDir.open(result.path).config["train"]["optimizer"] == "sgd"
    assert result.status == "completed" and result.step == 1


def test_epochs_mean_passes_and_without_shuffling_the_batches_are_in_order(tmp_path, moons):
    seen = []
    config = TrainConfig(batch_size=300, epochs=2, shuffle=False, seed=0)
    # 800 samples / 300 per batch -> 3 batches per epoch (300, 300, 200)
    result = train(moons, config, tmp_path / "run", callbacks=[lambda s, loss, m: seen.append(s)], progress=False)
    assert result.total_steps == 6 and seen == [1, 2, 3, 4, 5, 6]
    epochs = [int(r["epoch"]) for r in RunDir.open(result.path).read_csv("metrics.csv")]
    assert epochs == [0, 0, 0, 1, 1, 1]


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path, moons):
    config = TrainConfig(optimizer="adam", batch_size=64, steps=30, seed=7)
    a = train(moons, config, tmp_path / "a", progress=False)
    b = train(moons, config, tmp_path / "b", progress=False)
    c = train(moons, TrainConfig(optimizer="adam", batch_size=64, steps=30, seed=8), tmp_path / "c", progress=False)
    assert _metrics(a.path) == _metrics(b.path)
    assert torch.equal(_params(a.model), _params(b.model))
    assert _metrics(a.path) != _metrics(c.path)


class _Crash(Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_step_end(self, loop, loss):
        if loop.step == self.at:
            raise RuntimeError("power cut")


class _Counter(Callback):
    """A stateful callback: its state must travel with the checkpoint."""

    def __init__(self):
        super().__init__()
        self.total = 0.0

    def on_step_end(self, loop, loss):
        self.total += float(loss)

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state):
        self.total = state["total"]


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_resume_equals_an_uninterrupted_run(tmp_path, moons, optimizer):
    config = TrainConfig(optimizer=optimizer, batch_size=100, steps=40, seed=1, checkpoint_every=10, eval_every=5)
    whole_counter = _Counter()
    whole = train(moons, config, tmp_path / "whole", callbacks=[whole_counter], progress=False)

    counter = _Counter()
    with pytest.raises(RuntimeError, match="power cut"):
        train(moons, config, tmp_path / "cut", callbacks=[counter, _Crash(27)], progress=False)
    # the crash lands mid-epoch (8 batches per epoch) and between checkpoints: steps 21..27 are redone
    assert files.load_torch(tmp_path / "cut" / "checkpoint.pt")["step"] == 20
    torch.manual_seed(12345)  # whatever the global RNG is now, the checkpoint restores it
    counter = _Counter()
    resumed = train(moons, config, tmp_path / "cut", callbacks=[counter, _Crash(-1)], resume=True, progress=False)
    assert resumed.step == 40
    assert _metrics(whole.path) == _metrics(resumed.path)
    assert torch.equal(_params(whole.model), _params(resumed.model))
    assert counter.total == whole_counter.total


def test_resume_refuses_a_different_config(tmp_path, moons):
    train(moons, TrainConfig(steps=3, seed=0), tmp_path / "run", progress=False)
    with pytest.raises(UserInputError, match="different configuration"):
        train(moons, TrainConfig(steps=3, seed=1), tmp_path / "run", resume=True, progress=False)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    workload = get_workload("teacher-student")
    config = TrainConfig(optimizer="sgd", lr=50.0, batch_size=None, steps=200, checkpoint_every=2, seed=0)
    result = train(workload, config, tmp_path / "run", progress=False)
    assert result.status == "non_finite" and 1 < result.step < 200
    assert f"step {result.step}" in result.message
    checkpoint = files.load_torch(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["step"] < result.step
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    rows = RunDir.open(result.path).read_csv("metrics.csv")
    assert int(rows[-1]["step"]) == result.step - 1 and all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert RunDir.open(result.path).read_json("status.json")["status"] == "non_finite"


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": -1.0, "steps": 1}, "lr"),
    ({"batch_size": 0, "steps": 1}, "batch_size"),
    ({"steps": 0}, "steps"),
    ({"steps": 2, "epochs": 1}, "exactly one"),
    ({"steps": 2, "seed": -3}, "seed"),
])
def test_bad_config_names_the_argument(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig(**kwargs)


def test_bad_optimizer_leaves_nothing_behind(tmp_path, moons):
    with pytest.raises(UserInputError, match="unknown optimizer 'adamm'"):
        train(moons, TrainConfig(optimizer="adamm", steps=2), tmp_path / "run", progress=False)
    with pytest.raises(UserInputError, match="bogus"):
        train(moons, TrainConfig(optimizer="sgd", steps=2, optimizer_options={"bogus": 1}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_with_a_schedule_continues_the_rate(tmp_path, moons):
    config = TrainConfig(optimizer="momentum", lr=0.1, schedule="warmup-cosine:warmup=5,total=30", batch_size=100,
                         steps=30, seed=2, checkpoint_every=10)
    whole = train(moons, config, tmp_path / "whole", progress=False)
    with pytest.raises(RuntimeError):
        train(moons, config, tmp_path / "cut", callbacks=[_Crash(15)], progress=False)
    resumed = train(moons, config, tmp_path / "cut", resume=True, progress=False)
    assert _metrics(whole.path) == _metrics(resumed.path)
    lrs = [float(r["lr"]) for r in RunDir.open(whole.path).read_csv("metrics.csv")]
    # the closed form: t / w during the warm-up (t = 0, 1, ...), then the cosine from 1 down to 0 at t = 30
    assert lrs[:5] == pytest.approx([0.1 * t / 5 for t in range(5)])
    assert lrs[5:] == pytest.approx([0.1 * (1 + math.cos(math.pi * (t - 5) / 25)) / 2 for t in range(5, 30)])


def test_bad_schedule_leaves_nothing_behind(tmp_path, moons):
    with pytest.raises(UserInputError, match="unknown schedule"):
        train(moons, TrainConfig(steps=2, schedule="bogus"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
