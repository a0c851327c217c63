"""A batch whose rows are not independent samples: a graph network on one graph, its adjacency
matrix a tensor whose first dimension counts the nodes. The monitor takes samples from batches;
on such a batch the user's loss fails on the part. Before, the loop stopped at the first check on
a shape error from inside the user's model; now the error says why and how to hand the graph
over as one sample, and that form is watched."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descentlab.critical import StallMonitor
from descentlab.curvature import ModelLoss


class GCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x, adj):
        return adj @ self.l2(torch.relu(adj @ self.l1(x)))


def _graph(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    a = (torch.rand(n, n, generator=g) < 0.1).float()
    a = ((a + a.T + torch.eye(n)) > 0).float()
    deg = a.sum(1)
    return {"x": x, "adj": a / torch.sqrt(deg[:, None] * deg[None, :]), "y": torch.randint(0, 3, (n,), generator=g)}


def _node_loss(model, batch):
    return F.cross_entropy(model(batch["x"], batch["adj"]), batch["y"])


def _watch(loss, data, model, steps=10, lr=0.1):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    monitor = StallMonitor(loss, data, optimizer=optimizer, sample_size=16, total_steps=steps)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        value = loss(model, data[0])
        value.backward()
        optimizer.step()
        monitor.update(step, value.detach(), model)
    return monitor


def test_a_graph_taken_apart_is_a_clear_error():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"fails on samples taken from a batch .* leading dimension of 1"):
        _watch(ModelLoss(_node_loss), [_graph()], GCN())


def test_a_loss_that_fails_on_a_whole_batch_keeps_its_own_error():
    def broken(model, batch):
        return F.cross_entropy(model(batch["x"], batch["adj"]).T, batch["y"])  # the classes in the wrong place

    torch.manual_seed(0)
    with pytest.raises(RuntimeError):
        monitor = StallMonitor(ModelLoss(broken), [_graph()], sample_size=16)
        for step in range(1, 11):
            monitor.update(step, 1.0, GCN())


def test_the_graph_as_one_sample_is_watched():
    whole = {k: v[None] for k, v in _graph().items()}
    loss = ModelLoss(lambda model, batch: _node_loss(model, {k: v[0] for k, v in batch.items()}))
    torch.manual_seed(0)
    model = GCN()
    monitor = _watch(loss, [whole], model)
    step, tracked = monitor.tracked[-1]
    assert step == 10
    with torch.no_grad():
        assert tracked == pytest.approx(float(loss(model, whole)), rel=1e-6)
