"""``descentlab spectrum --per-layer`` and the GGN split, as a user runs them, against dense oracles."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from descentlab.cli import main
from descentlab.problems.workloads import get_workload
from descentlab.rundir import RunDir


def test_the_lectures_saddle_is_all_residual(tmp_path, capsys):
    # y = w1 w2 x at (0, 0): the output's Jacobian is 0, so GGN = 0 and the residual is all of H
    path = tmp_path / "w.pt"
    torch.save({"w1": torch.tensor(0.0), "w2": torch.tensor(0.0)}, path)
    out = tmp_path / "spectrum"
    assert main(["spectrum", "--workload", "lecture", "--checkpoint", str(path), "--k", "2", "--per-layer",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = RunDir.open(out).read_json("spectrum.json")
    assert result["split"]["eigenvalue"] == pytest.approx(-2.0, abs=1e-6)
    assert result["split"]["ggn"] == pytest.approx(0.0, abs=1e-6)
    assert result["split"]["residual_share"] == pytest.approx(1.0, abs=1e-6)
    assert "GGN 0 + residual -2 (the residual carries 100%)" in printed
    [group] = result["per_layer"]  # w1 and w2 belong to the model itself: one group, all of H
    assert group["group"] == "(model)" and group["n_params"] == 2
    assert (group["min_eigenvalue"], group["max_eigenvalue"]) == pytest.approx((-2.0, 2.0), abs=1e-6)
    assert group["minimum_ratio"] == 0.5 and group["exact"]


def test_per_layer_table_and_figure_match_the_blocks_of_the_exact_hessian(tmp_path, capsys):
    out = tmp_path / "spectrum"
    assert main(["spectrum", "--workload", "moons", "--per-layer", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = RunDir.open(out).read_json("spectrum.json")
    # the oracle: the same model (seed 0) in float64, torch.func.hessian of the training loss
    workload = get_workload("moons", seed=0)
    torch.manual_seed(0)
    model = workload.make_model().double()
    named = {n: p.detach() for n, p in model.named_parameters()}
    sizes = [p.numel() for p in named.values()]
    X, y = workload.X_train.double(), workload.y_train

    def loss(flat):
        state = {n: t.reshape(p.shape) for (n, p), t in zip(named.items(), torch.split(flat, sizes))}
        out = functional_call(model, state, (X,))
        return workload.loss_fn(out, y if not y.is_floating_point() else y.double())

    H = torch.func.hessian(loss)(torch.cat([p.reshape(-1) for p in named.values()]))
    assert [r["group"] for r in result["per_layer"]] == ["0", "2", "4"]
    start = 0
    for row in result["per_layer"]:
        n = row["n_params"]
        block = torch.linalg.eigvalsh(H[start : start + n, start : start + n])
        start += n
        scale = block.abs().max().item()
        # float32 products against the float64 oracle: eigenvalues to ~1e-5 of the block's norm
        assert row["min_eigenvalue"] == pytest.approx(block[0].item(), abs=1e-5 * scale)
        assert row["max_eigenvalue"] == pytest.approx(block[-1].item(), abs=1e-5 * scale)
        # classify's float32 zero test: |λ| <= sqrt(eps) max(1, max|λ|)
        threshold = torch.finfo(torch.float32).eps ** 0.5 * max(1.0, scale)
        near = int(((block - threshold).abs() <= 1e-5 * scale).sum())  # may fall either side in float32
        assert abs(row["minimum_ratio"] - float((block > threshold).double().mean())) <= near / n + 1e-12
        assert row["group"] in printed
    assert start == H.shape[0]
    assert (out / "layers.png").exists()
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
