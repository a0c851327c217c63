"""The data layer (EmpiricalLoss) under every curvature quantity: weighting by the loss's
reduction, loaders that change between passes, the eval-mode policy, scipy export, threads."""

import warnings

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch
from torch import nn

from descentlab.curvature import EmpiricalLoss, HessianOperator, lanczos
from descentlab.landscape import evaluate_losses, flatten

from test_curvature_operator import batches, classification, exact_hessian, mlp

F64 = torch.float64


def loader(X, y, **options):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), **options)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_sum_reduced_loss_over_batches_is_the_loss_of_all_data_as_one_batch(reduction):
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(250)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    # the oracle: the same loss on all the data at once (a sum over 250 samples, or their mean)
    H, f, flat = exact_hessian(model, loss_fn, X, y)
    for data in (batches(X, y, 64), loader(X, y, batch_size=64),
                 batches(X, y, 64)[:1] + batches(X, y, 64)[1:]):
        op = HessianOperator(model, loss_fn, data)
        assert op.reduction == reduction  # measured on a split batch, not read from the module
        torch.testing.assert_close(op.loss(), f(flat), atol=1e-10, rtol=0)
        v = torch.randn(op.n_params, dtype=F64)
        torch.testing.assert_close(op @ v, H @ v, atol=1e-9, rtol=0)
    # a lambda has no `reduction` attribute: the measurement is all there is
    summed = HessianOperator(model, lambda o, t: nn.functional.cross_entropy(o, t, reduction=reduction),
                             batches(X, y, 100))
    torch.testing.assert_close(summed.loss(), f(flat), atol=1e-10, rtol=0)


def test_a_loss_that_is_neither_a_mean_nor_a_sum_is_refused_unless_told():
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(200)
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 0.2], dtype=F64))  # a weighted mean
    with pytest.raises(ValueError, match="neither a mean nor a sum.*reduction='mean'"):
        HessianOperator(model, weighted, batches(X, y, 50))
    HessianOperator(model, weighted, (X, y))  # one batch: nothing to combine, exact as it is
    op = HessianOperator(model, weighted, batches(X, y, 50), reduction="mean")
    assert op.reduction == "mean"
    with pytest.raises(ValueError, match="reduction"):
        HessianOperator(model, weighted, (X, y), reduction="average")
    with pytest.raises(ValueError, match="reduction='none'"):
        HessianOperator(model, nn.CrossEntropyLoss(reduction="none"), (X, y))


def test_zero_loss_batches_still_reveal_the_reduction():
    # a perfect fit: every per-sample loss is 0, so the split test probes perturbed outputs
    model = nn.Linear(3, 2).to(F64)
    X = torch.randn(40, 3, dtype=F64)
    with torch.no_grad():
        y = model(X)
    op = HessianOperator(model, nn.MSELoss(reduction="sum"), batches(X, y, 10))
    assert op.reduction == "sum"
    H, _, _ = exact_hessian(model, nn.MSELoss(reduction="sum"), X, y)
    torch.testing.assert_close(op.dense(), H, atol=1e-10, rtol=0)


def test_a_loader_whose_samples_change_between_passes_is_an_error_naming_the_fix():
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(250)
    changing = loader(X, y, batch_size=64, shuffle=True, drop_last=True)
    op = HessianOperator(model, nn.functional.cross_entropy, changing)
    v = torch.randn(op.n_params, dtype=F64)
    with pytest.raises(ValueError, match="shuffle=False.*drop_last=False"):
        for _ in range(5):  # the first product's pass differs from construction's almost surely
            op @ v

    # shuffling alone keeps the samples: the same operator on every pass, within rounding
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    op = HessianOperator(model, nn.functional.cross_entropy, loader(X, y, batch_size=64, shuffle=True))
    for _ in range(3):
        torch.testing.assert_close(op @ v, H @ v, atol=1e-10, rtol=0)

    class Augmented(torch.utils.data.Dataset):  # random noise on every read
        def __len__(self):
            return 100

        def __getitem__(self, i):
            return X[i] + 0.01 * torch.randn(5, dtype=F64), y[i]

    op = HessianOperator(model, nn.functional.cross_entropy, torch.utils.data.DataLoader(Augmented(), batch_size=50))
    with pytest.raises(ValueError, match="random transforms"):
        op.loss()


class CountsCalls(nn.Module):
    """A module of the user's own whose forward reads ``self.training`` (not a known layer)."""

    def forward(self, x):
        return x * (2.0 if self.training else 1.0)


class HandWrittenDropout(nn.Module):
    """Dropout as attention code writes it: a functional call with ``p if self.training else 0``."""

    def forward(self, x):
        return nn.functional.dropout(x, p=0.5 if self.training else 0.0)


def test_every_module_is_evaluated_in_eval_mode_and_each_keeps_its_own_mode():
    """The policy: every module in eval mode while evaluating (a user's module reading
    ``self.training`` included), each one's own flag restored afterwards. The oracle: the same
    model put in eval mode as a whole by hand."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.BatchNorm1d(6), CountsCalls(), HandWrittenDropout(),
                          nn.Tanh(), nn.Linear(6, 2)).to(F64)
    X, y = torch.randn(50, 4, dtype=F64), torch.randint(0, 2, (50,))
    model.train()
    model[2].eval()  # the user froze the batch-norm's statistics, the rest stays in training
    modes = [m.training for m in model.modules()]
    with pytest.warns(UserWarning, match="Dropout"):
        op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    dense = op.dense()
    assert [m.training for m in model.modules()] == modes
    model.eval()
    H, f, flat = exact_hessian(model, nn.functional.cross_entropy, X, y)
    loss = f(flat)
    for m, training in zip(model.modules(), modes):
        m.training = training
    torch.testing.assert_close(dense, H, atol=1e-10, rtol=0)
    # deterministic: the hand-written dropout is off too, so two evaluations agree to the bit
    assert torch.equal(op.loss(), op.loss()) and float(op.loss()) == pytest.approx(float(loss), abs=1e-12)

    # the landscape goes through the same policy: every submodule keeps its own mode
    center = flatten(model)
    losses = evaluate_losses(model, nn.functional.cross_entropy, (X, y), center, torch.zeros(1, center.numel(),
                             dtype=F64), torch.zeros(1, 1, dtype=F64))
    assert [m.training for m in model.modules()] == modes
    torch.testing.assert_close(losses[0], op.loss(), atol=1e-12, rtol=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EmpiricalLoss(model, nn.functional.cross_entropy, (X, y), eval_mode=True)


def test_the_live_loss_reads_the_model_as_it_is_now_in_the_same_modes():
    """``live_loss()`` is the loss at the model's current parameters, not at the snapshot: the
    oracle is the model put in eval mode by hand (batch-norm's running statistics and the user's
    own mode-reading modules), before and after an in-place step; the model's modes, buffers and
    torch's generator are left as they were."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.BatchNorm1d(6), CountsCalls(), HandWrittenDropout(),
                          nn.Tanh(), nn.Linear(6, 2)).to(F64)
    X, y = torch.randn(50, 4, dtype=F64), torch.randint(0, 2, (50,))
    model.train()
    loss = EmpiricalLoss(model, nn.functional.cross_entropy, batches(X, y, 16), eval_mode=True)

    def by_hand():
        model.eval()
        with torch.no_grad():
            value = nn.functional.cross_entropy(model(X), y)
        model.train()
        return float(value)

    state, rng = {k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state()
    live = float(loss.live_loss())
    assert live == pytest.approx(by_hand(), abs=1e-12) and live == pytest.approx(float(loss.loss()), abs=1e-12)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(rng, torch.get_rng_state()) and all(m.training for m in model.modules())
    with torch.no_grad():
        model[0].weight.mul_(3.0)  # an optimizer step, in place: the snapshot keeps the old weights
    assert float(loss.live_loss()) == pytest.approx(by_hand(), abs=1e-12)
    assert abs(float(loss.live_loss()) - float(loss.loss())) > 1e-3


def test_to_scipy_gives_eigsh_the_same_operator():
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(300)
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    A = op.to_scipy()
    assert A.shape == op.shape and A.dtype == np.float64
    v = np.random.default_rng(0).standard_normal((op.n_params, 3))
    np.testing.assert_allclose(A @ v, (op @ torch.from_numpy(v)).numpy(), atol=1e-12)
    np.testing.assert_allclose(A @ v[:, 0], (op @ torch.from_numpy(v[:, 0])).numpy(), atol=1e-12)
    eig = torch.linalg.eigvalsh(op.dense())
    theirs = np.sort(sla.eigsh(A, k=3, which="LA", tol=1e-10, v0=np.ones(op.n_params))[0])[::-1]
    np.testing.assert_allclose(theirs, eig.flip(0)[:3].numpy(), rtol=1e-8)
    np.testing.assert_allclose(lanczos(op, k=3).values.numpy(), theirs, rtol=1e-8)


def test_products_restore_the_users_thread_count():
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(100)
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        op @ torch.randn(op.n_params, dtype=F64)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert op.work == pytest.approx(2 * 100 * (5 * 7 + 7 + 7 * 6 + 6 + 6 * 3 + 3))  # 2 x params x samples


def test_loss_at_other_points_and_many_points_at_once():
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(120)
    risk = EmpiricalLoss(model, nn.functional.cross_entropy, batches(X, y, 50))
    _, f, flat = exact_hessian(model, nn.functional.cross_entropy, X, y)
    points = flat + 0.1 * torch.randn(4, flat.numel(), dtype=F64)
    torch.testing.assert_close(risk.losses(points), torch.stack([f(p) for p in points]), atol=1e-12, rtol=0)
    torch.testing.assert_close(risk(points[0]), f(points[0]), atol=1e-12, rtol=0)
    loss, grad = risk.loss_and_gradient()
    torch.testing.assert_close(grad, torch.func.grad(f)(flat), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="points"):
        risk.losses(flat)


def test_the_quantity_at_a_point_the_model_no_longer_holds_and_per_batch_gradients():
    """``at``: the loss and gradient at saved parameters, the model itself untouched; ``gradients``:
    one row per given batch, each that batch's own mean loss's gradient (oracle: torch.func.grad of
    the written-out loss); ``one_batch``: the data as one pair."""
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(120)
    risk = EmpiricalLoss(model, nn.functional.cross_entropy, batches(X, y, 50))
    _, f, flat = exact_hessian(model, nn.functional.cross_entropy, X, y)
    saved = flat + 0.05 * torch.randn(flat.numel(), dtype=F64)
    before = [p.detach().clone() for p in model.parameters()]
    there = risk.at(saved)
    loss, grad = there.loss_and_gradient()
    torch.testing.assert_close(loss, f(saved), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, torch.func.grad(f)(saved), atol=1e-12, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    torch.testing.assert_close(risk.at(list(risk.split(saved))).loss(), f(saved), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="point"):
        risk.at(saved[:-1])
    parts = [(X[:7], y[:7]), (X[7:40], y[7:40])]
    rows = risk.gradients(parts)
    for row, (Xb, yb) in zip(rows, parts):
        _, fb, _ = exact_hessian(model, nn.functional.cross_entropy, Xb, yb)
        torch.testing.assert_close(row, torch.func.grad(fb)(flat), atol=1e-12, rtol=0)
    Xa, ya = risk.one_batch()
    assert torch.equal(Xa, X) and torch.equal(ya, y)
    streamed = EmpiricalLoss(model, nn.functional.cross_entropy, loader(X, y, batch_size=50))
    with pytest.raises(ValueError, match="memory"):
        streamed.one_batch()
