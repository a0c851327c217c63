"""The normalization study: closed-form bowls and Hessians, exact spectra, saturation by hand, the sweep as
plain gradient descent, and the direction of every number."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from descentlab.cli import main
from descentlab.experiments.normalization import (Variant, _sweep, hessian_spectrum, quadratic_bowl, run_variant,
                                                  steps_to_target, top_eigenvalue, train_full_batch, variants_of)
from descentlab.experiments.normalization_networks import make_network, saturation
from descentlab.experiments.rundir import RunDir
from descentlab.problems.features import breast_cancer, standardise

D = torch.float64


def test_bowl_of_orthogonal_features_has_the_condition_number_of_their_scales():
    # columns u, v orthogonal with ||u|| = ||v||, scaled by a and b: H = 2/N diag(a^2, b^2) ||u||^2,
    # so kappa = (a/b)^2 exactly, the best fixed rate is 2/(lambda_max + lambda_min) and GD's
    # distance to the minimum shrinks by (kappa-1)/(kappa+1) per step along the slow direction
    n, a, b = 64, 30.0, 0.5
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(n, 2, generator=gen, dtype=D))
    X = torch.stack([a * Q[:, 0], b * Q[:, 1]], dim=1)
    y = torch.randn(n, generator=gen, dtype=D)
    bowl = quadratic_bowl(X, y, ("u", "v"), steps=20)
    lam = torch.tensor([2 * b**2 / n, 2 * a**2 / n], dtype=D)
    torch.testing.assert_close(bowl.eigenvalues, lam, rtol=1e-12, atol=0)
    assert bowl.condition == pytest.approx((a / b) ** 2, rel=1e-12)
    assert bowl.best_lr == pytest.approx(2 / float(lam.sum()), rel=1e-12)
    kappa = (a / b) ** 2
    assert bowl.contraction == pytest.approx((kappa - 1) / (kappa + 1), rel=1e-12)
    torch.testing.assert_close(bowl.w_star, torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1))
    # along each eigenvector the error is multiplied by exactly (1 - best_lr * lambda) per step
    error = bowl.path - bowl.w_star
    factors = 1 - bowl.best_lr * lam.flip(0)  # w1 goes with the a-scaled column (the larger eigenvalue)
    for t in (1, 7, 20):
        torch.testing.assert_close(error[t], error[0] * factors**t, rtol=1e-9, atol=1e-15)
    assert bowl.steps_to_shrink(100.0) == math.ceil(math.log(100) / -math.log(bowl.contraction))


def test_standardised_bowl_condition_is_the_closed_form_of_the_correlation():
    # standardised two-feature least squares: H is proportional to the correlation matrix
    # [[1, r], [r, 1]], whose eigenvalues 1 -+ |r| give kappa = (1 + |r|) / (1 - |r|)
    data = breast_cancer()
    i, j = data.column("mean radius"), data.column("mean smoothness")
    (X,) = standardise(data.X_train)
    r = np.corrcoef(data.X_train[:, i].numpy(), data.X_train[:, j].numpy())[0, 1]
    bowl = quadratic_bowl(X[:, [i, j]], data.y_train, ("mean radius", "mean smoothness"))
    assert bowl.condition == pytest.approx((1 + abs(r)) / (1 - abs(r)), rel=1e-10)
    raw = quadratic_bowl(data.X_train[:, [i, j]], data.y_train, ("mean radius", "mean smoothness"))
    assert raw.condition > 1e4 * bowl.condition  # the scales (14 vs 0.1) stretch the bowl


def test_hessian_spectrum_of_least_squares_is_two_x_transpose_x_over_n():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(40, 3, generator=gen, dtype=D) * torch.tensor([10.0, 1.0, 0.1], dtype=D)
    y = torch.randn(40, 1, generator=gen, dtype=D)
    model = nn.Linear(3, 1, bias=False).double()
    spectrum = hessian_spectrum(model, nn.functional.mse_loss, X, y)
    expected = torch.linalg.eigvalsh(2 * X.T @ X / 40)
    torch.testing.assert_close(spectrum.eigenvalues, expected, rtol=1e-10, atol=0)
    assert spectrum.lambda_max == pytest.approx(float(expected[-1]), rel=1e-10)
    assert spectrum.smallest_positive == pytest.approx(float(expected[0]), rel=1e-10)
    assert spectrum.ratio == pytest.approx(float(expected[-1] / expected[0]), rel=1e-10)
    assert spectrum.quadratic_bound == pytest.approx(2 / float(expected[-1]), rel=1e-10)
    assert spectrum.n_negative == 0 and spectrum.n_zero == 0


def test_softmax_regression_from_zero_has_the_closed_form_hessian():
    # at w = 0 both classes have p = 1/2, so H = [[1/4, -1/4], [-1/4, 1/4]] (x) E[x~ x~^T], x~ = (x, 1):
    # eigenvalues 1/2 * eig(E[x~ x~^T]) and as many zeros (the class-sum direction)
    data = breast_cancer()
    (X,) = standardise(data.X_train)
    net = make_network("softmax", 30, 2)
    assert all(float(p.abs().max()) == 0 for p in net.parameters())
    spectrum = hessian_spectrum(net, nn.functional.cross_entropy, X, data.y_train)
    Xt = torch.cat([X, torch.ones(len(X), 1, dtype=D)], dim=1)
    second = torch.linalg.eigvalsh(Xt.T @ Xt / len(X))
    expected = torch.sort(torch.cat([0.5 * second, torch.zeros(31, dtype=D)])).values
    torch.testing.assert_close(spectrum.eigenvalues, expected, rtol=0, atol=1e-10 * float(expected[-1]))
    assert spectrum.quadratic_bound == pytest.approx(4 / float(second[-1]), rel=1e-10)


def test_top_eigenvalue_by_lanczos_is_the_dense_one():
    # oracle: torch.func.hessian of the written-out loss and eigvalsh, on the deep tanh net
    torch.manual_seed(0)
    X, y = torch.randn(50, 5, dtype=D), torch.randint(0, 2, (50,))
    net = make_network("deep", 5, 2)
    params = {k: v.detach() for k, v in net.named_parameters()}
    flat = torch.cat([v.reshape(-1) for v in params.values()])

    def loss(theta):
        pieces = dict(zip(params, torch.split(theta, [v.numel() for v in params.values()])))
        h = X
        for i in (0, 2, 4):
            h = torch.tanh(h @ pieces[f"{i}.weight"].reshape(16, -1).T + pieces[f"{i}.bias"])
        return nn.functional.cross_entropy(h @ pieces["6.weight"].reshape(2, 16).T + pieces["6.bias"], y)

    expected = float(torch.linalg.eigvalsh(torch.func.hessian(loss)(flat))[-1])
    assert top_eigenvalue(net, nn.functional.cross_entropy, X, y) == pytest.approx(expected, rel=1e-8)


def test_networks_and_steps_to_target():
    assert [type(m).__name__ for m in make_network("tanh", 30, 2, batchnorm=True)] == [
        "Linear", "BatchNorm1d", "Tanh", "Linear"]
    assert [type(m).__name__ for m in make_network("deep", 30, 2)] == ["Linear", "Tanh"] * 3 + ["Linear"]
    torch.manual_seed(0)
    reference = nn.Linear(30, 8).double()
    torch.manual_seed(0)
    relu = make_network("relu", 30, 2)
    torch.testing.assert_close(relu[0].weight, 0.1 * reference.weight)  # torch's default draw, scaled
    assert float(relu[0].bias.abs().max()) == 0
    with pytest.raises(ValueError, match="model"):
        make_network("whitened", 30, 2)
    with pytest.raises(ValueError, match="batchnorm"):
        make_network("softmax", 30, 2, batchnorm=True)
    assert [v.name for v in variants_of(["softmax", "tanh"])] == [
        "softmax/raw", "softmax/standardised", "tanh/raw", "tanh/standardised", "tanh/standardised+bn", "tanh/raw+bn"]
    assert steps_to_target(torch.tensor([1.0, 0.5, 0.2, 0.1]), 0.3) == 2.0
    assert math.isnan(steps_to_target(torch.tensor([1.0, math.inf]), 0.3))


def test_saturation_counts_the_flat_tails_by_hand():
    # one input, four tanh units with weights 0.5, 5, -10, 2 and biases 0: on x = +-1 the
    # pre-activations are +-0.5, +-5, -+10, +-2, so |z| > 3 for units 2 and 3 (4 of 8 values); the
    # monitor's rule (slope 1 - tanh^2 <= 0.02 on >= 90 % of samples) saturates the same two units.
    # A second tanh layer (all saturated) is not counted: the first layer is the one the inputs feed
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[2].weight.fill_(100.0)
        net[2].bias.fill_(100.0)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.5], [5.0], [-10.0], [2.0]]))
        net[0].bias.zero_()
    X, y = torch.tensor([[1.0], [-1.0]], dtype=D), torch.tensor([0, 1])
    found = saturation(net, nn.functional.cross_entropy, X, y)
    assert found.pre_activations == 0.5 and found.units == 0.5
    assert math.isnan(saturation(make_network("relu", 1, 2), nn.functional.cross_entropy, X, y).units)


def test_saturation_leaves_batchnorm_statistics_alone():
    net = make_network("tanh", 3, 2, batchnorm=True)
    X, y = torch.randn(20, 3, dtype=D) * 50, torch.randint(0, 2, (20,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    saturation(net, nn.functional.cross_entropy, X, y)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_the_stacked_sweep_is_plain_gradient_descent_at_every_rate(batchnorm):
    # oracle: each rate's run written out as a plain loop (torch's SGD, full batch, training mode)
    torch.manual_seed(0)
    X, y = torch.randn(40, 3, dtype=D) * 4, torch.randint(0, 2, (40,))
    rates = [0.01, 0.3, 30.0]  # 30: a run that blows up (its finite part must still match)

    def fresh():
        torch.manual_seed(3)
        return make_network("tanh", 3, 2, hidden=5, batchnorm=batchnorm)

    runs = _sweep(fresh, nn.functional.cross_entropy, X, y, rates, 25)
    for rate, run in zip(rates, runs):
        model = fresh()
        opt = torch.optim.SGD(model.parameters(), lr=rate)
        expected = []
        for _ in range(25):
            loss = nn.functional.cross_entropy(model(X), y)
            expected.append(float(loss))
            opt.zero_grad()
            loss.backward()
            opt.step()
        expected.append(float(nn.functional.cross_entropy(model(X), y)))
        finite = [v for v in expected if math.isfinite(v)]
        # vmapped and plain matmuls sum in different orders: float64 rounding (~1e-16), amplified by
        # 25 steps of a rate up to 30 through BatchNorm's division, stays below 1e-7 relative
        torch.testing.assert_close(run.losses[:len(finite)], torch.tensor(finite, dtype=D), rtol=1e-7, atol=1e-12)


def test_tracked_lambda_max_is_within_one_percent_of_the_dense_one():
    torch.manual_seed(0)
    X, y = torch.randn(60, 4, dtype=D), torch.randint(0, 2, (60,))
    model = make_network("tanh", 4, 2, hidden=6)
    start = hessian_spectrum(model, nn.functional.cross_entropy, X, y).lambda_max
    training = train_full_batch(model, nn.functional.cross_entropy, X, y, 0.5, 40, track_every=10)
    assert training.track_steps == (0, 10, 20, 30, 40)
    assert training.track_lambda[0] == pytest.approx(start, rel=1e-2)
    end = hessian_spectrum(model, nn.functional.cross_entropy, X, y).lambda_max
    assert training.track_lambda[-1] == pytest.approx(end, rel=1e-2)


def test_the_grid_widens_while_the_best_rate_sits_at_its_end():
    # standardised softmax regression reaches loss 0.3 fastest at a rate near 1: a grid of 1e-3 and
    # 1e-2 must grow upward past 1e-2, one half-decade at a time
    data = breast_cancer()
    X, X_test = standardise(data.X_train, data.X_val)
    run = run_variant(Variant("softmax", "standardised"), (X, data.y_train), (X_test, data.y_val), seed=0, hidden=8,
                      steps=20, rates=(1e-3, 1e-2), target=0.3, track_every=0)
    assert run.rates[0] == 1e-3 and run.rates[-1] > 1e-2 and len(run.rates) > 2
    assert all(b / a == pytest.approx(10.0, rel=1e-12) for a, b in zip(run.rates, run.rates[1:]))
    assert run.at_edge == "" or len(run.rates) == 2 + 6
    assert run.best_lr > 1e-2 and not math.isnan(run.best_steps)
    assert run.largest_stable == max(r for r, d in zip(run.rates, run.diverged) if not d)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("norm") / "run"
    assert main(["normalization", "--models", "softmax,tanh", "--seeds", "2", "--steps", "30",
                 "--rates", "0.001,0.01,0.1,1", "--track-every", "10", "--out", str(out)]) == 0
    return RunDir.open(out)


def test_the_run_records_every_variant_and_seed_consistently(small_run):
    rows = small_run.read_csv("seeds.csv")
    assert sorted({r["variant"] for r in rows}) == ["softmax/raw", "softmax/standardised", "tanh/raw", "tanh/raw+bn",
                                                   "tanh/standardised", "tanh/standardised+bn"]
    assert len(rows) == 6 * 2
    for row in rows:
        lam, bound = float(row["lambda_max_init"]), float(row["quadratic_bound"])
        assert bound == pytest.approx(2 / lam, rel=1e-12)
        assert float(row["stable_over_bound"]) == pytest.approx(float(row["largest_stable"]) / bound, rel=1e-12)
    by = {(r["variant"], r["seed"]): r for r in rows}
    for seed in ("0", "1"):
        # raw features of spread up to ~570 saturate the tanh units (whose curvature then depends on
        # the draw: measured 4 to 572), and make softmax regression's bowl steeper by the squared scale
        assert float(by["tanh/raw", seed]["saturated_preact_init"]) > 0.5 > float(
            by["tanh/standardised", seed]["saturated_preact_init"])
        assert float(by["softmax/raw", seed]["lambda_max_init"]) > 1e3 * float(
            by["softmax/standardised", seed]["lambda_max_init"])
    curves = [c for c in small_run.read_csv("curves.csv") if c["lambda_max"] != ""]
    assert {int(c["step"]) for c in curves} == {0, 10, 20, 30}
    html = small_run.file("report.html").read_text()
    assert "is saturated: at the start" in html and "standardised minus raw" in html
    assert html.count("data:image/png;base64,") == 4


@pytest.mark.parametrize("argv", [["--hidden", "0"], ["--steps", "0"], ["--target-loss", "0"], ["--seeds", "0"],
                                  ["--models", "nope"], ["--models", "tanh,tanh"], ["--track-every", "-1"],
                                  ["--rates", "0.1,x"], ["--rates", "-1"], ["--rates", "1,1"],
                                  ["--bowl-features", "mean area"], ["--bowl-features", "mean area,mean area"],
                                  ["--bowl-features", "mean area,nope"]])
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, argv):
    assert main(["normalization", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("descentlab normalization: error:") and "\n" not in err
    assert list(tmp_path.iterdir()) == []
