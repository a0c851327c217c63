"""The monitor in the loops practitioners run: a DataLoader it must not disturb, batches as dicts or
token tensors, a loss that runs the model itself (a language model, a model returning its loss)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from descentlab.critical import StallMonitor
from descentlab.curvature import EmpiricalLoss, ModelLoss, token_cross_entropy
from descentlab.engine import LoopState

V, T = 7, 8


class CharLM(nn.Module):
    """A tiny next-token model: embedding, tanh, a linear head (enough to have a loss that is not
    ``loss_fn(model(x), y)``)."""

    def __init__(self):
        super().__init__()
        self.embed, self.hidden, self.head = nn.Embedding(V, 16), nn.Linear(16, 16), nn.Linear(16, V)

    def forward(self, tokens):
        return self.head(torch.tanh(self.hidden(self.embed(tokens))))


def _tokens(n=256, seed=0):
    """Sequences of a periodic language (each token followed by the next one mod V) with noise."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, V, (n, 1), generator=g)
    seq = (start + torch.arange(T + 1)) % V
    flip = torch.rand(seq.shape, generator=g) < 0.1
    return torch.where(flip, torch.randint(0, V, seq.shape, generator=g), seq)


#: A loader of a TensorDataset gives each batch as a list ``[tokens]``: the loss takes it as the loader gives it.
LM_LOSS = ModelLoss(lambda model, batch: token_cross_entropy(model(batch[0][:, :-1]), batch[0][:, 1:]))


def _train(model, loader, steps, monitor=None, lr=0.5):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loop = LoopState(model, optimizer, batch_size=loader.batch_size, n_train=len(loader.dataset), total_steps=steps)
    if monitor is not None:
        monitor.on_train_start(loop)
    seen, step = [], 0
    while step < steps:
        for batch in loader:
            step += 1
            seen.append(batch[0].clone())
            loop.optimizer.zero_grad()
            loss = LM_LOSS(model, batch)
            loss.backward()
            loop.optimizer.step()
            loop.step = step
            if monitor is not None:
                monitor.on_step_end(loop, loss.detach())
                if monitor.control.pending:
                    monitor.control.apply(loop)
            if step == steps:
                break
    return seen


def test_the_monitor_reads_a_shuffling_loader_without_changing_the_runs_batches_or_weights():
    data = TensorDataset(_tokens())
    runs = []
    for monitored in (False, True):
        torch.manual_seed(3)
        model = CharLM()
        loader = DataLoader(data, batch_size=32, shuffle=True)
        monitor = StallMonitor(LM_LOSS, DataLoader(data, batch_size=32, shuffle=True), window=10,
                               sample_size=64) if monitored else None
        seen = _train(model, loader, 40, monitor)
        runs.append((seen, [p.detach().clone() for p in model.parameters()]))
    (plain_seen, plain_params), (watched_seen, watched_params) = runs
    assert all(torch.equal(a, b) for a, b in zip(plain_seen, watched_seen))  # the same batches in the same order
    assert all(torch.equal(a, b) for a, b in zip(plain_params, watched_params))  # the monitor only measured


def test_a_language_model_loss_through_the_data_layer_equals_the_hand_written_one():
    torch.manual_seed(0)
    model = CharLM().double()
    tokens = _tokens(60)
    hand = F.cross_entropy(model(tokens[:, :-1]).reshape(-1, V), tokens[:, 1:].reshape(-1))
    loader = DataLoader(TensorDataset(tokens), batch_size=25)  # 25 + 25 + 10: the mean is weighted by size
    loss = EmpiricalLoss(model, ModelLoss(lambda m, b: token_cross_entropy(m(b[0][:, :-1]), b[0][:, 1:])), loader)
    assert loss.reduction == "mean" and float(loss.loss()) == pytest.approx(float(hand), rel=1e-12)
    grad = torch.autograd.grad(hand, list(model.parameters()))
    torch.testing.assert_close(loss.loss_and_gradient()[1], torch.cat([g.reshape(-1) for g in grad]), rtol=0,
                               atol=1e-12)


class ReturnsItsLoss(nn.Module):
    """A Hugging Face style model: ``model(input_ids=..., labels=...)`` returns an object with ``.loss``."""

    def __init__(self):
        super().__init__()
        self.lm = CharLM()

    def forward(self, input_ids, labels):
        logits = self.lm(input_ids)
        return type("Output", (), {"loss": token_cross_entropy(logits, labels), "logits": logits})()


def test_dict_batches_and_a_model_that_returns_its_loss_get_a_diagnosis_with_trials_on_the_sample():
    """A loop on dict batches from a loader (so the trials train on the monitor's sample), a start
    near zero (a saddle-like plateau): the plateau is found and diagnosed, the trials run, the
    model's buffers and flags are untouched."""
    tokens = _tokens(128)
    batches = [{"input_ids": t[:, :-1], "labels": t[:, 1:]} for t in tokens.split(32)]
    torch.manual_seed(0)
    model = ReturnsItsLoss()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-3)
    loss = ModelLoss(lambda m, batch: m(**batch).loss)
    with pytest.warns(UserWarning, match="one-shot iterator"):  # the loop trains on its own list, not on this
        monitor = StallMonitor(loss, iter(batches * 100), window=10, sample_size=64, budget=None, remedies=True,
                               trial_steps=10, escape=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loop = LoopState(model, optimizer, batch_size=32, n_train=128)
    monitor.on_train_start(loop)
    for step in range(1, 81):
        batch = batches[(step - 1) % 4]
        optimizer.zero_grad()
        value = model(**batch).loss
        value.backward()
        optimizer.step()
        loop.step = step
        monitor.on_step_end(loop, value.detach())
        if any(s.status == "diagnosed" for s in monitor.stalls):
            break
    stall = next(s for s in monitor.stalls if s.status == "diagnosed")
    assert stall.verdict in ("saddle", "flat", "noise_floor", "slow", "minimum")
    assert stall.trials["status"] == "ran" and "sample" in stall.trials["data"]
    assert stall.evidence["curvature"]["samples"] == 64


def test_under_bfloat16_autocast_with_accumulation_the_monitor_measures_in_float32_on_optimizer_steps():
    """A loop in bfloat16 autocast accumulating 4 micro-batches per optimizer step, calling the monitor
    inside autocast: every tracked loss is the float32 loss of the sample at that step's parameters
    (the oracle: a plain float32 forward), one check per `every` optimizer steps, and the evidence
    says the precision."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data[:512] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:512])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    monitor = StallMonitor(F.cross_entropy, (X, y), window=10, sample_size=None, budget=None)
    loop = LoopState(model, optimizer, batch_size=128, n_train=512)
    monitor.on_train_start(loop)
    expected = {}
    g = torch.Generator().manual_seed(0)
    for step in range(1, 31):
        optimizer.zero_grad()
        for _ in range(4):
            index = torch.randint(0, 512, (32,), generator=g)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(X[index]), y[index]) / 4
            loss.backward()
        optimizer.step()
        loop.step = step
        with torch.no_grad():
            expected[step] = float(F.cross_entropy(model(X), y))  # float32, no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            monitor.on_step_end(loop, loss.detach() * 4)
    tracked = dict(monitor.tracked)
    # at checks every 10 // 5 optimizer steps, not micro-steps (while the loss falls fast, once a window)
    assert {10, 20, 30} <= set(tracked) <= set([0] + list(range(2, 31, 2)))
    for step, value in tracked.items():
        if step:
            assert value == pytest.approx(expected[step], rel=1e-6)
    stall = monitor.diagnose(model)
    assert stall.evidence["data"]["precision"] == "float32 (autocast off)"


def test_readme_language_model_snippet_runs_as_written(caplog):
    from helpers import readme_block

    code = readme_block("The same monitor watches the loops practitioners run.")
    namespace: dict = {}
    with caplog.at_level("WARNING", logger="descentlab.monitor"):
        exec(compile(code, "README.md", "exec"), namespace)
    stall = namespace["monitor"].stalls[0]
    # the schedule's closed form: min(1, (t + 1) / 20) * max(0, 1 - t / 100) is 0 from t = 100 on
    assert stall.verdict == "no_learning_rate" and stall.evidence["rate"]["zero_since"] == 100
    assert "no_learning_rate" in caplog.text


class _Named(torch.utils.data.Dataset):
    """Items as a Hugging Face dataset gives them: tensors beside a string per sample."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return {"pixels": self.X[i], "labels": self.y[i], "name": f"sample-{i}"}


def test_dict_batches_that_hold_strings_beside_their_tensors_are_sampled_and_read():
    """``default_collate`` gives a string field as a list of strings: the monitor's sample used to
    fail at construction (``torch.cat`` of strings). Now the strings are taken along with their
    samples. Oracle: the loss computed here on the tensors the sample holds, and its names."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(200, 5, generator=g), torch.randint(0, 3, (200,), generator=g)
    loader = DataLoader(_Named(X, y), batch_size=32, shuffle=True)  # its first batches are read
    loss = ModelLoss(lambda model, batch: F.cross_entropy(model(batch["pixels"]), batch["labels"]))
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    monitor = StallMonitor(loss, loader, sample_size=64)
    sample = monitor.sample
    index = [int(name.split("-")[1]) for name in sample["name"]]
    assert len(index) == 64 and torch.equal(sample["pixels"], X[index]) and torch.equal(sample["labels"], y[index])
    for step in range(1, 11):
        monitor.update(step, 1.0, model)
    with torch.no_grad():
        assert monitor.tracked[-1][1] == pytest.approx(float(F.cross_entropy(model(X[index]), y[index])), rel=1e-6)
