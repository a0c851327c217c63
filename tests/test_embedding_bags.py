"""``nn.EmbeddingBag``: torch has no derivative of its backward, so a Hessian product through a
bag-of-tokens classifier raised ``NotImplementedError``, and the monitor's first timed product
stopped the user's loop at step 30. The data layer now runs each bag as an embedding lookup
reduced per bag. Oracles: ``nn.EmbeddingBag`` itself for the values; ``torch.func``'s
forward-over-reverse product of the same model written with ``nn.Embedding``."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp
from torch.nn import functional as F

from descentlab.curvature import HessianOperator
from descentlab.curvature.bags import bag_forward, twice_differentiable_bags

V, D = 30, 5


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_the_lookup_reduced_per_bag_is_the_bags_own_value_on_rows(mode, padding_idx):
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(V, D, mode=mode, padding_idx=padding_idx)
    tokens = torch.randint(0, V, (6, 4))
    tokens[2] = 0  # all padding where padding_idx is 0: a bag of zeros
    torch.testing.assert_close(bag_forward(bag, tokens), bag(tokens))


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("last", [False, True])
def test_the_lookup_reduced_per_bag_is_the_bags_own_value_on_offsets(mode, last):
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(V, D, mode=mode, include_last_offset=last)
    tokens = torch.randint(0, V, (11,))
    offsets = torch.tensor([0, 3, 3, 7] + ([11] if last else []))  # an empty bag among them
    torch.testing.assert_close(bag_forward(bag, tokens, offsets), bag(tokens, offsets))
    if mode == "sum":
        weights = torch.rand(11)
        torch.testing.assert_close(bag_forward(bag, tokens, offsets, weights), bag(tokens, offsets, weights))


def test_hessian_products_through_a_bag_are_those_of_its_embedding_twin_and_the_module_is_restored():
    torch.manual_seed(0)
    bagged = nn.Sequential(nn.EmbeddingBag(V, D, mode="mean"), nn.Tanh(), nn.Linear(D, 3))
    twin = nn.Sequential(nn.Embedding(V, D), nn.Tanh(), nn.Linear(D, 3))
    twin.load_state_dict(bagged.state_dict())
    X, y = torch.randint(0, V, (40, 7)), torch.randint(0, 3, (40,))
    params = {k: p.detach() for k, p in twin.named_parameters()}
    v = torch.randn(sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(1))
    tangent = dict(zip(params, (t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in params.values()]),
                                                              params.values()))))

    def loss(p):
        embedded = functional_call(twin[0], {"weight": p["0.weight"]}, (X,)).mean(1)
        hidden = torch.tanh(embedded)
        return F.cross_entropy(F.linear(hidden, p["2.weight"], p["2.bias"]), y)

    _, hv = jvp(grad(loss), (params,), (tangent,))
    oracle = torch.cat([t.flatten() for t in hv.values()])
    torch.testing.assert_close(HessianOperator(bagged, F.cross_entropy, (X, y)) @ v, oracle, rtol=1e-4, atol=1e-6)
    assert "forward" not in bagged[0].__dict__
    with twice_differentiable_bags([bagged[0]]):
        assert "forward" in bagged[0].__dict__
    assert "forward" not in bagged[0].__dict__


class _MaxOverOffsets(nn.Module):
    """A max bag fed one flat sequence and its offsets: no second derivative is written for it, and
    torch has none."""

    def __init__(self):
        super().__init__()
        self.bag, self.head = nn.EmbeddingBag(V, D, mode="max"), nn.Linear(D, 3)

    def forward(self, x):
        offsets = torch.arange(0, x.numel(), x.shape[1])
        return self.head(self.bag(x.reshape(-1), offsets))


def test_a_bag_without_a_second_derivative_stops_no_loop_and_the_stall_says_why():
    from descentlab.critical import StallMonitor
    torch.manual_seed(0)
    model = _MaxOverOffsets()
    X, y = torch.randint(0, V, (256, 7)), torch.randint(0, 3, (256,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=32, total_steps=60)
    for step in range(1, 61):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[:32]), y[:32])
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.detach(), model)
    stall = monitor.stalls[0]
    assert stall.status.startswith("failed: the Hessian-vector products through this model cannot be taken "
                                   "(the derivative for '_embedding_bag_backward' is not implemented)")
