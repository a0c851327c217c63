"""An embedding with ``max_norm`` renormalises, in place, the rows its forward pass reads. The
monitor read its tracked loss through the user's model in place, so the rows of the tracked
samples were renormalised in the user's weights at every check: a step the run never took, and
a monitored run that parted from the unmonitored one. Its loss is now read at a snapshot. Where a
stalled run of such a model is diagnosed, the products' check fails (the renormalisation is
outside autograd) and the reason says so. Oracles: the unmonitored run, bit for bit; the loss
written out here."""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from helpers import update_steps

from descentlab.critical import StallMonitor
from descentlab.curvature import EmpiricalLoss


class Tokens(nn.Module):
    """Each pixel's level (0-16) as a token of an embedding whose rows are kept to norm 1."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(17, 8, max_norm=1.0)
        self.head = nn.Linear(64 * 8, 10)

    def forward(self, x):
        return self.head(self.emb((x * 16).round().long()).flatten(1))


def _digits():
    digits = load_digits()
    return torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)


def _run(lr, monitored, steps=150):
    X, y = _digits()
    torch.manual_seed(0)
    model = Tokens()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    monitor = StallMonitor(F.cross_entropy, (X, y), optimizer=optimizer, batch_size=64,
                           total_steps=steps) if monitored else None
    update_steps(model, optimizer, X, y, monitor, steps=steps)
    return model, monitor


def test_a_monitored_run_of_an_embedding_with_max_norm_is_the_unmonitored_run():
    watched, monitor = _run(0.1, True)
    alone, _ = _run(0.1, False)
    assert len(monitor.tracked) >= 5
    for (name, a), b in zip(watched.state_dict().items(), alone.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_loss_of_such_a_model_leaves_its_weights_and_is_the_loss_of_its_renormalised_rows():
    X, y = _digits()
    torch.manual_seed(0)
    model = Tokens()
    before = model.emb.weight.detach().clone()
    assert bool((before.norm(dim=1) > 1.0).any())  # rows the forward pass would renormalise
    value = float(EmpiricalLoss(model, F.cross_entropy, (X[:200], y[:200])).live_loss())
    assert torch.equal(model.emb.weight, before)
    rows = before * torch.clamp(1.0 / (before.norm(dim=1, keepdim=True) + 1e-7), max=1.0)  # torch's renorm
    with torch.no_grad():
        hand = F.cross_entropy(model.head(rows[(X[:200] * 16).round().long()].flatten(1)), y[:200])
    assert abs(value - float(hand)) <= 1e-5 * float(hand)


def test_a_stalled_run_of_such_a_model_is_not_given_a_verdict_the_curvature_cannot_support():
    _, monitor = _run(1e-5, True)
    assert monitor.stalls
    stall = monitor.stalls[0]
    assert stall.status.startswith("failed") and "max_norm" in stall.status
