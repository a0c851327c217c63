"""Loss landscapes: every slice checked against a closed form or plain, unbatched forwards."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from descentlab.landscape import (
    direction_slice,
    evaluate_losses,
    filter_normalize,
    flatten,
    layout_of,
    line_slice,
    plane,
    project_onto_plane,
    random_direction,
    unflatten,
)

D = torch.float64


class Lecture(nn.Module):
    """y = w1 * w2 * x (the lecture's model), two scalar parameters."""

    def __init__(self, w1=0.0, w2=0.0):
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor(w1, dtype=D))
        self.w2 = nn.Parameter(torch.tensor(w2, dtype=D))

    def forward(self, x):
        return self.w1 * self.w2 * x


def squared_error(output, target):
    return ((output - target) ** 2).mean()


LECTURE_DATA = (torch.ones(1, 1, dtype=D), torch.ones(1, 1, dtype=D))


class Quadratic(nn.Module):
    """L(theta) = 1/2 theta^T A theta, whatever the data (the output is the loss itself)."""

    def __init__(self, A, theta):
        super().__init__()
        self.register_buffer("A", A)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x):
        return (0.5 * self.theta @ self.A @ self.theta).expand(x.shape[0])


def mean_output(output, target):
    return output.mean()


def symmetric_with_mixed_spectrum(n, seed):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D))
    values = torch.tensor([-3.0, -0.5, 0.25, 1.0, 2.0, 4.0][:n], dtype=D)
    return Q @ torch.diag(values) @ Q.T


def test_lecture_grid_is_the_closed_form_everywhere():
    model = Lecture()
    e1, e2 = torch.tensor([1.0, 0.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    grid = plane(model, squared_error, LECTURE_DATA, e1, e2, span=(-2.0, 2.0), span_b=(-1.5, 2.5),
                 resolution=21, chunk_size=50)
    w1, w2 = torch.meshgrid(grid.a, grid.b, indexing="xy")  # rows follow b (= w2)
    expected = (1 - w1 * w2) ** 2
    assert grid.losses.shape == (21, 21)
    torch.testing.assert_close(grid.losses, expected, rtol=0, atol=1e-12)
    assert grid.loss_at_center() == pytest.approx(1.0)


def test_lecture_grid_off_centre_and_in_float32():
    model = Lecture(0.3, -0.7).float()
    center = flatten(model)
    d1, d2 = torch.tensor([0.6, 0.8]), torch.tensor([-1.0, 0.5])
    grid = plane(model, squared_error, tuple(t.float() for t in LECTURE_DATA), d1, d2, resolution=9, span=1.5)
    bb, aa = torch.meshgrid(grid.b, grid.a, indexing="ij")
    w1 = 0.3 + aa * 0.6 + bb * -1.0
    w2 = -0.7 + aa * 0.8 + bb * 0.5
    assert grid.losses.dtype == torch.float32 and torch.equal(center, flatten(model))
    torch.testing.assert_close(grid.losses.double(), (1 - w1 * w2) ** 2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index", range(6))
def test_quadratic_slice_along_eigenvector_is_the_parabola(index):
    A = symmetric_with_mixed_spectrum(6, seed=1)
    eigenvalues, eigenvectors = torch.linalg.eigh(A)  # the oracle
    lam, v = float(eigenvalues[index]), eigenvectors[:, index]
    # At the critical point theta = 0 the slice is exactly 1/2 lambda t^2 ...
    model = Quadratic(A, torch.zeros(6, dtype=D))
    data = (torch.zeros(4, 1, dtype=D), torch.zeros(4, dtype=D))
    line = direction_slice(model, mean_output, data, v, span=2.0, n_points=41)
    torch.testing.assert_close(line.losses, 0.5 * lam * line.t**2, rtol=0, atol=1e-12)
    curvature = 2 * np.polyfit(line.t.numpy(), line.losses.numpy(), 2)[0]
    assert curvature == pytest.approx(lam, abs=1e-9)
    # ... and from any other centre it is L0 + t g.v + 1/2 lambda t^2 with the same curvature.
    theta0 = torch.linspace(-1, 1, 6, dtype=D)
    model = Quadratic(A, theta0)
    line = direction_slice(model, mean_output, data, v, span=(-1.0, 3.0), n_points=17)
    L0, slope = 0.5 * theta0 @ A @ theta0, (A @ theta0) @ v
    torch.testing.assert_close(line.losses, L0 + slope * line.t + 0.5 * lam * line.t**2, rtol=0, atol=1e-12)


def test_line_slice_matches_unbatched_forwards_of_loaded_weights():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    X, y = torch.randn(40, 5, dtype=D), torch.randint(0, 3, (40,))
    start = flatten(model)
    end = start + torch.randn_like(start)
    # data in uneven batches: the mean must weight batches by their size
    batches = [(X[:15], y[:15]), (X[15:], y[15:])]
    line = line_slice(model, nn.functional.cross_entropy, batches, start, end, n_points=7, margin=0.5, chunk_size=3)
    layout = layout_of(model)
    oracle = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    for t, loss in zip(line.t.tolist(), line.losses.tolist()):
        oracle.load_state_dict(unflatten((1 - t) * start + t * end, layout))
        with torch.no_grad():
            assert loss == pytest.approx(float(nn.functional.cross_entropy(oracle(X), y)), rel=1e-12)
    assert line.t[0] == -0.5 and line.t[-1] == 1.5
    assert torch.equal(flatten(model), start)  # the model itself is untouched
    for n_points in (61, 50):  # 61: the grid holds 0 and 1 (to rounding); 50: it misses both, which are added
        t = line_slice(model, nn.functional.cross_entropy, batches, start, end, n_points=n_points, margin=0.25).t
        assert (t == 0).sum() == 1 and (t == 1).sum() == 1 and bool((t[1:] > t[:-1]).all())


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_filter_normalisation_gives_each_filter_the_norm_of_the_weights_filter():
    torch.manual_seed(0)
    model = ConvNet().double()
    with torch.no_grad():  # filters of very different scales, so a wrong norm shows
        model.conv.weight.mul_(torch.tensor([0.01, 0.1, 1.0, 10.0], dtype=D).reshape(4, 1, 1, 1))
    direction = random_direction(model, seed=5)
    parts = unflatten(direction, layout_of(model))
    for module_name, module in (("conv", model.conv), ("fc", model.fc)):
        d = parts[f"{module_name}.weight"]
        for j in range(module.weight.shape[0]):  # one filter = one output channel / neuron
            assert float(d[j].norm()) == pytest.approx(float(module.weight.detach()[j].norm()), rel=1e-9)
    for name in ("conv.bias", "bn.weight", "bn.bias", "fc.bias"):  # Li et al.: ignore biases and BN
        assert torch.count_nonzero(parts[name]) == 0

    kept = unflatten(random_direction(model, seed=5, ignore_bias=False), layout_of(model))
    for name, tensor in (("fc.bias", model.fc.bias.detach()), ("bn.weight", model.bn.weight.detach())):
        assert float(kept[name].norm()) == pytest.approx(float(tensor.norm()), rel=1e-9)
    # the direction of each filter is the Gaussian draw's, only rescaled
    raw = unflatten(random_direction(model, seed=5, filter_norm=False), layout_of(model))
    cos = torch.nn.functional.cosine_similarity(raw["conv.weight"].flatten(1), parts["conv.weight"].flatten(1))
    torch.testing.assert_close(cos, torch.ones(4, dtype=D))


def test_filter_normalize_on_a_plain_matrix():
    layout = layout_of(nn.Linear(3, 2, bias=False))
    weights = torch.tensor([3.0, 4.0, 0.0, 0.0, 0.0, 2.0])  # rows of norm 5 and 2
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    out = filter_normalize(direction, weights, layout)
    torch.testing.assert_close(out, torch.tensor([5.0, 0.0, 0.0, 0.0, math.sqrt(2), math.sqrt(2)]))


def test_random_direction_is_seeded_and_leaves_the_global_rng_alone():
    model = ConvNet()
    state = torch.get_rng_state()
    a, b, c = random_direction(model, seed=1), random_direction(model, seed=1), random_direction(model, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())
    assert a.dtype == torch.float32


def test_batch_norm_model_is_evaluated_in_eval_mode_and_restored():
    torch.manual_seed(0)
    model = ConvNet().double()
    model.train()
    X, y = torch.randn(6, 2, 5, 5, dtype=D), torch.randint(0, 5, (6,))
    running = model.bn.running_mean.clone()
    losses = evaluate_losses(model, nn.functional.cross_entropy, (X, y), flatten(model),
                             random_direction(model, seed=0).unsqueeze(0), torch.tensor([[0.0], [0.5]]))
    assert model.training and torch.equal(running, model.bn.running_mean)
    model.eval()
    with torch.no_grad():
        assert float(losses[0]) == pytest.approx(float(nn.functional.cross_entropy(model(X), y)), rel=1e-12)


class ItemModel(nn.Module):
    """A model vmap cannot batch (``.item()`` on a parameter)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0], dtype=D))

    def forward(self, x):
        scale = 2.0 if self.w.sum().item() > 0 else 1.0
        return scale * (x @ self.w)


def test_models_vmap_cannot_batch_fall_back_to_one_point_at_a_time():
    model = ItemModel()
    X, y = torch.randn(8, 2, dtype=D), torch.randn(8, dtype=D)
    center = flatten(model)
    direction = torch.tensor([1.0, 1.0], dtype=D)
    with pytest.warns(RuntimeWarning, match="one point at a time"):
        line = direction_slice(model, squared_error, (X, y), direction, span=1.0, n_points=5)
    for t, loss in zip(line.t.tolist(), line.losses.tolist()):
        w = center + t * direction
        scale = 2.0 if w.sum() > 0 else 1.0
        assert loss == pytest.approx(float(((scale * (X @ w) - y) ** 2).mean()), rel=1e-12)


def test_projection_recovers_plane_coordinates():
    gen = torch.Generator().manual_seed(0)
    center, d1, d2 = (torch.randn(9, generator=gen, dtype=D) for _ in range(3))
    coords = torch.randn(5, 2, generator=gen, dtype=D)
    points = center + coords[:, :1] * d1 + coords[:, 1:] * d2
    torch.testing.assert_close(project_onto_plane(points, center, d1, d2), coords)


def test_workers_give_the_same_grid():
    model = Lecture(0.1, 0.2)
    e1, e2 = torch.tensor([1.0, 0.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    serial = plane(model, squared_error, LECTURE_DATA, e1, e2, resolution=8, chunk_size=16)
    pooled = plane(model, squared_error, LECTURE_DATA, e1, e2, resolution=8, chunk_size=16, workers=2)
    assert torch.equal(serial.losses, pooled.losses)
    one_chunk = plane(model, squared_error, LECTURE_DATA, e1, e2, resolution=8, chunk_size=64)
    assert torch.equal(serial.losses, one_chunk.losses)
    with pytest.raises(ValueError, match="loss_fn"):
        plane(model, lambda o, t: ((o - t) ** 2).mean(), LECTURE_DATA, e1, e2, resolution=8, chunk_size=16, workers=2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"resolution": 1}, "resolution"), ({"span": -1.0}, "span"), ({"span": (1.0, 0.0)}, "span"),
     ({"chunk_size": 0}, "chunk_size"), ({"workers": 0}, "workers")],
)
def test_bad_arguments_name_themselves(kwargs, name):
    model = Lecture()
    e1, e2 = torch.tensor([1.0, 0.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(ValueError, match=name):
        plane(model, squared_error, LECTURE_DATA, e1, e2, **{"resolution": 3, **kwargs})


def test_wrong_sized_direction_is_refused():
    with pytest.raises(ValueError, match="directions"):
        direction_slice(Lecture(), squared_error, LECTURE_DATA, torch.ones(3, dtype=D))


def test_scalar_parameters_round_trip_and_count_as_biases():
    model = Lecture(0.5, -2.0)
    layout = layout_of(model)
    parts = unflatten(flatten(model), layout)
    assert parts["w1"].shape == () and float(parts["w2"]) == -2.0
    assert torch.count_nonzero(random_direction(model, seed=0)) == 0  # Li et al. ignore 0-/1-D tensors
    kept = random_direction(model, seed=0, ignore_bias=False)
    assert kept.abs().tolist() == pytest.approx([0.5, 2.0])  # each scalar scaled to |w|


# --- Hessian directions (need descentlab.curvature's HessianOperator and lanczos) -------------


def test_hessian_directions_are_the_extreme_eigenvectors():
    from descentlab.landscape import hessian_directions

    A = symmetric_with_mixed_spectrum(6, seed=2)
    eigenvalues, eigenvectors = torch.linalg.eigh(A)  # ascending
    model = Quadratic(A, torch.linspace(-1, 1, 6, dtype=D))
    data = (torch.zeros(3, 1, dtype=D), torch.zeros(3, dtype=D))
    top = hessian_directions(model, mean_output, data, k=2, which="LA")
    torch.testing.assert_close(top.eigenvalues, eigenvalues.flip(0)[:2], atol=1e-8, rtol=0)
    for row, column in zip(top.vectors, (eigenvectors[:, -1], eigenvectors[:, -2])):
        assert abs(float(row @ column)) == pytest.approx(1.0, abs=1e-8)
    bottom = hessian_directions(model, mean_output, data, k=1, which="SA")
    assert float(bottom.eigenvalues[0]) == pytest.approx(float(eigenvalues[0]), abs=1e-8)
    # the slice along the top eigenvector has that eigenvalue as curvature
    line = direction_slice(model, mean_output, data, top.vectors[0], span=1.0, n_points=11)
    assert 2 * np.polyfit(line.t.numpy(), line.losses.numpy(), 2)[0] == pytest.approx(float(eigenvalues[-1]), abs=1e-8)


def test_escape_direction_at_the_lecture_saddle():
    from descentlab.landscape import escape_direction

    model = Lecture(0.0, 0.0)
    u, lam = escape_direction(model, squared_error, LECTURE_DATA)
    assert lam == pytest.approx(-2.0, abs=1e-8)
    assert abs(float(u[0])) == pytest.approx(1 / math.sqrt(2)) and float(u[0] * u[1]) == pytest.approx(0.5)
    line = direction_slice(model, squared_error, LECTURE_DATA, u, span=2.0, n_points=21)
    torch.testing.assert_close(line.losses, (1 - line.t**2 / 2) ** 2, atol=1e-12, rtol=0)  # w1 = w2 = t / sqrt 2
    # off the saddle the sign makes the first-order term go downhill too
    model = Lecture(0.1, 0.05)
    u, _ = escape_direction(model, squared_error, LECTURE_DATA)
    g = torch.tensor([-2 * 0.05 * (1 - 0.005), -2 * 0.1 * (1 - 0.005)], dtype=D)
    assert float(g @ u) <= 0
