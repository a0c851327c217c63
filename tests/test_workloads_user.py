"""User workloads: --model package.module:factory with --data file.npz|csv, and their one-line errors."""

import sys
import textwrap

import numpy as np
import pytest
import torch

from descentlab.errors import UserInputError
from descentlab.problems.user_workload import load_arrays, load_factory, resolve_workload, user_workload


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A tiny importable package ``usernets`` with good and bad factories."""
    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def classifier():
            return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))

        def regressor():
            return nn.Linear(3, 1)

        def not_a_module():
            return 42

        def wrong_width():
            return nn.Linear(5, 4)
    """))
    (package / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "usernets"
    for name in [m for m in sys.modules if m.startswith("usernets")]:
        del sys.modules[name]


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_classification_with_a_seeded_validation_split(tmp_path, user_module):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 4, size=50)
    path = _npz(tmp_path / "d.npz", X=X, y=y)
    a = user_workload("usernets.models:classifier", path, seed=1)
    b = user_workload("usernets.models:classifier", path, seed=1)
    assert a.task == "classification" and a.n_train == 40 and a.n_val == 10
    assert torch.equal(a.X_train, b.X_train)
    # the split is a partition of the rows given
    rows = sorted(map(tuple, torch.cat([a.X_train, a.X_val]).double().numpy().round(5).tolist()))
    assert rows == sorted(map(tuple, X.round(5).tolist()))
    model = a.make_model()
    assert a.loss_fn(model(a.X_train), a.y_train).ndim == 0


def test_npz_with_validation_arrays_and_regression(tmp_path, user_module):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path / "r.npz", X=rng.normal(size=(20, 3)), y=rng.normal(size=20),
                X_val=rng.normal(size=(5, 3)), y_val=rng.normal(size=5))
    workload = user_workload("usernets.models:regressor", path, dtype=torch.float64)
    assert workload.task == "regression" and workload.y_train.shape == (20, 1) and workload.n_val == 5
    assert workload.X_train.dtype == torch.float64


def test_csv_with_header_names_the_target(tmp_path, user_module):
    path = tmp_path / "d.csv"
    path.write_text("a,y,b,c\n" + "".join(f"{i},{i % 4},{i * 0.5},{-i}\n" for i in range(10)))
    arrays = load_arrays(path)
    assert arrays["y"].dtype == np.int64 and arrays["y"].tolist() == [i % 4 for i in range(10)]
    assert arrays["X"][:, 0].tolist() == list(range(10)) and arrays["X"].shape == (10, 3)
    assert user_workload("usernets.models:classifier", path).task == "classification"


def test_csv_without_header_takes_the_last_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,0.5\n3,4,1.5\n")
    arrays = load_arrays(path)
    assert arrays["X"].tolist() == [[1, 2], [3, 4]] and arrays["y"].tolist() == [0.5, 1.5]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.npz", "does not exist"),
    (lambda p: _npz(p / "short.npz", X=np.zeros((5, 3)), y=np.zeros(4)), "X has 5 samples but y has 4"),
    (lambda p: _npz(p / "nan.npz", X=np.array([[0.0, np.nan, 1.0]] * 3), y=np.zeros(3)), "X contains NaN or inf"),
    (lambda p: _npz(p / "noy.npz", X=np.zeros((3, 3))), "has no array 'y'"),
    (lambda p: _npz(p / "half.npz", X=np.zeros((3, 3)), y=np.zeros(3), X_val=np.zeros((2, 3))), "both X_val and y_val"),
    (lambda p: (p / "d.txt").write_text("x") and p / "d.txt", "must be .npz or .csv"),
    (lambda p: (p / "bad.csv").write_text("1,2\n3,x\n") and p / "bad.csv", "not a number"),
    (lambda p: (p / "ragged.csv").write_text("1,2,3\n3,4\n") and p / "ragged.csv", "line 2 has 2 columns"),
    (lambda p: (p / "nan.csv").write_text("1,nan,3\n3,4,5\n") and p / "nan.csv", "contains NaN"),
])
def test_bad_data_is_one_line_naming_the_problem(tmp_path, make, message):
    with pytest.raises(UserInputError, match=message) as info:
        load_arrays(make(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec, message", [
    ("usernets.models", "must look like package.module:factory"),
    ("usernets.nothere:f", "cannot import model module 'usernets.nothere'"),
    ("usernets.broken:f", "importing model module 'usernets.broken' failed: RuntimeError: boom at import"),
    ("usernets.models:nope", "has no attribute 'nope'"),
])
def test_bad_factory_is_one_line_naming_the_problem(user_module, spec, message):
    with pytest.raises(UserInputError, match=message):
        load_factory(spec)


@pytest.mark.parametrize("factory, message", [
    ("not_a_module", "returned int, not a torch.nn.Module"),
    ("wrong_width", "the model cannot take X"),
    ("regressor", "labels need 4 class scores"),
])
def test_model_that_does_not_fit_the_data(tmp_path, user_module, factory, message):
    path = _npz(tmp_path / "d.npz", X=np.zeros((10, 3)), y=np.arange(10) % 4)
    with pytest.raises(UserInputError, match=message):
        user_workload(f"usernets.models:{factory}", path)


def test_probing_the_factory_leaves_the_global_rng_alone(tmp_path, user_module):
    path = _npz(tmp_path / "d.npz", X=np.zeros((10, 3)), y=np.arange(10) % 4)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    user_workload("usernets.models:classifier", path)
    assert torch.equal(torch.rand(3), expected)


def test_resolve_workload_from_a_saved_spec(tmp_path, user_module):
    assert resolve_workload({"workload": "lecture", "seed": 0}).name == "lecture"
    assert resolve_workload({}).name == "stall"
    with pytest.raises(UserInputError, match="--model needs --data"):
        resolve_workload({"model": "usernets.models:classifier"})
    with pytest.raises(UserInputError, match="--data needs --model"):
        resolve_workload({"data": str(tmp_path / "d.npz")})
