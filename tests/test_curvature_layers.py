"""Per-layer spectra against the blocks of the exact Hessian (eigvalsh), exact and Lanczos paths."""

import pytest
import torch
from torch import nn

from descentlab.curvature import layer_spectra, parameter_groups

from test_curvature_operator import batches, classification, exact_hessian, mlp

F64 = torch.float64


def test_each_groups_extremes_and_ratio_are_those_of_its_hessian_block():
    torch.manual_seed(2)
    model = mlp()  # Linear 5-7, Tanh, Linear 7-6, Softplus, Linear 6-3
    X, y = classification(300)
    H, _, _ = exact_hessian(model, nn.functional.cross_entropy, X, y)
    groups = parameter_groups(model)
    assert groups == {"0": ("0.weight", "0.bias"), "2": ("2.weight", "2.bias"), "4": ("4.weight", "4.bias")}
    sizes = {"0": 42, "2": 48, "4": 21}
    # exact path for two groups, Lanczos + SLQ for the one above the limit (48 > 45)
    found = layer_spectra(model, nn.functional.cross_entropy, batches(X, y, 128), eig_tol=1e-6, exact_limit=45,
                          n_steps=48, n_probes=24)
    full = torch.linalg.eigvalsh(H)
    start = 0
    for spectrum in found:
        n = sizes[spectrum.name]
        block = torch.linalg.eigvalsh(H[start : start + n, start : start + n])
        start += n
        assert spectrum.n_params == n and spectrum.names == groups[spectrum.name]
        assert spectrum.exact == (n <= 45)
        # exact: eigvalsh of the block; Lanczos to its float64 residual tol 1e-6 (values ~1e-10)
        torch.testing.assert_close(torch.tensor([spectrum.min_eigenvalue, spectrum.max_eigenvalue], dtype=F64),
                                   block[[0, -1]], atol=1e-9, rtol=1e-8)
        truth = float((block > 1e-6 * max(1.0, block.abs().max().item())).double().mean())
        if spectrum.exact:
            assert spectrum.minimum_ratio == truth and spectrum.minimum_ratio_std_error == 0
        else:  # n_steps = n: the quadrature is exact up to the probes' sampling
            assert abs(spectrum.minimum_ratio - truth) <= 4 * spectrum.minimum_ratio_std_error + 1e-9
        # Cauchy interlacing: a principal block's spectrum lies inside the full one's
        assert full[0] - 1e-10 <= spectrum.min_eigenvalue and spectrum.max_eigenvalue <= full[-1] + 1e-10


def test_groups_by_name_and_bad_arguments():
    torch.manual_seed(0)
    model = mlp()
    X, y = classification(100)
    found = layer_spectra(model, nn.functional.cross_entropy, (X, y), groups={"last": ["4"], "biases": ["0.bias", "2.bias"]})
    assert [s.name for s in found] == ["last", "biases"] and found[1].n_params == 13
    with pytest.raises(ValueError, match="params"):
        layer_spectra(model, nn.functional.cross_entropy, (X, y), groups={"x": ["nope"]})
    with pytest.raises(ValueError, match="exact_limit"):
        layer_spectra(model, nn.functional.cross_entropy, (X, y), exact_limit=0)
