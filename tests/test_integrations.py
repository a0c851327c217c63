"""The stall monitor inside real trainers: Lightning's ``Trainer`` and Hugging Face's ``Trainer``,
each on a tiny model of a few hundred parameters (the digits, full batch, CPU): the stall is found
on optimizer steps, its verdict reaches the trainer's loggers, a requested remedy is made with the
trainer's own controls (checked against the rate's closed form), a diverging run is stopped, and a
diagnosis leaves the weights as an unmonitored run of the same seed has them."""

import copy
import csv
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from descentlab.critical import StallMonitor
from descentlab.critical.remedies import LOWER_FACTOR
from descentlab.curvature import ModelLoss
from descentlab.engine import Change, RemedyLR, Request

# Lightning's own notices on a one-batch epoch and its pytree deprecation are not the adapters'
pytestmark = [pytest.mark.filterwarnings("ignore:The number of training batches"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec")]

N = 512  # digits rows: a full batch per optimizer step keeps the saddle free of mini-batch noise
LR0, END = 0.5, 60  # the ending schedule: LR0 falling linearly to 0 at step END


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data[:N] / 16.0, dtype=torch.float32), torch.tensor(digits.target[:N])


def _tanh_mlp(hidden=4, scale=1e-3):
    """64-hidden-10 tanh MLP (310 parameters at 4 hidden units); ``scale`` 1e-3 starts it next to
    the saddle at the origin, as README's own-loop example."""
    net = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def _exact_hessian(net, loss_fn, data):
    """The dense Hessian of ``loss_fn(net(X), y)`` in float64 over all of ``net``'s parameters."""
    X, y = data
    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().double().reshape(-1) for p in net.parameters()])
    net64 = copy.deepcopy(net).double()

    def loss(theta):
        chunks = torch.split(theta, [s.numel() for s in shapes])
        params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes)}
        return loss_fn(torch.func.functional_call(net64, params, (X.double(),)), y)

    return torch.autograd.functional.hessian(loss, flat)


def _ending_schedule(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: max(0.0, 1.0 - t / END))


class _Scripted(StallMonitor):
    """A monitor that also requests ``change`` at step ``at``: the adapters' controls tested on a
    request whose step and change are known in advance."""

    def __init__(self, *args, at, change, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.change = at, change

    def on_step_end(self, loop, loss):
        super().on_step_end(loop, loss)
        if loop.step == self.at:
            self.control.request(Request(loop.step, "scripted", self.change))


# ---------------------------------------------------------------------------------------- Lightning
def _pl():
    return pytest.importorskip("lightning.pytorch")


def _module(net, loss_fn=F.cross_entropy, lr=0.1, schedule=None, interval="step"):
    """``net`` as a LightningModule trained by SGD at ``lr`` (``schedule(optimizer)``: its scheduler
    at ``interval``); it records the loss of every micro-batch."""
    pl = _pl()

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.losses = net, []

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = loss_fn(self(x), y)
            self.losses.append(float(loss.detach()))
            return loss

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=lr)
            if schedule is None:
                return optimizer
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule(optimizer), "interval": interval}}

    return Module()


def _fit(module, data, steps, tmp_path, callbacks=(), loggers=False, batch_size=N, accumulate=1):
    pl = _pl()
    trainer = pl.Trainer(max_steps=steps, callbacks=list(callbacks), logger=loggers, accelerator="cpu", devices=1,
                         accumulate_grad_batches=accumulate, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, log_every_n_steps=10_000)
    trainer.fit(module, DataLoader(TensorDataset(*data), batch_size=batch_size))
    return trainer


def test_lightning_finds_the_saddle_on_optimizer_steps_logs_its_verdict_and_leaves_the_weights(tmp_path):
    pl = _pl()
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from descentlab.integrations.lightning import StallMonitorCallback

    data = _digits()
    torch.manual_seed(0)
    watched = _module(_tanh_mlp())
    callback = StallMonitorCallback(loss_fn=F.cross_entropy, data=data, escape=False, budget=None)
    loggers = [CSVLogger(tmp_path / "csv"), TensorBoardLogger(tmp_path / "tb")]
    # two micro-batches of 256 per optimizer step: the same full-batch gradient
    trainer = _fit(watched, data, 150, tmp_path, [callback], loggers, batch_size=N // 2, accumulate=2)
    torch.manual_seed(0)
    alone = _module(_tanh_mlp())
    _fit(alone, data, 150, tmp_path, batch_size=N // 2, accumulate=2)

    monitor = callback.monitor
    assert isinstance(callback, pl.Callback) and trainer.global_step == 150
    assert [s for s, _ in monitor.tracked] == list(range(0, 151, 10))  # checks on optimizer steps, not micro-batches
    assert callback.loop.batch_size == N and callback.loop.total_steps == 150
    [stall] = monitor.stalls
    assert stall.verdict == "saddle" and stall.min_eigenvalue < 0 and not stall.escaped
    # the point it names is a saddle: the exact Hessian of the loss (all N rows: the monitor's whole
    # sample) at the weights an unmonitored run has at that step, by eigh in float64
    torch.manual_seed(0)
    at_stall = _module(_tanh_mlp())
    _fit(at_stall, data, stall.step, tmp_path, batch_size=N // 2, accumulate=2)
    exact = torch.linalg.eigvalsh(_exact_hessian(at_stall.net, F.cross_entropy, data))
    assert stall.min_eigenvalue == pytest.approx(exact[0].item(), rel=1e-2) and exact[0] < 0 < exact[-1]
    # the verdict through both loggers: the numbers as metrics at the stall's step, the line as text
    with open(Path(loggers[0].log_dir) / "metrics.csv") as f:
        [row] = [r for r in csv.DictReader(f) if r["stall/verdict/saddle"]]
    assert float(row["stall/verdict/saddle"]) == 1.0 and int(row["step"]) == stall.step
    assert float(row["stall/min_eigenvalue"]) == pytest.approx(stall.min_eigenvalue, rel=1e-6)
    events = EventAccumulator(loggers[1].log_dir, size_guidance={"tensors": 0})
    events.Reload()
    [text] = events.Tensors("stall/verdict/text_summary")
    assert text.step == stall.step and text.tensor_proto.string_val[0].decode() == stall.summary()
    assert [e.step for e in events.Scalars("stall/verdict/saddle")] == [stall.step]
    # the diagnosis left the run as it was: bit-identical weights, the same losses
    assert watched.losses == alone.losses
    for (name, a), b in zip(watched.state_dict().items(), alone.state_dict().values()):
        assert torch.equal(a, b), name


def test_lightning_checkpoints_carry_the_monitor_so_a_resumed_fit_finds_what_an_uninterrupted_one_did(tmp_path):
    from descentlab.integrations.lightning import StallMonitorCallback

    data = _digits()
    torch.manual_seed(0)
    whole = StallMonitorCallback(loss_fn=F.cross_entropy, data=data, escape=False, budget=None)
    _fit(_module(_tanh_mlp()), data, 150, tmp_path, [whole])

    torch.manual_seed(0)
    first = StallMonitorCallback(loss_fn=F.cross_entropy, data=data, escape=False, budget=None)
    # stopped at step 10, with two tracked losses of the three the first look reads (step 20)
    trainer = _fit(_module(_tanh_mlp()), data, 10, tmp_path, [first])
    assert first.monitor.stalls == []
    trainer.save_checkpoint(tmp_path / "at10.ckpt")
    resumed = StallMonitorCallback(loss_fn=F.cross_entropy, data=data, escape=False, budget=None)
    pl = _pl()
    trainer = pl.Trainer(max_steps=150, callbacks=[resumed], logger=False, accelerator="cpu", devices=1,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(_module(_tanh_mlp(scale=0.0)), DataLoader(TensorDataset(*data), batch_size=N),
                ckpt_path=tmp_path / "at10.ckpt")

    assert resumed.monitor.tracked == whole.monitor.tracked
    assert [s.to_dict() for s in resumed.monitor.stalls] == [
        {**s.to_dict(), "seconds": r.seconds} for s, r in zip(whole.monitor.stalls, resumed.monitor.stalls)]
    assert [s.verdict for s in resumed.monitor.stalls] == ["saddle"]


def test_lightning_restores_an_ended_schedule_through_its_scheduler_slot(tmp_path, caplog):
    from descentlab.integrations.lightning import StallMonitorCallback

    data = _digits()
    torch.manual_seed(0)
    module = _module(_tanh_mlp(hidden=8, scale=1.0), lr=LR0, schedule=_ending_schedule)
    callback = StallMonitorCallback(loss_fn=F.cross_entropy, data=data, remedies=True, apply_remedy=True, budget=None)
    with caplog.at_level(logging.WARNING, logger="descentlab.monitor"):
        trainer = _fit(module, data, 300, tmp_path, [callback])

    stall = callback.monitor.stalls[0]
    assert stall.verdict == "no_learning_rate" and stall.remedy_applied == "peak-rate"
    [(request, how)] = callback.monitor.control.applied
    assert request.change.lr == LR0 and "replaced" in how
    # the trainer now steps the remedy's rate: the run's peak, a constant, in place of the ended schedule
    [config] = trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, RemedyLR) and config.interval == "step"
    assert config.scheduler.optimizer is trainer.optimizers[0]
    assert trainer.optimizers[0].param_groups[0]["lr"] == LR0
    # and the run moved again from the plateau the zero rate had frozen it on
    frozen = module.losses[END + 1:request.step]
    assert max(frozen) == min(frozen) and module.losses[-1] < frozen[-1] - 0.1
    assert "applied the remedy 'peak-rate' in the trainer" in caplog.text


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_lightning_composes_a_lower_rate_with_a_per_step_schedule_and_replaces_an_epoch_one(tmp_path, interval,
                                                                                             caplog):
    from descentlab.integrations.lightning import StallMonitorCallback

    data, gamma, at, steps = _digits(), 0.99, 20, 40
    torch.manual_seed(0)
    module = _module(_tanh_mlp(), lr=LR0, interval=interval,
                     schedule=lambda optimizer: torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma))
    monitor = _Scripted(F.cross_entropy, data, at=at, change=Change(lr_factor=LOWER_FACTOR), escape=False, budget=None)
    with caplog.at_level(logging.WARNING, logger="descentlab.monitor"):
        trainer = _fit(module, data, steps, tmp_path, [StallMonitorCallback(monitor)])  # one batch: an epoch a step

    lr = trainer.optimizers[0].param_groups[0]["lr"]
    [config] = trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, RemedyLR) and config.interval == "step"
    if interval == "step":  # composed: your schedule's rate at every step, times 0.3
        assert lr == pytest.approx(LR0 * gamma ** steps * LOWER_FACTOR, rel=1e-12)
    else:  # an epoch-interval scheduler is replaced: 0.3 of the rate at the request, from then on
        assert lr == pytest.approx(LR0 * gamma ** at * LOWER_FACTOR, rel=1e-12)
        assert "ExponentialLR, not stepped every step, was replaced" in caplog.text


def test_lightning_steps_a_new_optimizer_and_reports_a_batch_size_it_cannot_make(tmp_path, caplog):
    from descentlab.integrations.lightning import StallMonitorCallback

    data, steps = _digits(), 30
    torch.manual_seed(0)
    module = _module(_tanh_mlp())
    adam = StallMonitorCallback(_Scripted(F.cross_entropy, data, at=10, change=Change(optimizer="adam"), budget=None))
    trainer = _fit(module, data, steps, tmp_path, [adam])
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert trainer.strategy._lightning_optimizers[0].optimizer is optimizer  # what the loop steps
    assert all(optimizer.state[p]["step"] == steps - 10 for p in module.parameters())

    torch.manual_seed(0)
    module = _module(_tanh_mlp())
    batch = StallMonitorCallback(_Scripted(F.cross_entropy, data, at=10, change=Change(batch_size=64), budget=None))
    with caplog.at_level(logging.WARNING, logger="descentlab.monitor"):
        trainer = _fit(module, data, steps, tmp_path, [batch])
    [(request, reason)] = batch.not_applied
    assert request.change.batch_size == 64 and "DataLoader" in reason
    assert batch.monitor.control.applied == [] and batch.monitor.control.pending is None
    assert "the remedy 'scripted' was not applied" in caplog.text
    assert trainer.global_step == steps and isinstance(trainer.optimizers[0], torch.optim.SGD)


def test_lightning_stops_a_diverging_run_at_its_first_non_finite_loss(tmp_path):
    from descentlab.integrations.lightning import StallMonitorCallback

    X, digit = _digits()
    data = (X, digit.float().unsqueeze(1) / 9)
    torch.manual_seed(0)
    alone = _module(nn.Linear(64, 1), loss_fn=F.mse_loss, lr=1.0)  # far past 2 / lambda_max
    _fit(alone, data, 100, tmp_path)
    first_bad = next(i for i, loss in enumerate(alone.losses, start=1) if not math.isfinite(loss))

    torch.manual_seed(0)
    module = _module(nn.Linear(64, 1), loss_fn=F.mse_loss, lr=1.0)
    callback = StallMonitorCallback(loss_fn=F.mse_loss, data=data, budget=None)
    trainer = _fit(module, data, 100, tmp_path, [callback])
    [stall] = callback.monitor.stalls
    assert stall.verdict == "diverged" and stall.step == first_bad
    # a loss on the CPU is read at once (on a GPU at the monitor's next check: no wait each step)
    assert trainer.should_stop and trainer.global_step == first_bad < 100


def test_the_callbacks_take_a_monitor_or_its_arguments_not_both():
    from descentlab.integrations.bridge import make_monitor

    data = _digits()
    monitor = StallMonitor(F.cross_entropy, data)
    assert make_monitor(monitor, None, None, {}) is monitor
    with pytest.raises(ValueError, match="^monitor: give a StallMonitor"):
        make_monitor(monitor, F.cross_entropy, None, {})
    with pytest.raises(ValueError, match="^monitor must be"):
        make_monitor(object(), None, None, {})
    with pytest.raises(ValueError, match="^loss_fn and data"):
        make_monitor(None, F.cross_entropy, None, {"window": 10})
    assert make_monitor(None, F.cross_entropy, data, {"window": 10}).window == 10


# ------------------------------------------------------------------------------------ Hugging Face
def _hf():
    return pytest.importorskip("transformers")


class _Classifier(nn.Module):
    """A model in Hugging Face's manner: named inputs, its own loss in a dict."""

    def __init__(self, net, loss_fn=F.cross_entropy):
        super().__init__()
        self.net, self.loss_fn = net, loss_fn

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": self.loss_fn(logits, labels), "logits": logits}


class _Rows(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return {"x": self.X[i], "labels": self.y[i]}


HF_LOSS = ModelLoss(lambda model, batch: model(**batch)["loss"])


def _rate_recorder():
    """A callback recording the optimizer's rate at each step's end (added after the monitor's)."""
    transformers = _hf()

    class RateRecorder(transformers.TrainerCallback):
        def __init__(self):
            self.rates = []

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            self.rates.append(optimizer.param_groups[0]["lr"])

    return RateRecorder()


def _hf_trainer(model, data, steps, tmp_path, accumulate=1, optimizers=(None, None), **args):
    transformers = _hf()
    defaults = dict(output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=N // accumulate,
                    gradient_accumulation_steps=accumulate, learning_rate=0.1, optim="sgd", weight_decay=0.0,
                    lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=10_000, report_to="none",
                    save_strategy="no", use_cpu=True, disable_tqdm=True, remove_unused_columns=False, seed=0)
    defaults.update(args)
    return transformers.Trainer(model=model, args=transformers.TrainingArguments(**defaults),
                                train_dataset=_Rows(*data), optimizers=optimizers)


def test_huggingface_finds_the_saddle_on_optimizer_steps_logs_it_through_the_trainer_and_leaves_the_weights(
        tmp_path):
    _hf()
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from descentlab.integrations.huggingface import StallMonitorCallback

    X, y = _digits()
    torch.manual_seed(0)
    watched = _Classifier(_tanh_mlp())
    trainer = _hf_trainer(watched, (X, y), 150, tmp_path, accumulate=2, report_to="tensorboard")
    callback = StallMonitorCallback(loss_fn=HF_LOSS, data={"x": X, "labels": y}, trainer=trainer, escape=False,
                                    budget=None)
    trainer.add_callback(callback)
    trainer.train()
    torch.manual_seed(0)
    alone = _Classifier(_tanh_mlp())
    _hf_trainer(alone, (X, y), 150, tmp_path, accumulate=2).train()

    monitor = callback.monitor
    assert [s for s, _ in monitor.tracked] == list(range(0, 151, 10))  # optimizer steps, not micro-batches
    assert callback.loop.batch_size == N and callback.loop.total_steps == 150
    assert callback.loop.optimizer is trainer.optimizer.optimizer  # the torch SGD inside accelerate's wrapper
    [stall] = monitor.stalls
    assert stall.verdict == "saddle" and stall.min_eigenvalue < 0
    [entry] = [e for e in trainer.state.log_history if "stall/step" in e]
    assert entry["stall/verdict/saddle"] == 1.0 and entry["stall/step"] == stall.step
    assert entry["stall/min_eigenvalue"] == stall.min_eigenvalue
    events = EventAccumulator(str(next((tmp_path / "hf").rglob("events.out.tfevents*")).parent))
    events.Reload()
    [scalar] = events.Scalars("train/stall/min_eigenvalue")
    assert scalar.value == pytest.approx(stall.min_eigenvalue, rel=1e-6)
    for (name, a), b in zip(watched.state_dict().items(), alone.state_dict().values()):
        assert torch.equal(a, b), name


def test_huggingface_restores_an_ended_schedule_by_setting_the_trainers_scheduler(tmp_path):
    from descentlab.integrations.huggingface import StallMonitorCallback

    X, y = _digits()
    torch.manual_seed(0)
    model = _Classifier(_tanh_mlp(hidden=8, scale=1.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR0)
    trainer = _hf_trainer(model, (X, y), 300, tmp_path, optimizers=(optimizer, _ending_schedule(optimizer)))
    callback = StallMonitorCallback(loss_fn=HF_LOSS, data={"x": X, "labels": y}, trainer=trainer, remedies=True,
                                    apply_remedy=True, budget=None)
    recorder = _rate_recorder()
    trainer.add_callback(callback)
    trainer.add_callback(recorder)
    trainer.train()

    stall = callback.monitor.stalls[0]
    assert stall.verdict == "no_learning_rate" and stall.remedy_applied == "peak-rate"
    [(request, _)] = callback.monitor.control.applied
    assert isinstance(trainer.lr_scheduler, RemedyLR) and trainer.lr_scheduler.optimizer is optimizer
    # the rate each step: the ending schedule until the request, the run's peak from then on
    expected = [LR0 * max(0.0, 1 - t / END) if t < request.step else LR0 for t in range(1, 301)]
    assert recorder.rates == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert trainer.state.log_history[-1]["train_loss"] < stall.loss


def test_huggingface_composes_a_lower_rate_with_its_linear_decay(tmp_path):
    from descentlab.integrations.huggingface import StallMonitorCallback

    X, y = _digits()
    steps, at = 40, 15
    torch.manual_seed(0)
    trainer = _hf_trainer(_Classifier(_tanh_mlp()), (X, y), steps, tmp_path, lr_scheduler_type="linear",
                          learning_rate=LR0)
    monitor = _Scripted(HF_LOSS, {"x": X, "labels": y}, at=at, change=Change(lr_factor=LOWER_FACTOR), escape=False,
                        budget=None)
    recorder = _rate_recorder()
    trainer.add_callback(StallMonitorCallback(monitor, trainer=trainer))
    trainer.add_callback(recorder)
    trainer.train()
    # transformers' linear schedule lr0 (1 - t/T), times 0.3 from the request on
    expected = [LR0 * (1 - t / steps) * (LOWER_FACTOR if t >= at else 1.0) for t in range(1, steps + 1)]
    assert recorder.rates == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_huggingface_without_the_trainer_reports_requests_and_logs_into_the_state(tmp_path, caplog):
    from descentlab.integrations.huggingface import StallMonitorCallback

    X, y = _digits()
    torch.manual_seed(0)
    trainer = _hf_trainer(_Classifier(_tanh_mlp()), (X, y), 120, tmp_path)
    monitor = _Scripted(HF_LOSS, {"x": X, "labels": y}, at=10, change=Change(lr_factor=LOWER_FACTOR), escape=False,
                        budget=None)
    callback = StallMonitorCallback(monitor)
    trainer.add_callback(callback)
    with caplog.at_level(logging.WARNING, logger="descentlab.monitor"):
        trainer.train()
    [(request, reason)] = callback.not_applied
    assert request.step == 10 and "trainer=trainer" in reason
    assert trainer.optimizer.param_groups[0]["lr"] == 0.1 and not isinstance(trainer.lr_scheduler, RemedyLR)
    [entry] = [e for e in trainer.state.log_history if "stall/step" in e]
    assert entry["stall/verdict/saddle"] == 1.0 and entry["step"] == monitor.stalls[0].step


def test_huggingface_stops_a_diverging_run(tmp_path):
    from descentlab.integrations.huggingface import StallMonitorCallback

    X, digit = _digits()
    target = digit.float().unsqueeze(1) / 9
    torch.manual_seed(0)
    model = _Classifier(nn.Linear(64, 1), F.mse_loss)
    trainer = _hf_trainer(model, (X, target), 100, tmp_path, learning_rate=1.0)  # far past 2 / lambda_max
    callback = StallMonitorCallback(loss_fn=HF_LOSS, data={"x": X, "labels": target}, trainer=trainer, budget=None)
    trainer.add_callback(callback)
    trainer.train()
    [stall] = callback.monitor.stalls
    assert stall.verdict == "diverged" and trainer.state.global_step < 100
    assert trainer.state.global_step % callback.monitor.every == 0  # stopped at the check that saw it
    assert not math.isfinite(HF_LOSS(model, {"x": X, "labels": target}).item())


# -------------------------------------------------------------------------------------------- README
def _readme_block(after):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index(after)
    code, printed = re.findall(r"```(?:python)?\n(.*?)```", text[start:], re.S)[:2]
    return code, printed


@pytest.mark.parametrize("heading, package", [("In a Lightning `Trainer`", "lightning.pytorch"),
                                              ("In a Hugging Face `Trainer`", "transformers")])
def test_readme_trainer_snippets_run_as_written(heading, package, tmp_path, monkeypatch, caplog, capsys):
    pytest.importorskip(package)
    code, printed = _readme_block(heading)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="descentlab.monitor"):
        exec(compile(code, "README.md", "exec"), {})
    shown = caplog.text + capsys.readouterr().out
    for line in printed.strip().splitlines():
        assert line in shown
