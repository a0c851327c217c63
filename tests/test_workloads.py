"""Built-in workloads: the data splits, the models, the losses, and the stall preset's saddle."""

import math

import numpy as np
import pytest
import torch

from descentlab.errors import UserInputError
from descentlab.problems.workloads import WORKLOADS, Workload, get_workload


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_workload_trains_one_step(name):
    workload = get_workload(name)
    assert isinstance(workload, Workload) and workload.name == name and workload.description == WORKLOADS[name]
    assert len(workload.X_train) == len(workload.y_train) and len(workload.X_val) == len(workload.y_val)
    assert workload.X_train.dtype == torch.float32
    model = workload.make_model()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    out = model(workload.X_train)
    loss = workload.loss_fn(out, workload.y_train)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    if workload.task == "classification":
        assert workload.y_train.dtype == torch.long and out.shape == (len(workload.X_train), int(workload.y_train.max()) + 1)
        if name == "eos":  # Cohen et al.'s squared error to the one-hot labels, halved, summed over classes
            manual = 0.5 * ((out - torch.eye(out.shape[1])[workload.y_train]) ** 2).sum(1).mean()
        elif name == "wilson":  # least squares on the labels +-1 of the score f = out[:, 1] (out[:, 0] = -f)
            assert torch.equal(out[:, 0], -out[:, 1])
            manual = 0.5 * ((out[:, 1] - (2.0 * workload.y_train - 1)) ** 2).mean()
        else:  # mean over the batch: the same as torch's cross-entropy written out
            manual = -torch.log_softmax(out, 1).gather(1, workload.y_train[:, None]).mean()
    else:
        assert out.shape == workload.y_train.shape
        manual = ((out - workload.y_train) ** 2).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    assert name in repr(workload) and "tensor(" not in repr(workload)


def test_dtype_seed_and_model_init_follow_the_caller():
    a = get_workload("moons", seed=1, dtype=torch.float64)
    b = get_workload("moons", seed=1, dtype=torch.float64)
    c = get_workload("moons", seed=2, dtype=torch.float64)
    assert a.X_train.dtype == torch.float64 and torch.equal(a.X_train, b.X_train)
    assert not torch.equal(a.X_train, c.X_train)
    torch.manual_seed(5)
    m1 = a.make_model()
    torch.manual_seed(5)
    m2 = a.make_model()
    m3 = a.make_model()
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(m2.parameters(), m3.parameters()))
    assert next(m1.parameters()).dtype == torch.float64


def test_bad_arguments_name_the_argument():
    with pytest.raises(UserInputError, match="unknown workload 'nope'"):
        get_workload("nope")
    with pytest.raises(ValueError, match="dtype"):
        get_workload("lecture", dtype=torch.int64)
    with pytest.raises(ValueError, match="seed"):
        get_workload("lecture", seed=-1)


def test_digits_split_is_stratified_and_standardised_against_sklearn():
    from sklearn.datasets import load_digits

    digits = load_digits()
    workload = get_workload("digits-mlp", seed=0, dtype=torch.float64)
    assert workload.n_train + workload.n_val == len(digits.target) == 1797
    assert workload.n_val == 360
    # stratified: each class's share of the validation set within one image of its share overall
    counts = np.bincount(workload.y_val.numpy(), minlength=10)
    expected = np.bincount(digits.target) * 360 / 1797
    assert np.all(np.abs(counts - expected) <= 1)
    X = workload.X_train.numpy()
    varying = digits.data.std(axis=0) > 0
    assert np.allclose(X.mean(axis=0), 0, atol=1e-10)
    assert np.allclose(X.std(axis=0)[X.std(axis=0) > 0], 1)
    assert (X.std(axis=0) > 0).sum() <= varying.sum()
    cnn = get_workload("digits-cnn", seed=0, dtype=torch.float64)
    assert cnn.X_train.shape[1:] == (1, 8, 8) and torch.equal(cnn.X_train.reshape(-1, 64), workload.X_train)


def test_lecture_loss_gradient_and_hessian_match_the_lecture():
    workload = get_workload("lecture", dtype=torch.float64)
    model = workload.make_model()
    assert sorted(n for n, _ in model.named_parameters()) == ["w1", "w2"]

    def loss_at(w):
        with torch.no_grad():
            model.w1.fill_(w[0])
            model.w2.fill_(w[1])
        return workload.loss_fn(model(workload.X_train), workload.y_train)

    for w1, w2 in [(0.0, 0.0), (1.0, 1.0), (0.5, 0.5), (2.0, -0.3)]:
        assert loss_at((w1, w2)).item() == pytest.approx((1 - w1 * w2) ** 2)

    def f(w):
        return workload.loss_fn(w[0] * w[1] * workload.X_train, workload.y_train)

    H = torch.autograd.functional.hessian(f, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(H, torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=torch.float64))


def _train_full_batch(workload, steps):
    torch.manual_seed(0)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = workload.loss_fn(model(workload.X_train), workload.y_train)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


def test_stall_preset_plateaus_at_ln10_then_leaves_by_itself():
    workload = get_workload("stall")
    assert workload.optimizer == "sgd" and workload.batch_size is None
    _, losses = _train_full_batch(workload, 400)
    # 200 steps of plain SGD barely move the loss off ln(10), the loss of a uniform guess ...
    assert max(abs(loss - math.log(10)) for loss in losses[:200]) < 1e-3
    assert (losses[0] - losses[199]) / losses[0] < 1e-3
    # ... yet it is no minimum: the same run leaves the plateau on its own later
    assert losses[-1] < 2.1


def test_stall_origin_has_the_negative_curvature_of_the_closed_form():
    """At the origin the loss of ``W2 tanh(W1 x)`` is L0 + <C, W2 W1> + ..., with C = E[(p - onehot) x^T];
    along W1 = t a v^T, W2 = -t u a^T (u, v the top singular pair of C) the loss drops as -sigma t^2,
    so the Hessian has the eigenvalue -sigma_max(C) (per unit step in parameter space)."""
    workload = get_workload("stall", dtype=torch.float64)
    model = workload.make_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    X, y = workload.X_train, workload.y_train
    onehot = torch.nn.functional.one_hot(y, 10).to(X.dtype)
    C = ((0.1 - onehot).T @ X) / len(X)
    U, S, Vh = torch.linalg.svd(C)
    first, _, second = model[0], model[1], model[2]
    a = torch.zeros(first.out_features, dtype=X.dtype)
    a[0] = 1.0
    direction = {
        first.weight: torch.outer(a, Vh[0]) / math.sqrt(2),
        second.weight: -torch.outer(U[:, 0], a) / math.sqrt(2),
    }
    params = list(model.parameters())
    loss = workload.loss_fn(model(X), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v = [direction.get(p, torch.zeros_like(p)) for p in params]
    gv = sum((g * vi).sum() for g, vi in zip(grads, v))
    hv = torch.autograd.grad(gv, params)
    curvature = sum((h * vi).sum() for h, vi in zip(hv, v)).item()
    assert curvature == pytest.approx(-S[0].item(), rel=1e-8)
    assert curvature < -0.5
