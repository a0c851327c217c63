"""dense()'s shortcut for an nn.Linear block against torch.func.hessian, and its refusals."""

import pytest
import torch
from torch import nn

from descentlab.curvature import HessianOperator
from descentlab.curvature.linear_block import kronecker_block
from test_curvature_operator import batches, classification, cnn, exact_hessian, mlp

F64 = torch.float64


@pytest.mark.parametrize("with_bias", [True, False])
def test_kronecker_block_is_the_written_out_sum_over_samples(with_bias):
    # oracle: Σ_n A_n ⊗ a_n a_nᵀ entry by entry with einsum, then the layer's order
    # (weight row-major, then bias) by explicit index bookkeeping
    torch.manual_seed(0)
    d_out, m, d_in = 4, 23, 3
    A = torch.randn(d_out, m, d_out, dtype=F64)
    A = (A + A.permute(2, 1, 0)) / 2
    a = torch.randn(m, d_in, dtype=F64)
    ext = torch.cat([a, torch.ones(m, 1, dtype=F64)], dim=1) if with_bias else a
    full = torch.einsum("inj,nk,nl->ikjl", A, ext, ext)  # (i, k, j, l)
    d = ext.shape[1]
    index = [(i, k) for i in range(d_out) for k in range(d_in)] + ([(i, d_in) for i in range(d_out)] if with_bias else [])
    expected = torch.tensor([[float(full[i, k, j, l]) for (j, l) in index] for (i, k) in index], dtype=F64)
    assert d == d_in + with_bias
    torch.testing.assert_close(kronecker_block(A, a, with_bias), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("make, shape, layer", [(mlp, (5,), "2"), (cnn, (1, 6, 6), "4")])
def test_dense_with_the_linear_shortcut_is_exact_over_uneven_batches(make, shape, layer):
    torch.manual_seed(0)
    model = make()
    X, y = classification(1000, shape)
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    op = HessianOperator(model, nn.functional.cross_entropy, batches(X, y, 300))
    dense = op.dense()
    assert op.dense_layer == layer  # the shortcut was taken, not silently skipped
    torch.testing.assert_close(dense, H, atol=1e-10, rtol=0)
    assert torch.equal(dense, dense.T)
    op.dense(linear_shortcut=False)
    assert op.dense_layer is None


def test_the_shortcut_survives_an_in_place_activation_after_the_layer():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3)).to(F64)
    X, y = classification(300, (5,))
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    torch.testing.assert_close(op.dense(), H, atol=1e-12, rtol=0)
    assert op.dense_layer == "0"


def test_the_shortcut_covers_a_bias_free_layer_and_a_parameter_subset():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.Tanh(), nn.Linear(5, 3)).to(F64)
    X, y = classification(200, (6,))
    names = ["0.weight", "2.bias"]
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y, names)
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y), params=names)
    torch.testing.assert_close(op.dense(), H, atol=1e-12, rtol=0)
    assert op.dense_layer == "0"


class _Tied(nn.Module):
    """An autoencoder-like net whose decoder reuses the encoder's weight, transposed."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 3)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.enc(x))
        return self.out(torch.tanh(h @ self.enc.weight))


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(torch.tanh(self.layer(x)))))


class _Mixing(nn.Module):
    """Samples interact: each hidden unit is centred over the batch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2, bias=False)

    def forward(self, x):
        z = self.layer(x)
        return self.head(torch.tanh(z - z.mean(0)) ** 2)


@pytest.mark.parametrize("make", [_Tied, _Twice, _Mixing])
def test_where_the_premises_fail_dense_falls_back_and_stays_exact(make):
    torch.manual_seed(2)
    model = make().to(F64)
    X, y = torch.randn(64, 4, dtype=F64), torch.randint(0, 2, (64,))
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    # one batch: with batches, _Mixing's operator is (rightly) the mean of per-batch Hessians
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    dense = op.dense()
    assert op.dense_layer is None
    torch.testing.assert_close(dense, H, atol=1e-12, rtol=0)


def test_a_batch_too_big_for_the_output_hessians_takes_the_general_method(monkeypatch):
    from descentlab.curvature import hessian as operator

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(F64)
    X, y = classification(300, (5,))
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    monkeypatch.setattr(operator, "OUTPUT_HESSIANS_LIMIT", 7 * 7 * 300 - 1)  # one element short
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    torch.testing.assert_close(op.dense(), H, atol=1e-12, rtol=0)
    assert op.dense_layer is None
    monkeypatch.setattr(operator, "OUTPUT_HESSIANS_LIMIT", 7 * 7 * 300)
    op.dense()
    assert op.dense_layer == "0"
