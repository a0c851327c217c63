"""Each way training stops, reproduced by a preset (or a user's run) and named: the verdict, its
evidence against an independent oracle, and its remedy tried."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab import files
from descentlab.cli import main
from descentlab.critical.diagnosis import examine
from descentlab.critical.sample import fixed_sample
from descentlab.critical.verdicts import STILL_STEP
from descentlab.curvature import EmpiricalLoss
from descentlab.experiments.rundir import RunDir
from descentlab.problems.workloads import LOGISTIC_PRESETS, get_workload
from helpers import loss_of_flat, watched_steps


def _diagnose(tmp_path, capsys, *args, code=0):
    """`descentlab diagnose` with no budget: its decisions then depend on the data alone, not on
    how busy the machine is (a capped monitor sizes its tracked sample by the clock)."""
    out = tmp_path / "run"
    budget = () if "--budget" in args else ("--budget", "none")
    assert main(["diagnose", *args, *budget, "--out", str(out), "--no-progress"]) == code
    printed = capsys.readouterr().out
    return RunDir.open(out).read_json("stalls.json"), printed, out


def _gd(workload, lr, steps):
    """Full-batch gradient descent from the preset's seed-0 start, as train() takes it."""
    torch.manual_seed(0)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        workload.loss_fn(model(workload.X_train), workload.y_train).backward()
        optimizer.step()
    return model


def _optimum_loss(workload):
    """The logistic regression's optimum by scikit-learn (no penalty): the oracle of the lowest loss."""
    from sklearn.linear_model import LogisticRegression

    X, y = workload.X_train.double().numpy(), workload.y_train.numpy()
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(X, y)
    p = fit.predict_proba(X)[np.arange(len(y)), y]
    return float(-np.log(p).mean())


def test_unstable_preset_is_past_the_stability_limit_and_the_remedy_converges(tmp_path, capsys):
    stalls, printed, out = _diagnose(tmp_path, capsys, "--workload", "unstable")
    stall = stalls[0]
    assert stall["verdict"] == "unstable" and "unstable" in printed and "remedy 1: lower the rate below" in printed
    rate = stall["evidence"]["rate"]
    workload = get_workload("unstable")
    # oracle: retrain to the stall's step, the exact Hessian (6 parameters) of the sample's loss, eigvalsh
    model = _gd(workload, workload.lr, stall["step"])
    (X, y), _ = fixed_sample((workload.X_train, workload.y_train), 512, seed=0)
    params = dict(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()]).double()

    def loss_of(theta):
        w, b = theta[:4].reshape(2, 2), theta[4:]
        return F.cross_entropy(X.double() @ w.T + b, y)

    lam = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))[-1])
    # float32 products against the float64 oracle: 1e-4 relative
    assert rate["sharpness"] == pytest.approx(workload.lr * lam, rel=1e-4) and rate["sharpness"] >= 2.0
    assert rate["largest_stable_lr"] == pytest.approx(2.0 / lam, rel=1e-4)
    # the remedy, tried: 0.9 x the largest stable rate reaches the optimum; the preset's rate stays far above it
    optimum = _optimum_loss(workload)
    for lr, reaches in ((0.9 * rate["largest_stable_lr"], True), (workload.lr, False)):
        model = _gd(workload, lr, 500)
        with torch.no_grad():
            loss = float(workload.loss_fn(model(workload.X_train), workload.y_train))
        assert (loss < optimum + 1e-3) == reaches, (lr, loss, optimum)
    assert (out / "stall-1-sharpness.png").exists() and not (out / "stall-1-slice.png").exists()


def test_minimum_preset_reaches_the_optimum_of_the_convex_loss(tmp_path, capsys):
    stalls, printed, out = _diagnose(tmp_path, capsys, "--workload", "minimum")
    stall = stalls[0]
    assert stall["verdict"] == "minimum" and not stall["escaped"]
    ev = stall["evidence"]
    assert ev["curvature"]["dtype"] == "float64" and ev["gradient"]["critical"] and ev["loss"]["near_best"]
    # the full-data loss there against scikit-learn's optimum of the same logistic regression
    assert ev["gradient"]["loss"] == pytest.approx(_optimum_loss(get_workload("minimum")), abs=2e-4)
    assert "remedy 1: stop here" in printed
    assert not (out / "stall-1-slice.png").exists()


def test_noise_floor_preset_is_noise_bound_and_a_larger_batch_goes_lower(tmp_path, capsys):
    stalls, printed, out = _diagnose(tmp_path, capsys, "--workload", "noise-floor")
    stall = stalls[0]
    assert stall["verdict"] == "noise_floor"
    noise = stall["evidence"]["noise"]
    assert noise["batch_size"] == 4 and noise["snr"] < 1 and noise["critical_batch"] > 4
    assert (out / "stall-1-noise.png").exists()
    # the remedy, tried: the same run with batches above the measured B* ends lower (a floor of its own
    # may remain: the rate is still constant; it is lower)
    plateau = float(stall["evidence"]["gradient"]["loss"])
    batch = str(int(math.ceil(noise["critical_batch"])) * 4)
    larger, _, _ = _diagnose(tmp_path / "larger", capsys, "--workload", "noise-floor", "--batch-size", batch,
                             "--steps", "600")
    model = RunDir.open(tmp_path / "larger" / "run")
    workload = get_workload("noise-floor")
    torch.manual_seed(0)
    net = workload.make_model()
    net.load_state_dict(files.load_torch(model.file("checkpoint.pt"))["model"])
    with torch.no_grad():
        final = float(workload.loss_fn(net(workload.X_train), workload.y_train))
    assert final < plateau - 0.01
    assert all(s["evidence"]["gradient"]["loss"] < plateau for s in larger if s["verdict"] == "noise_floor")


def test_divergence_names_the_largest_stable_rate(tmp_path, capsys):
    stalls, printed, out = _diagnose(tmp_path, capsys, "--workload", "digits-mlp", "--optimizer", "sgd", "--lr", "8",
                                     "--batch-size", "full", code=1)
    stall = stalls[-1]
    assert stall["verdict"] == "diverged" and stall["reason"] == "non_finite"
    rate, good = stall["evidence"]["rate"], stall["evidence"]["diverged"]["checkpoint_step"]
    assert good == 0 and "diverged" in printed  # the loss rose from the first step: the initial weights
    # oracle: lambda_max at the initial weights by scipy's eigsh (ARPACK) on the same sample's Hessian
    from scipy.sparse.linalg import LinearOperator, eigsh

    from descentlab.curvature import HessianOperator

    workload = get_workload("digits-mlp")
    torch.manual_seed(0)
    model = workload.make_model()
    sample, _ = fixed_sample((workload.X_train, workload.y_train), 512, seed=0)
    op = HessianOperator(model, workload.loss_fn, sample)
    scipy_op = LinearOperator(op.shape, matvec=lambda v: (op @ torch.as_tensor(v, dtype=torch.float32)).double().numpy(),
                              dtype=np.float64)
    lam = float(eigsh(scipy_op, k=1, which="LA", tol=1e-6)[0][0])
    # Lanczos stopped at a residual of 1e-2: the eigenvalue is good to ~1e-4 relative
    assert rate["sharpness"] == pytest.approx(8 * lam, rel=1e-3) and rate["sharpness"] > 2
    # the remedy, tried: 0.9 x the largest stable rate trains 200 steps without a non-finite loss
    model = _gd(workload, 0.9 * rate["largest_stable_lr"], 200)
    with torch.no_grad():
        assert math.isfinite(float(workload.loss_fn(model(workload.X_train), workload.y_train)))


def test_a_schedule_that_ends_early_is_no_learning_rate(tmp_path, capsys):
    stalls, printed, out = _diagnose(tmp_path, capsys, "--workload", "digits-mlp", "--schedule",
                                     "warmup-linear:warmup=10,total=200,final=0.0", "--steps", "400")
    stall = stalls[0]
    assert stall["verdict"] == "no_learning_rate" and stall["kind"] is None  # no Hessian was needed
    rate = stall["evidence"]["rate"]
    # the closed form: warm-up to step 10, linear to 0 at step 200; tracked every 10 steps
    assert rate["lr"] == 0.0 and rate["peak_lr"] == pytest.approx(0.1) and rate["zero_since"] == 200
    assert "since step 200 of 400" in stall["remedy"]
    assert (out / "stall-1-rate.png").exists()


def _examine(model, X, y, loss_fn=F.cross_entropy, lr=0.01, batch=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    sample = EmpiricalLoss(model, loss_fn, (X, y), eval_mode=True)
    return examine(sample, full=EmpiricalLoss(model, loss_fn, [(X, y)], eval_mode=True), optimizer=optimizer,
                   batch_size=batch or len(y), n_data=len(y), peak_lr=lr,
                   loss={"value": 1.0, "best": 1.0, "initial": 1.0})


def test_maximum_flat_and_slow_verdicts_on_models_built_for_them():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=g, dtype=torch.float64)
    # a maximum: L(w) = -mean((w.x)^2) at w = 0, H = -2 X^T X / n (negative definite)
    top = nn.Linear(3, 1, bias=False).double()
    nn.init.zeros_(top.weight)
    found = _examine(top, X, torch.zeros(64, 1, dtype=torch.float64), loss_fn=lambda out, t: -F.mse_loss(out, t))
    exact = torch.linalg.eigvalsh(-2 * X.T @ X / 64)
    assert found.verdict == "maximum"
    assert found.evidence["curvature"]["max_eigenvalue"] == pytest.approx(float(exact[-1]), rel=1e-10)
    # every ReLU dead (bias -10), no output bias: the gradient and the Hessian are exactly zero, and the
    # cause is named: all 4 units of layer "1" are zero on every sample (oracle: counted by hand)
    dead = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        dead[0].bias.fill_(-10.0)
    y = torch.randint(0, 2, (64,), generator=g)
    assert bool((torch.relu(dead[0](X)) == 0).all())
    found = _examine(dead, X, y)
    assert found.verdict == "dead_units" and found.evidence["gradient"]["norm"] == 0.0
    assert [(u["name"], u["dead"]) for u in found.evidence["layers"]["units"]] == [("1", 1.0)]
    # the same net with its ReLU written as a function: no hook sees the activation, but its dead units
    # show where their output enters the last layer (exactly zero on every sample), and the evidence says so
    class Functional(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.first, self.last = net[0], net[2]

        def forward(self, x):
            return self.last(torch.relu(self.first(x)))

    found = _examine(Functional(dead), X, y)
    assert found.verdict == "dead_units" and found.evidence["gradient"]["norm"] == 0.0
    assert [(u["name"], u["dead"], u["after"]) for u in found.evidence["layers"]["units"]] == [
        ("last (its inputs)", 1.0, "first")]
    assert any("activations written as functions" in note for note in found.evidence["layers"]["notes"])
    # flat: the output clamped past its bound (a zero gradient, a zero Hessian, no unit dead)
    clamped = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        clamped[2].bias.fill_(50.0)

    class Clamped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = clamped

        def forward(self, x):
            return torch.clamp(self.net(x), max=10.0)

    found = _examine(Clamped(), X, torch.zeros(64, 2, dtype=torch.float64), loss_fn=F.mse_loss)
    assert found.verdict == "flat" and found.evidence["gradient"]["norm"] == 0.0
    # slow: a tanh net far from critical, stable, full batch, at a rate 1e-3 of its stability limit
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    found = _examine(net, X, y, lr=1e-4)
    assert found.verdict == "slow" and not found.evidence["gradient"]["critical"]
    assert found.evidence["rate"]["ratio"] < 1e-2 and "raise the rate toward" in found.remedy


def test_a_point_that_is_not_critical_gets_the_rate_test_alone_against_the_exact_top_eigenvalue():
    """At a point that is not critical no verdict reads the curvature: the examination asks the
    budget for the gradient test (0 products) and the rate test (RATE_LEAST, then one product at
    a time), measures λ_max by Lanczos (2,410 parameters: above the dense threshold), and that
    λ_max is the exact Hessian's (eigvalsh of torch.func's Hessian, float64) to Lanczos' 1 %
    residual. Where the budget ends the test early, its value is a lower bound (a Rayleigh
    quotient): past the limit it settles `unstable`; below it, the plateau waits."""
    from descentlab.critical.diagnosis import RATE_LEAST, RATE_PRODUCTS

    X, y, model, exact = _tanh_mlp_at_init()
    asked = []
    finding = _examined(model, X, y, 0.5, lambda products: asked.append(products) or True)
    assert asked[:2] == [0, RATE_LEAST] and set(asked[2:]) <= {1} and not finding.evidence["gradient"]["critical"]
    curvature, rate = finding.evidence["curvature"], finding.evidence["rate"]
    assert curvature["kind"] == "not_critical" and curvature["min_eigenvalue"] is None and rate["converged"]
    assert curvature["max_eigenvalue"] == pytest.approx(exact, rel=1e-2)
    assert rate["sharpness"] == pytest.approx(0.5 * exact, rel=1e-2)
    assert finding.verdict == ("unstable" if rate["ratio"] >= 0.9 else "slow")
    # the budget allows the first RATE_LEAST products and no more
    for lr in (0.5, 50.0):
        cut = _examined(model, X, y, lr, lambda products: products != 1)
        rate = cut.evidence["rate"]
        assert not rate["converged"] and rate["n_matvecs"] == RATE_LEAST
        assert rate["sharpness"] <= lr * exact * (1 + 1e-5)  # a Rayleigh quotient: never above λ_max
        if rate["sharpness"] >= rate["limit"]:
            assert cut.verdict == "unstable" and "well below" in cut.remedy and lr == 50.0
        else:
            assert cut.verdict is None and cut.evidence["waits_for_products"] == RATE_PRODUCTS and lr == 0.5
    assert lr * exact > 2.0 * 10  # 50 is ten times past the limit: the lower bound got there


def _tanh_mlp_at_init():
    """A 64-32-10 tanh MLP at its initialisation on 256 digits, and its exact λ_max (float64)."""
    import copy

    from torch.func import hessian

    workload = get_workload("digits-mlp")
    X, y = workload.X_train[:256], workload.y_train[:256]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    loss_of, flat = loss_of_flat(copy.deepcopy(model).double(), F.cross_entropy, X.double(), y)
    return X, y, model, float(torch.linalg.eigvalsh(hessian(loss_of)(flat))[-1])


def _examined(model, X, y, lr, afford):
    return examine(EmpiricalLoss(model, F.cross_entropy, (X, y)), optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                   batch_size=256, n_data=256, afford=afford)


def _watch_digits(model, optimizer, steps=30, batch=64):
    """README's loop on the digits with mini-batches, the default monitor attached: its stalls."""
    from descentlab.critical import StallMonitor
    from descentlab.engine import LoopState

    workload = get_workload("digits-mlp")
    X, y = workload.X_train, workload.y_train
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=batch)
    loop = LoopState(model, optimizer, batch_size=batch, n_train=len(X), total_steps=steps)
    monitor.on_train_start(loop)
    g = torch.Generator().manual_seed(1)

    def step_loss():
        index = torch.randint(0, len(X), (batch,), generator=g)
        return F.cross_entropy(model(X[index]), y[index])

    watched_steps(loop, monitor, step_loss, steps)
    return monitor.stalls


def _digits_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=1e-6), lambda p: torch.optim.Adam(p, lr=1e-7)],
                         ids=["sgd-1e-6", "adam-1e-7"])
def test_a_rate_far_too_small_is_slow_not_a_noise_floor(make):
    """Batches of 16 on the digits: the gradient's SNR is below 1 there (the noise estimate says so
    in the evidence), but a loss that never came down from where it began is not held up by noise
    (a noise floor is reached by descent, at an excess that shrinks with the rate): at a rate 1e-6
    of the stability limit the verdict is ``slow``, its sharpness that far below the limit."""
    model = _digits_mlp()
    [stall] = _watch_digits(model, make(model.parameters()), batch=16)
    ev = stall.evidence
    assert stall.verdict == "slow" and ev["noise"]["snr"] < 1.0
    assert ev["loss"]["value"] > 0.99 * ev["loss"]["initial"] and ev["rate"]["ratio"] < 1e-3


def test_an_optimizer_that_steps_none_of_the_models_weights_is_named():
    """The optimizer was given another model's parameters (a common slip): the rate is 0.1, the
    rate times a layer's relative gradient is 1e-2 or more, yet no weight moves (checked bit for
    bit against the start). The
    verdict is ``no_learning_rate``, and its remedy says to give the optimizer this model's
    parameters, not to fix a schedule."""
    model, other = _digits_mlp(), _digits_mlp()
    start = [p.detach().clone() for p in model.parameters()]
    [stall] = _watch_digits(model, torch.optim.SGD(other.parameters(), lr=0.1))
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters()))
    assert stall.verdict == "no_learning_rate" and stall.grad_norm > 0
    layers = stall.evidence["layers"]["layers"]
    assert all(layer["update"] == 0.0 for layer in layers)
    assert max(0.1 * layer["relative"] for layer in layers) >= 100 * STILL_STEP  # steps no rounding swallows
    assert stall.remedy.startswith("give the optimizer this model's parameters")
    assert "no weight moved at lr 0.1" in stall.summary()


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: torch.optim.Adam(p, lr=1e-3), lambda p: torch.optim.RMSprop(p, lr=1e-3)],
                         ids=["sgd-momentum", "adam-1e-3", "rmsprop-1e-3"])
@pytest.mark.parametrize("order", ["no step", "zero_grad between backward and step", "step before backward"])
def test_an_optimizer_that_holds_the_weights_but_never_steps_with_a_gradient_is_told_to_step(order, make):
    """The optimizer holds every parameter, but the loop never steps with a gradient: ``step()``
    left out, the gradients zeroed between ``backward`` and ``step``, or ``step`` taken before
    ``backward`` (the next ``zero_grad`` clears what it left). No weight moves (bit for bit), the
    verdict is ``no_learning_rate``, and the remedy is the loop's order, not the parameters. Adam
    and RMSprop at 1e-3 step each coordinate by about the rate, not the rate times its gradient
    (1e-3 times the relative gradient, 9e-5 here, is a step rounding could swallow; theirs is not):
    they were told ``slow``, "raise the rate toward 3.46"."""
    from descentlab.critical import StallMonitor

    workload = get_workload("digits-mlp")
    X, y = workload.X_train, workload.y_train
    model = _digits_mlp()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = make(model.parameters())
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64, max_stalls=1)
    g = torch.Generator().manual_seed(1)
    for step in range(1, 101):
        index = torch.randint(0, len(X), (64,), generator=g)
        if order != "zero_grad between backward and step":
            optimizer.zero_grad()
        if order == "step before backward":
            optimizer.step()
        F.cross_entropy(model(X[index]), y[index]).backward()
        if order == "zero_grad between backward and step":
            optimizer.zero_grad()
            optimizer.step()
        monitor.update(step, None, model)
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters()))
    [stall] = monitor.stalls
    assert stall.verdict == "no_learning_rate" and stall.evidence["rate"]["held"] == 1.0
    assert stall.remedy.startswith("take the optimizer's step after each backward")
