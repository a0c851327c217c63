"""GGNOperator and the split H = GGN + residual against dense torch.func builds (float64)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from descentlab.curvature import GGNOperator, HessianOperator, lanczos, residual_operator, split_curvature

from test_curvature_operator import batches, classification, cnn, exact_hessian, mlp

F64 = torch.float64


def exact_ggn(model, loss_fn, X, y):
    """The oracle: Jᵀ (∂²ℓ/∂z²) J with J = jacrev of the outputs in the flat parameters and the
    loss Hessian in the outputs, both from torch.func, for the loss of all data as one batch."""
    named = {n: p.detach() for n, p in model.named_parameters()}
    names, shapes, sizes = list(named), [p.shape for p in named.values()], [p.numel() for p in named.values()]
    flat = torch.cat([p.reshape(-1) for p in named.values()])

    def outputs(theta):
        state = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return functional_call(model, state, (X,))

    z = outputs(flat)
    J = jacrev(outputs)(flat).reshape(z.numel(), -1)
    H_out = hessian(lambda out: loss_fn(out.reshape(z.shape), y))(z.reshape(-1))
    return J.T @ H_out @ J


@pytest.mark.parametrize("make, shape", [(mlp, (5,)), (cnn, (1, 6, 6))])
@pytest.mark.parametrize("layout", ["one batch", "uneven batches"])
def test_ggn_matches_the_dense_build_and_is_positive_semidefinite(make, shape, layout):
    torch.manual_seed(0)
    model = make()
    X, y = classification(300, shape)
    G = exact_ggn(model, nn.functional.cross_entropy, X, y)
    data = (X, y) if layout == "one batch" else batches(X, y, 128)  # 128, 128, 44
    op = GGNOperator(model, nn.functional.cross_entropy, data)
    V = torch.randn(op.n_params, 4, dtype=F64)
    torch.testing.assert_close(op @ V, G @ V, atol=1e-11, rtol=0)
    torch.testing.assert_close(op @ V[:, 0], G @ V[:, 0], atol=1e-11, rtol=0)
    dense = op.dense()
    torch.testing.assert_close(dense, G, atol=1e-11, rtol=0)
    # cross-entropy is convex in the logits: G is PSD up to rounding (1e3 eps of its norm)
    eig = torch.linalg.eigvalsh(dense)
    assert eig.min() >= -1e3 * torch.finfo(F64).eps * eig.abs().max()


def test_the_split_adds_up_and_the_residual_carries_the_negative_curvature_at_a_saddle():
    # the lecture's model y = w1 w2 x at the saddle (0, 0): z = 0 for every θ-direction at
    # first order (J = 0), so G = 0 and all of H = [[0, -2x²], [-2x², 0]] is residual
    class Lecture(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2, dtype=F64))

        def forward(self, x):
            return self.w[0] * self.w[1] * x

    x = y = torch.ones(1, dtype=F64)
    H = HessianOperator(Lecture(), nn.functional.mse_loss, (x, y))
    bottom = lanczos(H, k=1, which="SA")
    split = split_curvature(H, bottom.vectors)
    torch.testing.assert_close(split.total, torch.tensor([-2.0], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(split.ggn, torch.zeros(1, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(split.residual_share, torch.ones(1, dtype=F64), atol=1e-12, rtol=0)


def test_hessian_is_ggn_plus_residual_on_a_network_at_a_negative_eigenvalue():
    torch.manual_seed(3)
    model = mlp()
    X, y = classification(200)
    H_exact, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    G_exact = exact_ggn(model, nn.functional.cross_entropy, X, y)
    H = HessianOperator(model, nn.functional.cross_entropy, batches(X, y, 70))
    R = residual_operator(H)
    torch.testing.assert_close(R.dense(), H_exact - G_exact, atol=1e-10, rtol=0)
    eig, vecs = torch.linalg.eigh(H_exact)
    assert eig[0] < 0  # a random-init tanh MLP has negative curvature
    split = split_curvature(H, vecs[:, :2])
    torch.testing.assert_close(split.total, eig[:2], atol=1e-10, rtol=0)
    torch.testing.assert_close(split.ggn, torch.einsum("ik,ij,jk->k", vecs[:, :2], G_exact, vecs[:, :2]),
                               atol=1e-10, rtol=0)
    # G ⪰ 0, so at λ < 0 the residual carries all of λ and cancels the Gauss-Newton part too
    assert (split.ggn >= -1e-12).all() and (split.residual <= split.total).all()
    assert (split.residual_share >= 1).all()
    assert "residual_share" in repr(split)
