"""Changes to a model's weights and modules that remedies make: re-initialise layers with the
gain their activation needs, swap activation modules, standardize the inputs, build recurrent and
attention layers batch first.

Each works in place on the model (its parameter objects are kept, so the optimizer stepping
them needs no rebuilding; only their optimizer state is cleared where the weights are new).
Re-initialised weights are part of the model's ``state_dict``; a swapped activation and the
input standardization are not (they change the modules and the forward pass), so a loop that
saves the model with ``state_dict`` must make the same change in its own code to load it again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["INITS", "ACTIVATIONS", "NORM_LAYERS", "reinitialize", "swap_activations", "set_batch_first",
           "InputStandardizer", "standardize_inputs"]

#: Initialisations by the activation that follows the layer: ``"kaiming"`` (He et al. 2015, the
#: ReLU family: variance 2 / fan_in) and ``"xavier"`` (Glorot & Bengio 2010, tanh and sigmoid:
#: variance 2 / (fan_in + fan_out) times the activation's gain); ``"default"``, the scale PyTorch
#: builds ``nn.Linear`` and ``nn.Conv*`` weights at (``kaiming_uniform_`` with a = √5: variance
#: 1 / (3 fan_in)), for a layer no activation follows; ``"module"``, the module's own
#: ``reset_parameters()`` (what PyTorch builds that module type with: a GRU's uniform ±1/√hidden,
#: a linear layer's bias too), for a layer whose scale nothing in the run says better.
INITS = ("kaiming", "xavier", "default", "module")

#: Normalization layers: their affine scale and shift are re-initialised to 1 and 0 (torch's own
#: initialisation of them), not drawn like a weight layer's.
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.RMSNorm)

#: Replacement activations by name (``identity`` takes a bounded function off the outputs).
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(0.01), "identity": nn.Identity}


def reinitialize(model: nn.Module, names: Sequence[str], init: str, optimizer: Any = None, *, seed: int = 0,
                 gain_of: str = "relu") -> None:
    """Draw new weights for the modules ``names`` (their tensors of two or more dimensions) by
    ``init``, with biases set to 0, from a generator seeded with ``seed`` (torch's global one is
    left alone; ``"module"``: each module's ``reset_parameters``, in the order named, drawn from
    a copy of torch's generator seeded with ``seed``); a normalization layer among them
    (:data:`NORM_LAYERS`) gets its scale 1 and shift 0 back (its running statistics are left as
    they are); their state in ``optimizer`` (moments, momentum) is cleared. ``gain_of``: the activation the Xavier gain is for
    (``"tanh"``, ``"sigmoid"``, ``"relu"``)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"reinit: the model has no module {missing[0]!r}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    with torch.no_grad(), _seeded_copy_of_torchs_generator(device, int(seed)):
        for name in names:
            if init == "module" and hasattr(modules[name], "reset_parameters"):
                modules[name].reset_parameters()
                for param in modules[name].parameters(recurse=False):
                    if optimizer is not None:
                        optimizer.state.pop(param, None)
                continue
            norm = isinstance(modules[name], NORM_LAYERS)
            for param_name, param in modules[name].named_parameters(recurse=False):
                if norm:
                    param.fill_(1.0 if param_name == "weight" else 0.0)
                elif param.ndim < 2:
                    param.zero_()
                elif init == "kaiming":
                    nn.init.kaiming_normal_(param, nonlinearity="relu", generator=generator)
                elif init in ("default", "module"):  # a module with no reset_parameters: the usual scale
                    nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=generator)
                else:
                    nn.init.xavier_normal_(param, gain=nn.init.calculate_gain(gain_of), generator=generator)
                if optimizer is not None:
                    optimizer.state.pop(param, None)


@contextlib.contextmanager
def _seeded_copy_of_torchs_generator(device: torch.device, seed: int) -> Iterator[None]:
    """Torch's generator (the model's device's) seeded with ``seed`` inside, as it was after:
    ``reset_parameters`` draws from it, and a remedy must not move the user's random stream."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def swap_activations(model: nn.Module, names: Sequence[str], activation: str) -> None:
    """Replace the activation modules ``names`` by ``activation`` (:data:`ACTIVATIONS`)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not hasattr(parent, child) and not (isinstance(parent, nn.Sequential) and child.isdigit()):
            raise ValueError(f"activations: the model has no module {name!r}")
        setattr(parent, child, ACTIVATIONS[activation]())


def set_batch_first(model: nn.Module, names: Sequence[str]) -> None:
    """Set ``batch_first=True`` on the modules ``names`` (recurrent layers, ``nn.MultiheadAttention``,
    torch's transformer layers: each reads the flag at every call), so they take ``(batch, time, ...)``
    as the model feeds them instead of running along the batch."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or not hasattr(modules[name], "batch_first"):
            raise ValueError(f"batch_first: the model has no module {name!r} with a batch_first flag")
        modules[name].batch_first = True


class InputStandardizer:
    """A forward pre-hook that standardizes a model's first input per feature:
    ``x <- (x - mean) / std`` over its non-batch dimensions, flattened (the sample's statistics)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float64)
        self.std = torch.tensor(list(std), dtype=torch.float64)
        if self.mean.shape != self.std.shape or not bool((self.std > 0).all()):
            raise ValueError("standardize: mean and std must be as long as each other, std > 0")

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, rest = args[0], args[1:]
        flat = x.reshape(len(x), -1)
        if flat.shape[1] != self.mean.numel():
            raise ValueError(f"standardize: the input has {flat.shape[1]} features, the statistics "
                             f"{self.mean.numel()}")
        mean, std = self.mean.to(flat), self.std.to(flat)
        return ((flat - mean) / std).reshape(x.shape), *rest


def standardize_inputs(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> Any:
    """Standardize ``model``'s first input from now on (:class:`InputStandardizer`); returns the
    hook's handle (``handle.remove()`` undoes it)."""
    return model.register_forward_pre_hook(InputStandardizer(mean, std))
