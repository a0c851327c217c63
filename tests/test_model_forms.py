"""Data and models of forms the monitor met in users' loops: targets of several heads as a dict
in one in-memory pair; a complex parameter (a Fourier layer); a TorchScript model. Before, the
first failed when the monitor was built (``KeyError: 0``: the pair read as a list of batches), the
second cast the inputs to the complex dtype inside the user's model, the third failed inside
``register_forward_hook``. Oracles: the loss and gradient written out here, and
``torch.autograd.functional.hessian`` of the complex layer held as its real parts."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers import autograd_hessian

from descentlab.critical import StallMonitor
from descentlab.curvature import EmpiricalLoss, HessianOperator


def _two_heads(out, target):
    return F.cross_entropy(out[:, :3], target["cls"]) + F.mse_loss(out[:, 3], target["size"])


def test_dict_targets_in_one_pair_are_one_batch():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=g)
    target = {"cls": torch.randint(0, 3, (40,), generator=g), "size": torch.randn(40, generator=g)}
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    loss = EmpiricalLoss(model, _two_heads, (X, target))
    hand = _two_heads(model(X), target)
    assert loss.n_samples == 40 and float(loss.loss()) == pytest.approx(float(hand.detach()), rel=1e-6)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(hand, list(model.parameters()))])
    torch.testing.assert_close(loss.loss_and_gradient()[1], grad, rtol=1e-5, atol=1e-6)
    monitor = StallMonitor(_two_heads, (X, target), sample_size=16)
    for step in range(1, 11):
        monitor.update(step, 1.0, model)
    (Xs, ts), n = monitor.sample, monitor.diagnoser.tracked_size
    with torch.no_grad():
        expected = float(_two_heads(model(Xs[:n]), {k: v[:n] for k, v in ts.items()}))
    assert monitor.tracked[-1][1] == pytest.approx(expected, rel=1e-6)


class Fourier(nn.Module):
    """Rows of an 8x8 image through a complex weight on their spectrum, then a linear head."""

    def __init__(self, parts=False):
        super().__init__()
        w = torch.randn(8, 5, dtype=torch.cdouble) * 0.3
        if parts:
            self.re, self.im = nn.Parameter(w.real.clone()), nn.Parameter(w.imag.clone())
        else:
            self.w = nn.Parameter(w)
        self.out = nn.Linear(64, 3, dtype=torch.double)

    def forward(self, x):
        w = torch.complex(self.re, self.im) if hasattr(self, "re") else self.w
        spectrum = torch.fft.rfft(x.view(-1, 8, 8), dim=2) * w
        return self.out(torch.tanh(torch.fft.irfft(spectrum, n=8, dim=2)).reshape(-1, 64))


def test_a_complex_parameter_is_a_clear_error_and_its_real_parts_are_measured():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(24, 64, generator=g, dtype=torch.double), torch.randint(0, 3, (24,), generator=g)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"parameter 'w' is complex .*torch\.complex\(re, im\)"):
        EmpiricalLoss(Fourier(), F.cross_entropy, (X, y))
    torch.manual_seed(0)
    model = Fourier(parts=True)
    exact = autograd_hessian(model, lambda bound: F.cross_entropy(bound(X), y))
    ours = HessianOperator(model, F.cross_entropy, (X, y)) @ torch.eye(len(exact), dtype=exact.dtype)
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-10 * float(exact.abs().max()))


def test_a_torchscript_model_is_a_clear_error():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        scripted = torch.jit.script(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)))
    X, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    with pytest.raises(ValueError, match="the model is a TorchScript module .* before scripting"):
        EmpiricalLoss(scripted, F.cross_entropy, (X, y))
    inside = nn.Sequential(scripted, nn.Identity())
    with pytest.raises(ValueError, match="its module '0' is a TorchScript module"):
        EmpiricalLoss(inside, F.cross_entropy, (X, y))
