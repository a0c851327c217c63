"""The one parameter flattener: order, round trip, batches, zeros for missing gradients, dtype and device.

Oracle: torch's own ``parameters_to_vector`` / ``vector_to_parameters`` (the order every flat
vector in the package must agree with) and plain indexing of the tensors.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from descentlab.curvature import EmpiricalLoss
from descentlab.params import Layout, flatten, layout_of, split, unflatten

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Net(nn.Module):
    """Parameters of every rank (conv 4-D, linear 2-D, bias 1-D, a scalar) and one frozen tensor."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, dtype=dtype)
        self.frozen = nn.Parameter(torch.ones(4, dtype=dtype), requires_grad=False)
        self.fc = nn.Linear(12, 2, dtype=dtype)
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=dtype))

    def forward(self, x):
        return self.scale * self.fc(torch.tanh(self.conv(x)).flatten(1))


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_order_is_torchs_and_the_round_trip_is_exact(device, dtype):
    model = Net(dtype).to(device)
    layout = layout_of(model)
    # named_parameters() order: the module's own tensors, then its children's; the frozen one is left out
    assert layout.names == ("scale", "conv.weight", "conv.bias", "fc.weight", "fc.bias")
    assert layout.n_params == 3 * 2 * 9 + 3 + 2 * 12 + 2 + 1
    theta = flatten(model)
    assert theta.dtype == dtype and theta.device.type == device and not theta.requires_grad
    assert torch.equal(theta, parameters_to_vector(trainable(model)).detach())  # oracle: torch's order
    parts = layout.unflatten(theta)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert parts[name].shape == p.shape and torch.equal(parts[name], p.detach())
    assert torch.equal(layout.flatten(parts), theta)
    assert torch.equal(unflatten(theta, layout)["fc.weight"], model.fc.weight.detach())


def test_rows_of_a_stacked_ensemble_are_each_members_vector():
    members = [Net() for _ in range(3)]
    layout = layout_of(members[0])
    stacked = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in members])
               for name in layout.names}
    rows = layout.flatten(stacked, batch_shape=(3,))
    assert rows.shape == (3, layout.n_params)
    for row, member in zip(rows, members):
        assert torch.equal(row, parameters_to_vector(trainable(member)).detach())
    back = layout.unflatten(rows)
    for name in layout.names:
        assert torch.equal(back[name], stacked[name])


def test_split_gives_views_that_write_through():
    shapes = [(2, 3), (), (4,)]
    buffer = torch.zeros(2 * 3 + 1 + 4)
    a, b, c = split(buffer, shapes)
    assert (a.shape, b.shape, c.shape) == ((2, 3), (), (4,))
    a.fill_(1.0)
    b.fill_(2.0)
    c.copy_(torch.arange(4.0))
    assert buffer.tolist() == [1.0] * 6 + [2.0] + [0.0, 1.0, 2.0, 3.0]


def test_missing_gradients_are_zeros_of_the_right_shape_dtype_and_device():
    layout = Layout(("a", "b", "c"), [(2,), (3, 1), ()])
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    flat = layout.flatten([g, None, torch.tensor(5.0, dtype=torch.float64)])
    assert flat.dtype == torch.float64 and flat.tolist() == [1.0, 2.0, 0.0, 0.0, 0.0, 5.0]
    rows = layout.flatten([None, torch.ones(2, 3, 1), None], batch_shape=(2,))
    assert rows.tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0, 0.0]] * 2
    nothing = layout.flatten([None, None, None], dtype=torch.float16)
    assert nothing.dtype == torch.float16 and nothing.shape == (6,) and not nothing.any()


def test_flatten_keeps_the_autograd_graph():
    # a Hessian-vector product differentiates the flattened gradient again
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    loss = (w * x**2).sum()
    grads = torch.autograd.grad(loss, (x, w), create_graph=True)
    flat = Layout.of([x, w]).flatten(grads)  # [2 w x, sum x^2]
    (hx,) = torch.autograd.grad(flat[0], x)  # d(2 w x_0)/dx = (2w, 0)
    assert hx.tolist() == [6.0, 0.0]


def test_a_checkpoint_of_another_architecture_is_refused_by_name():
    layout = layout_of(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="missing tensors bias"):
        flatten({"weight": torch.zeros(2, 3)}, layout)
    with pytest.raises(ValueError, match="weight has shape"):
        flatten({"weight": torch.zeros(3, 3), "bias": torch.zeros(2)}, layout)
    with pytest.raises(ValueError, match="last dimension 5"):
        layout.split(torch.zeros(5))
    with pytest.raises(ValueError, match="layout"):
        flatten({"weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="trainable"):
        layout_of(nn.ReLU())


def test_the_data_layer_flattens_the_same_way():
    model = Net()
    X, y = torch.randn(5, 2, 4, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    risk = EmpiricalLoss(model, nn.functional.mse_loss, (X, y))
    assert risk.layout == layout_of(model)
    assert torch.equal(risk.point, parameters_to_vector(trainable(model)).detach())
    v = torch.randn(risk.n_params, dtype=torch.float64)
    clone = Net()
    vector_to_parameters(v, trainable(clone))  # oracle: torch writes v in its order
    for name, part in risk.unflatten(v).items():
        assert torch.equal(part, dict(clone.named_parameters())[name].detach())
