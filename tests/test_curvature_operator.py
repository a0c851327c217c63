"""HessianOperator against the exact Hessian of the mean loss (torch.func.hessian), float64."""

import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from descentlab.curvature import HessianOperator, lanczos

F64 = torch.float64


def exact_hessian(model, loss_fn, X, y, names=None):
    """The oracle: torch.func.hessian of the all-data mean loss in the flat parameters."""
    named = {n: p.detach() for n, p in model.named_parameters()}
    names = names or list(named)
    shapes = [named[n].shape for n in names]
    sizes = [named[n].numel() for n in names]

    def f(flat):
        parts = torch.split(flat, sizes)
        state = {**named, **{n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}}
        return loss_fn(functional_call(model, state, (X,)), y)

    flat = torch.cat([named[n].reshape(-1) for n in names])
    return torch.func.hessian(f)(flat), f, flat


def mlp():
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Softplus(), nn.Linear(6, 3)).to(F64)


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)
    ).to(F64)


def classification(n=1000, shape=(5,)):
    X = torch.randn(n, *shape, dtype=F64)
    y = torch.randint(0, 3, (n,))
    return X, y


def batches(X, y, size=300):
    return [(X[i : i + size], y[i : i + size]) for i in range(0, len(X), size)]


_ORACLES = {}


def oracle(make, shape):
    """One model, data set and exact Hessian per architecture, shared by the modes below."""
    if make not in _ORACLES:
        torch.manual_seed(0)
        model = make()
        X, y = classification(1000, shape)
        _ORACLES[make] = (model, X, y, *exact_hessian(model, nn.functional.cross_entropy, X, y))
    return _ORACLES[make]


@pytest.mark.parametrize("make, shape", [(mlp, (5,)), (cnn, (1, 6, 6))])
@pytest.mark.parametrize("mode", ["one batch", "streamed", "forward-over-reverse", "cached batches"])
def test_hvp_matches_exact_hessian_with_uneven_batches(make, shape, mode):
    model, X, y, H, f, flat = oracle(make, shape)
    loss_fn = nn.functional.cross_entropy
    if mode == "one batch":
        op = HessianOperator(model, loss_fn, (X, y))
    else:  # 300, 300, 300, 100: unequal sizes must be weighted by size
        streamed = "forward-over-reverse" if mode == "forward-over-reverse" else "double-backward"
        op = HessianOperator(model, loss_fn, batches(X, y), cache_graph=(mode == "cached batches"), streamed=streamed)
    assert op.shape == (flat.numel(), flat.numel()) and op.n_params == flat.numel()
    assert op.n_samples == 1000
    v = torch.randn(op.n_params, dtype=F64)
    torch.testing.assert_close(op @ v, H @ v, atol=1e-10, rtol=0)
    torch.testing.assert_close(op.matvec(v), H @ v, atol=1e-10, rtol=0)
    V = torch.randn(op.n_params, 5, dtype=F64)
    torch.testing.assert_close(op @ V, H @ V, atol=1e-10, rtol=0)
    torch.testing.assert_close(op.loss(), f(flat), atol=1e-12, rtol=0)
    torch.testing.assert_close(op.gradient(), torch.func.grad(f)(flat), atol=1e-12, rtol=0)


def test_dense_is_the_exact_hessian_and_refuses_above_its_limit():
    model = mlp()
    X, y = classification(400)
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y), chunk_size=16)
    torch.testing.assert_close(op.dense(), H, atol=1e-10, rtol=0)
    small = HessianOperator(model, nn.functional.cross_entropy, (X, y), dense_limit=10)
    with pytest.raises(ValueError, match="dense_limit"):
        small.dense()


@pytest.mark.parametrize("make, shape", [(mlp, (5,)), (cnn, (1, 6, 6))])
def test_dense_by_blocks_over_uneven_batches_is_exact_and_exactly_symmetric(make, shape):
    # dense() builds H block by block over parameter tensors (curvature.dense), only the
    # blocks on and below the diagonal computed; the oracle is torch.func.hessian
    model, X, y, H, _, _ = oracle(make, shape)
    op = HessianOperator(model, nn.functional.cross_entropy, batches(X, y, 300), chunk_size=5)
    dense = op.dense()
    torch.testing.assert_close(dense, H, atol=1e-10, rtol=0)
    assert torch.equal(dense, dense.T)


def test_dense_of_a_loss_linear_in_one_parameter():
    # the bias enters linearly and the loss is linear in the output: its gradient is a
    # constant (no graph), so its rows and columns are exactly zero
    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, dtype=F64))
            self.b = nn.Parameter(torch.randn(1, dtype=F64))

        def forward(self, x):
            return torch.tanh(x @ self.w) + self.b

    model = Affine()
    X, y = torch.randn(20, 3, dtype=F64), torch.zeros(20, dtype=F64)
    loss_fn = lambda out, target: (out - target).mean()  # noqa: E731
    H, _, _ = exact_hessian(model, loss_fn, X, y)
    dense = HessianOperator(model, loss_fn, (X, y)).dense()
    torch.testing.assert_close(dense, H, atol=1e-12, rtol=0)
    assert dense[3].abs().max() == 0 and dense[:, 3].abs().max() == 0


def test_dataloader_and_generator_give_the_same_operator():
    model = mlp()
    X, y = classification(250)
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=64)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=F64)
    for data in (loader, (b for b in batches(X, y, 64))):
        op = HessianOperator(model, nn.functional.cross_entropy, data)
        torch.testing.assert_close(op @ v, H @ v, atol=1e-10, rtol=0)
        torch.testing.assert_close(op @ v, H @ v, atol=1e-10, rtol=0)  # the data can be re-read


def test_params_select_a_layer_frozen_and_unused_parameters():
    model = mlp()
    X, y = classification(200)
    loss_fn = nn.functional.cross_entropy
    names = ["2.weight", "2.bias"]
    H_layer, _, _ = exact_hessian(model, loss_fn, X, y, names)
    for params in (["2"], names, [model[2].weight, model[2].bias]):
        op = HessianOperator(model, loss_fn, (X, y), params=params)
        assert op.names == tuple(names)
        torch.testing.assert_close(op.dense(), H_layer, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="params"):
        HessianOperator(model, loss_fn, (X, y), params=["nope"])

    model[0].bias.requires_grad_(False)  # frozen: left out unless named
    op = HessianOperator(model, loss_fn, (X, y))
    assert "0.bias" not in op.names
    model[0].bias.requires_grad_(True)

    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()
            self.unused = nn.Linear(2, 2).to(F64)

        def forward(self, x):
            return self.net(x)

    wrapped = WithUnused()
    wrapped.net.load_state_dict(model.state_dict())
    op = HessianOperator(wrapped, loss_fn, (X, y))
    full = op.dense()
    n_net = sum(p.numel() for p in model.parameters())
    H, _, _ = exact_hessian(model, loss_fn, X, y)
    torch.testing.assert_close(full[:n_net, :n_net], H, atol=1e-10, rtol=0)
    assert full[n_net:].abs().max() == 0 and full[:, n_net:].abs().max() == 0
    streamed = HessianOperator(wrapped, loss_fn, batches(X, y, 64))
    v = torch.randn(op.n_params, dtype=F64)
    torch.testing.assert_close(streamed @ v, full @ v, atol=1e-10, rtol=0)


def test_operator_snapshots_parameters():
    model = mlp()
    X, y = classification(100)
    op = HessianOperator(model, nn.functional.cross_entropy, batches(X, y, 40))
    v = torch.randn(op.n_params, dtype=F64)
    before = op @ v
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.testing.assert_close(op @ v, before, atol=0, rtol=0)
    torch.testing.assert_close(op.unflatten(op.point)["0.weight"], model[0].weight.detach() - 1.0)


def test_training_mode_with_dropout_warns_and_uses_eval_mode():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 2)).to(F64)
    X, y = torch.randn(50, 4, dtype=F64), torch.randint(0, 2, (50,))
    model.train()
    with pytest.warns(UserWarning, match="eval"):
        op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    assert model.training  # the model's own mode is left as it was
    model.eval()
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    model.train()
    torch.testing.assert_close(op.dense(), H, atol=1e-10, rtol=0)
    assert model.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HessianOperator(model, nn.functional.cross_entropy, (X, y), eval_mode=True)
        model.eval()
        HessianOperator(model, nn.functional.cross_entropy, (X, y))


class Lecture(nn.Module):
    """y = w1 * w2 * x, the lecture's example."""

    def __init__(self, w1, w2):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w1, w2], dtype=F64))

    def forward(self, x):
        return self.w[0] * self.w[1] * x


@pytest.mark.parametrize("point, eigenvalues", [((0.0, 0.0), [-2.0, 2.0]), ((1.0, 1.0), [0.0, 4.0])])
def test_lecture_example(point, eigenvalues):
    x = y = torch.ones(1, dtype=F64)
    op = HessianOperator(Lecture(*point), nn.functional.mse_loss, (x, y))
    w1, w2 = point
    # L = (1 - w1 w2)^2: H = [[2 w2^2, 4 w1 w2 - 2], [4 w1 w2 - 2, 2 w1^2]], written out
    closed_form = torch.tensor([[2 * w2**2, 4 * w1 * w2 - 2], [4 * w1 * w2 - 2, 2 * w1**2]], dtype=F64)
    torch.testing.assert_close(op.dense(), closed_form, atol=1e-14, rtol=0)
    torch.testing.assert_close(torch.linalg.eigvalsh(op.dense()), torch.tensor(eigenvalues, dtype=F64))
    both = lanczos(op, k=2, which="BE")
    torch.testing.assert_close(both.values, torch.tensor(eigenvalues, dtype=F64), atol=1e-12, rtol=0)
    if point == (0.0, 0.0):  # the escape direction is (1, 1)/sqrt(2)
        u = lanczos(op, k=1, which="SA").vectors[:, 0]
        torch.testing.assert_close(u.abs(), torch.full((2,), 0.5**0.5, dtype=F64))
        assert u[0] * u[1] > 0


def test_bad_arguments_raise_value_error_naming_them():
    model = mlp()
    X, y = classification(20)
    with pytest.raises(ValueError, match="data"):
        HessianOperator(model, nn.functional.cross_entropy, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        HessianOperator(model, nn.functional.cross_entropy, (X, y), chunk_size=0)
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    with pytest.raises(ValueError, match="shape"):
        op @ torch.ones(3, dtype=F64)
