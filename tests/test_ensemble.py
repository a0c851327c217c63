"""The stacked ensemble equals K separate runs (float64), checked against a plain torch.optim loop."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.experiments.ensemble import (
    Member,
    eval_steps,
    is_elementwise,
    train_members,
    train_separately,
    train_stacked,
    unstackable_reason,
)


def _workload(model_factory=None, n_train=40, n_val=20, classes=3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(123)
    X = torch.randn(n_train + n_val, 5, generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (n_train + n_val,), generator=gen)

    def make_model():
        if model_factory is not None:
            return model_factory()
        return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, classes)).to(dtype)

    return SimpleNamespace(make_model=make_model, loss_fn=F.cross_entropy, X_train=X[:n_train], y_train=y[:n_train],
                           X_val=X[n_train:], y_val=y[n_train:], task="classification")


# The oracle: torch.optim's own classes in the loop every tutorial writes, one model at a time.
ORACLE = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "nesterov": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    "adagrad": lambda p, lr: torch.optim.Adagrad(p, lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "adamw": lambda p, lr: torch.optim.AdamW(p, lr=lr),
    "radam": lambda p, lr: torch.optim.RAdam(p, lr=lr),
    "nadam": lambda p, lr: torch.optim.NAdam(p, lr=lr),
}


def _oracle_run(workload, optimizer, seed, lr, steps, batch_size):
    torch.manual_seed(seed)
    model = workload.make_model()
    opt = ORACLE[optimizer](model.parameters(), lr)
    n = workload.X_train.shape[0]
    gen = torch.Generator().manual_seed(seed)
    order, position = None, 0
    per_epoch = math.ceil(n / batch_size) if batch_size else 1
    for _ in range(steps):
        if batch_size is None:
            xb, yb = workload.X_train, workload.y_train
        else:
            if order is None or position == per_epoch:
                order, position = torch.randperm(n, generator=gen), 0
            index = order[position * batch_size:(position + 1) * batch_size]
            position += 1
            xb, yb = workload.X_train[index], workload.y_train[index]
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    with torch.no_grad():
        return model, float(F.cross_entropy(model(workload.X_train), workload.y_train))


MEMBERS = [Member(0, 0.05), Member(1, 0.05), Member(0, 0.2), Member(2, 0.2)]


@pytest.mark.parametrize("optimizer", sorted(ORACLE))
def test_stacked_ensemble_equals_separate_runs(optimizer):
    workload = _workload()
    # 40 examples in batches of 16: 3 batches per epoch (the last one short), 7 steps cross two epochs.
    result = train_stacked(workload, optimizer, MEMBERS, steps=7, batch_size=16, eval_every=3)
    assert result.stacked and result.steps == (0, 3, 6, 7)
    for k, member in enumerate(MEMBERS):
        model, loss = _oracle_run(workload, optimizer, member.seed, member.lr, 7, 16)
        for name, param in model.named_parameters():
            torch.testing.assert_close(result.params[name][k], param.detach(), rtol=1e-10, atol=1e-12)
        assert result.train_loss[k, -1].item() == pytest.approx(loss, rel=1e-10)


def test_separate_path_equals_the_oracle_and_the_stacked_path():
    workload = _workload()
    stacked = train_stacked(workload, "momentum", MEMBERS, steps=7, batch_size=16, eval_every=3)
    separate = train_separately(workload, "momentum", MEMBERS, steps=7, batch_size=16, eval_every=3)
    assert not separate.stacked
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        torch.testing.assert_close(getattr(stacked, key), getattr(separate, key), rtol=1e-10, atol=1e-12)
    model, loss = _oracle_run(workload, "momentum", 2, 0.2, 7, 16)
    assert separate.train_loss[3, -1].item() == pytest.approx(loss, rel=1e-10)


def test_full_batch_and_step_zero_is_the_initial_model():
    workload = _workload()
    result = train_stacked(workload, "adam", MEMBERS[:2], steps=4, batch_size=None, eval_every=2)
    for k, member in enumerate(MEMBERS[:2]):
        torch.manual_seed(member.seed)
        initial = workload.make_model()
        with torch.no_grad():
            start = float(F.cross_entropy(initial(workload.X_train), workload.y_train))
        assert result.train_loss[k, 0].item() == pytest.approx(start, rel=1e-12)
        _, loss = _oracle_run(workload, "adam", member.seed, member.lr, 4, None)
        assert result.train_loss[k, -1].item() == pytest.approx(loss, rel=1e-10)
    # Same seed -> same start, whatever the learning rate.
    again = train_stacked(workload, "sgd", [Member(1, 0.3)], steps=1, batch_size=None, eval_every=1)
    assert again.train_loss[0, 0] == result.train_loss[1, 0]


def test_accuracy_is_the_fraction_correct():
    workload = _workload()
    result = train_stacked(workload, "sgd", [Member(3, 0.1)], steps=2, batch_size=8, eval_every=2)
    model = result.load_member(0, workload.make_model())
    with torch.no_grad():
        expected = (model(workload.X_val).argmax(1) == workload.y_val).double().mean().item()
    assert result.val_accuracy[0, -1].item() == pytest.approx(expected)


def test_models_with_dropout_fall_back_to_separate_runs_and_say_why():
    def with_dropout():
        return nn.Sequential(nn.Linear(5, 7), nn.Dropout(0.1), nn.Linear(7, 3)).double()

    workload = _workload(with_dropout)
    assert "dropout" in unstackable_reason(workload.make_model())
    notes = []
    result = train_members(workload, "adam", MEMBERS[:2], steps=2, batch_size=16, eval_every=1, log=notes.append)
    assert not result.stacked and "dropout" in result.reason
    assert "one after another" in notes[0]
    with pytest.raises(ValueError, match="cannot be stacked"):
        train_members(workload, "adam", MEMBERS[:2], steps=2, batch_size=16, stack=True)


def test_elementwise_flag_follows_the_registry():
    assert is_elementwise("adam") and is_elementwise("momentum")
    notes = []
    result = train_members(_workload(), "adam", MEMBERS, steps=1, batch_size=16, log=notes.append)
    assert result.stacked and "stacked ensemble" in notes[0]


def test_not_elementwise_optimizers_train_separately(monkeypatch):
    from descentlab.optim import registry

    spec = registry.OPTIMIZERS["adam"]
    patched = dict(registry.OPTIMIZERS, adam=type(spec)(**{**spec.__dict__, "elementwise": False}))
    monkeypatch.setattr(registry, "OPTIMIZERS", patched)
    assert not is_elementwise("adam")
    result = train_members(_workload(), "adam", MEMBERS[:2], steps=1, batch_size=16)
    assert not result.stacked and "not element-wise" in result.reason


def test_bad_arguments_raise_value_errors_naming_them():
    workload = _workload()
    with pytest.raises(ValueError, match="lr"):
        train_stacked(workload, "sgd", [Member(0, -1.0)], steps=1, batch_size=4)
    with pytest.raises(ValueError, match="steps"):
        eval_steps(0, 1)
    with pytest.raises(ValueError, match="batch_size"):
        train_stacked(workload, "sgd", [Member(0, 0.1)], steps=1, batch_size=0)
    with pytest.raises(ValueError, match="members"):
        train_stacked(workload, "sgd", [], steps=1, batch_size=4)


@pytest.mark.parametrize("optimizer", ["lookahead:adam", "sgdw", "amsgrad", "adadelta"])
def test_descentlab_optimizers_stack_exactly_too(optimizer):
    workload = _workload()
    stacked = train_stacked(workload, optimizer, MEMBERS, steps=7, batch_size=16, eval_every=7)
    separate = train_separately(workload, optimizer, MEMBERS, steps=7, batch_size=16, eval_every=7)
    for name in stacked.params:
        torch.testing.assert_close(stacked.params[name], separate.params[name], rtol=1e-10, atol=1e-12)


def test_a_schedule_acts_on_every_rate_group_as_in_separate_runs():
    workload = _workload()
    schedule = "warmup-linear:warmup=3,total=7"
    stacked = train_stacked(workload, "adam", MEMBERS, steps=7, batch_size=16, eval_every=7, schedule=schedule)
    separate = train_separately(workload, "adam", MEMBERS, steps=7, batch_size=16, eval_every=7, schedule=schedule)
    plain = train_stacked(workload, "adam", MEMBERS, steps=7, batch_size=16, eval_every=7)
    for name in stacked.params:
        torch.testing.assert_close(stacked.params[name], separate.params[name], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(stacked.params["0.weight"], plain.params["0.weight"])


def test_swats_is_not_stacked():
    result = train_members(_workload(), "swats", MEMBERS[:2], steps=2, batch_size=16)
    assert not result.stacked and "not element-wise" in result.reason


def test_a_loss_that_is_not_a_per_example_mean_still_stacks_exactly():
    # The fast path computes the loss once on all K*B outputs, valid for a mean of per-example
    # losses; a summed loss fails its first-batch check and takes the vmapped loss instead.
    workload = _workload()
    workload.loss_fn = lambda out, y: F.cross_entropy(out, y, reduction="sum")
    stacked = train_stacked(workload, "sgd", MEMBERS, steps=4, batch_size=16, eval_every=4)
    separate = train_separately(workload, "sgd", MEMBERS, steps=4, batch_size=16, eval_every=4)
    for name in stacked.params:
        torch.testing.assert_close(stacked.params[name], separate.params[name], rtol=1e-10, atol=1e-12)
