"""The normalization study: closed-form bowls, exact spectra, and the direction of every number."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from descentlab.cli import main
from descentlab.experiments.normalization import hessian_spectrum, make_network, quadratic_bowl, steps_to_target
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
    assert spectrum.stable_lr == pytest.approx(2 / float(expected[-1]), rel=1e-10)
    assert spectrum.n_negative == 0 and spectrum.n_zero == 0


def test_networks_and_steps_to_target():
    assert [type(m).__name__ for m in make_network("batchnorm", 30, 8, 2)] == [
        "BatchNorm1d", "Linear", "BatchNorm1d", "Tanh", "Linear"]
    assert [type(m).__name__ for m in make_network("raw", 30, 0, 2)] == ["Linear"]
    with pytest.raises(ValueError, match="variant"):
        make_network("whitened", 30, 8, 2)
    assert steps_to_target(torch.tensor([1.0, 0.5, 0.2, 0.1]), 0.3) == 2.0
    assert math.isnan(steps_to_target(torch.tensor([1.0, math.inf]), 0.3))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("norm") / "run"
    assert main(["normalization", "--hidden", "4", "--steps", "60", "--rates", "0.001,0.01,0.1,1,3",
                 "--out", str(out)]) == 0
    return RunDir.open(out)


def test_standardising_and_batchnorm_flatten_the_steepest_direction_and_speed_up_gd(small_run):
    rows = {r["variant"]: {k: (v if k == "variant" else float(v)) for k, v in r.items()}
            for r in small_run.read_csv("variants.csv")}
    raw, std, bn = rows["raw"], rows["standardised"], rows["batchnorm"]
    # raw features of spread up to ~570 make the curvature hundreds of times steeper
    assert raw["lambda_max_init"] > 10 * std["lambda_max_init"] and raw["lambda_max_init"] > 10 * bn["lambda_max_init"]
    assert std["stable_lr_init"] > 10 * raw["stable_lr_init"] and bn["stable_lr_init"] > 10 * raw["stable_lr_init"]
    assert std["best_lr"] > raw["best_lr"] and bn["best_lr"] > raw["best_lr"]
    for fast in (std, bn):
        assert fast["steps_to_target"] <= 60 and (math.isnan(raw["steps_to_target"])
                                                 or fast["steps_to_target"] < raw["steps_to_target"])
    for row in rows.values():
        assert row["stable_lr_init"] == pytest.approx(2 / row["lambda_max_init"], rel=1e-12)
        assert row["ratio_init"] == pytest.approx(row["lambda_max_init"] / row["smallest_positive_init"], rel=1e-12)
    bowls = small_run.read_json("bowls.json")
    assert bowls[0]["condition"] > 1e4 * bowls[1]["condition"]
    html = small_run.file("report.html").read_text()
    assert "Standardised: lambda_max fell" in html and "Raw features: lambda_max" in html
    assert html.count("data:image/png;base64,") == 4


@pytest.mark.parametrize("argv", [["--hidden", "-1"], ["--steps", "0"], ["--target-loss", "0"],
                                  ["--rates", "0.1,x"], ["--rates", "-1"], ["--bowl-features", "mean area"],
                                  ["--bowl-features", "mean area,mean area"], ["--bowl-features", "mean area,nope"]])
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, argv):
    assert main(["normalization", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("descentlab normalization: error:") and "\n" not in err
    assert list(tmp_path.iterdir()) == []
