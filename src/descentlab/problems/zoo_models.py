"""The models of the zoo of training runs (:mod:`descentlab.problems.zoo`), written the way users
write them: ``nn.`` activation modules (one MLP calls ``torch.relu`` as a function instead),
PyTorch's default initialisation unless a case asks for another one (a gain, a spread, a sign,
a bias), convolutions over the 8x8 digits, recurrent nets over sequences (``nn.RNN``/``GRU``/
``LSTM``, or written out step by step), a small pre-LayerNorm transformer, and random-features
models (a frozen extractor and a trainable head) whose loss is convex in their trainable weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
from torch import nn

__all__ = ["mlp", "FunctionalReluMLP", "ConvNet", "SequenceClassifier", "ElmanRNN", "SelfAttention", "Block",
           "TinyTransformer", "TorchEncoder", "Clamped", "FrozenFeatures", "feature_model", "antipodal_teacher",
           "antipodal_model", "linear_conv", "scaled", "constant", "clamped", "bounded"]


_ACTIVATIONS: Mapping[str, type[nn.Module]] = MappingProxyType({
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU})


def _init_weights(layers: Sequence[nn.Module], *, std: float | None = None, gain: float | None = None,
                  bias: float | None = None, generator: torch.Generator | None = None) -> None:
    """Re-initialise the weights of ``layers``: N(0, std²), or N(0, gain² / fan_in); biases to ``bias``."""
    with torch.no_grad():
        for layer in layers:
            weight = layer.weight
            if std is not None or gain is not None:
                fan_in = weight[0].numel()
                scale = std if std is not None else gain / math.sqrt(fan_in)
                weight.copy_(torch.randn(weight.shape, generator=generator) * scale)
            if bias is not None and layer.bias is not None:
                layer.bias.fill_(bias)


def mlp(sizes: Sequence[int], activation: str = "relu", *, gain: float | None = None, std: float | None = None,
        first_std: float | None = None, hidden_bias: float | None = None, batchnorm: bool = False,
        dropout: float = 0.0, first_sign: int | None = None, out_bias: float | None = None) -> nn.Sequential:
    """Linear layers of ``sizes`` with an ``nn.`` activation module between them (optionally
    BatchNorm before and dropout after each). Init: PyTorch's default, or every weight
    N(0, gain²/fan_in) (``gain``), N(0, std²) (``std``), the first layer's N(0, first_std²);
    ``hidden_bias`` fills every hidden bias; ``first_sign`` (+1 or -1) gives every first-layer
    weight that sign; ``out_bias`` fills the last layer's bias."""
    layers: list[nn.Module] = []
    linears: list[nn.Linear] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        layers.append(linear)
        linears.append(linear)
        if index < len(sizes) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(_ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
    _init_weights(linears, std=std, gain=gain)
    if first_std is not None:
        _init_weights(linears[:1], std=first_std)
    if hidden_bias is not None:
        _init_weights(linears[:-1], bias=hidden_bias)
    if first_sign is not None:
        with torch.no_grad():
            linears[0].weight.abs_().mul_(first_sign)
    if out_bias is not None:
        _init_weights(linears[-1:], bias=out_bias)
    return nn.Sequential(*layers)


class FunctionalReluMLP(nn.Module):
    """A ReLU MLP whose activation is the function ``torch.relu`` (no module a hook could see)."""

    def __init__(self, sizes: Sequence[int], hidden_bias: float | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if hidden_bias is not None:
            _init_weights(list(self.layers)[:-1], bias=hidden_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class ConvNet(nn.Module):
    """Digits CNN: 3x3 convolutions (padding 1) with an ``nn.`` activation after each (BatchNorm
    before it optionally), a 2x2 max-pool after the first, then a linear head."""

    def __init__(self, channels: Sequence[int] = (8, 16), activation: str = "relu", *, batchnorm: bool = False,
                 gain: float | None = None, std: float | None = None, bias: float | None = None,
                 bn_bias: float | None = None, outputs: int = 10, head_bias: float | None = None) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        convs: list[nn.Conv2d] = []
        previous = 1
        for index, width in enumerate(channels):
            conv = nn.Conv2d(previous, width, 3, padding=1)
            convs.append(conv)
            blocks.append(conv)
            if batchnorm:
                norm = nn.BatchNorm2d(width)
                if bn_bias is not None:
                    nn.init.constant_(norm.bias, bn_bias)
                blocks.append(norm)
            blocks.append(_ACTIVATIONS[activation]())
            if index == 0:
                blocks.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(previous * 4 * 4, outputs)
        _init_weights(convs, std=std, gain=gain, bias=bias)
        if head_bias is not None:
            _init_weights([self.head], bias=head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class SequenceClassifier(nn.Module):
    """``nn.RNN``/``nn.GRU``/``nn.LSTM`` (batch first) over a sequence, a linear head on the last
    hidden state. ``recurrent_gain`` re-initialises the recurrent weights as gain x identity
    (the IRNN start, Le et al. 2015), ``scale`` multiplies every weight. ``batch_first=False``
    builds the recurrent layer as torch does by default while still feeding it ``(batch, time,
    features)``: the recurrence runs along the batch (a deliberate mistake)."""

    def __init__(self, inputs: int, hidden: int, outputs: int, *, cell: str = "rnn", layers: int = 1,
                 nonlinearity: str = "tanh", scale: float | None = None, recurrent_gain: float | None = None,
                 bias: float | None = None, head_bias: float | None = None, batch_first: bool = True) -> None:
        super().__init__()
        kinds = {"rnn": functools.partial(nn.RNN, nonlinearity=nonlinearity), "gru": nn.GRU, "lstm": nn.LSTM}
        self.rnn = kinds[cell](inputs, hidden, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(hidden, outputs)
        with torch.no_grad():
            for name, weight in self.rnn.named_parameters():
                if scale is not None and name.startswith("weight"):
                    weight.mul_(scale)
                if recurrent_gain is not None and name.startswith("weight_hh"):
                    weight.copy_(recurrent_gain * torch.eye(hidden))
                if bias is not None and name.startswith("bias"):
                    weight.fill_(bias / 2)  # b_ih + b_hh
            if scale is not None:
                self.head.weight.mul_(scale)
                self.head.bias.mul_(scale)
            if head_bias is not None:
                self.head.bias.fill_(head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class ElmanRNN(nn.Module):
    """A recurrent net written out step by step: ``layers`` stacked cells h_t = act(W x_t + U h_{t-1} + b),
    each with its own ``nn.`` activation module (called once per step), and a linear head on the
    last state. ``input_std``: the input weights start at N(0, input_std²); ``bias``: every b
    starts at this value."""

    def __init__(self, inputs: int, hidden: int, outputs: int, activation: str = "tanh", *, layers: int = 1,
                 input_std: float | None = None, bias: float | None = None) -> None:
        super().__init__()
        self.inp = nn.ModuleList(nn.Linear(inputs if i == 0 else hidden, hidden) for i in range(layers))
        self.rec = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.act = nn.ModuleList(_ACTIVATIONS[activation]() for _ in range(layers))
        self.head = nn.Linear(hidden, outputs)
        if input_std is not None:
            _init_weights(list(self.inp), std=input_std)
        if bias is not None:
            _init_weights(list(self.inp), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for inp, rec, act in zip(self.inp, self.rec, self.act):
            h = x.new_zeros(x.shape[0], rec.in_features)
            states = []
            for t in range(x.shape[1]):
                h = act(inp(x[:, t]) + rec(h))
                states.append(h)
            x = torch.stack(states, dim=1)
        return self.head(x[:, -1])


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (softmax(QKᵀ/√d)V, as minGPT's), no mask."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) (GELU)."""

    def __init__(self, width: int, heads: int, activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), _ACTIVATIONS[activation](), nn.Linear(2 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Token and position embeddings, pre-LN blocks, a final LayerNorm and a head per position
    (``pool=True``: one output for the whole sequence, from the mean over positions).
    ``scale`` multiplies every weight matrix (a deliberately wrong initial scale)."""

    def __init__(self, vocabulary: int, length: int, outputs: int, *, width: int = 16, heads: int = 2,
                 depth: int = 2, pool: bool = False, dropout: float = 0.0, head_bias: float | None = None,
                 scale: float | None = None) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Parameter(0.02 * torch.randn(length, width))
        self.blocks = nn.Sequential(*(Block(width, heads, dropout=dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs)
        self.pool = pool
        if head_bias is not None:
            _init_weights([self.head], bias=head_bias)
        if scale is not None:
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, nn.Linear):
                        module.weight.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.blocks(self.tokens(x) + self.positions))
        return self.head(h.mean(dim=1) if self.pool else h)


class TorchEncoder(nn.Module):
    """Token and position embeddings, torch's ``nn.TransformerEncoder`` (pre-LN layers, no dropout),
    a final LayerNorm and a head per position. ``batch_first=False`` is torch's default for the
    layer while the model still feeds it ``(batch, length, width)``: attention then runs across the
    batch at each position (a deliberate mistake)."""

    def __init__(self, vocabulary: int, length: int, outputs: int, *, width: int = 16, heads: int = 2,
                 depth: int = 2, batch_first: bool = True) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Parameter(0.02 * torch.randn(length, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=batch_first,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(self.tokens(x) + self.positions)))


class Clamped(nn.Module):
    """A model whose output is clamped to ``[low, high]`` with ``torch.clamp`` (a bounded
    prediction); where every output is past a bound, nothing reaches the parameters."""

    def __init__(self, model: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.model, self.low, self.high = model, low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.model(x), self.low, self.high)


class FrozenFeatures(nn.Module):
    """A fixed, untrained feature extractor (``requires_grad=False``) and a trainable linear
    head: a random-features model (for an RNN, an echo-state network)."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features.requires_grad_(False)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _LastState(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0][:, -1]


def _random_features(which: str) -> tuple[nn.Module, int]:
    """A fixed random feature extractor (seeded apart from torch's global generator, so every
    run builds the same one) and its width: ``linear`` (the inputs themselves), ``conv``
    (a tanh convolution of the digits, pooled), ``reservoir`` (a random tanh RNN over the
    digits' rows, its last state), ``features`` (random tanh features of two moons)."""
    with torch.random.fork_rng():
        torch.manual_seed(8)
        if which == "linear":
            return nn.Identity(), 8
        if which == "conv":
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten()), 64
        if which == "reservoir":
            return _LastState(nn.RNN(8, 32, batch_first=True)), 32
        return nn.Sequential(nn.Linear(2, 16), nn.Tanh()), 16


def feature_model(which: str, outputs: int = 1) -> FrozenFeatures:
    """:func:`_random_features` frozen, and a trainable linear head (PyTorch's default
    initialisation): a model whose loss is convex in its trainable weights for a convex loss."""
    features, width = _random_features(which)
    return FrozenFeatures(features, nn.Linear(width, outputs))


def antipodal_teacher(which: str) -> FrozenFeatures:
    """The random-features model whose outputs are the ``angles-*`` targets (its head seeded)."""
    model = feature_model(which)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g) / math.sqrt(model.head.in_features))
        model.head.bias.zero_()
    return model


def antipodal_model(which: str) -> FrozenFeatures:
    """The teacher of the ``angles-<which>`` data with its output shifted by half a turn (π):
    every residual is π, where ``1 - cos`` is at its maximum; the only trainable weights (the
    head) then see a negative definite Hessian, -E[(h, 1)(h, 1)ᵀ]."""
    model = antipodal_teacher(which)
    with torch.no_grad():
        model.head.bias.add_(math.pi)
    return model


def linear_conv() -> nn.Module:
    """One 8x8 convolution over the whole 8x8 image to 10 outputs: a linear model."""
    return nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())


def clamped(factory: Callable[[], nn.Module], low: float, high: float) -> nn.Module:
    """A fresh ``factory()`` model with its output clamped to ``[low, high]`` (:class:`Clamped`)."""
    return Clamped(factory(), low, high)


#: The bounded functions :func:`bounded` puts on a model's outputs.
_HEADS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softmax": lambda: nn.Softmax(dim=-1)}


def bounded(factory: Callable[[], nn.Module], head: str) -> nn.Module:
    """A fresh ``factory()`` model with a bounded function on its outputs (``"sigmoid"``,
    ``"tanh"``, ``"softmax"`` over the last dimension): ``nn.Sequential(model, head)``, as a model
    whose author put the probabilities in front of a loss that takes raw scores is written."""
    if head not in _HEADS:
        raise ValueError(f"head must be one of {', '.join(_HEADS)}, got {head!r}")
    return nn.Sequential(factory(), _HEADS[head]())


def constant(factory: Callable[[], nn.Module], value: float) -> nn.Module:
    """A fresh ``factory()`` model with every parameter set to ``value`` (a constant initialisation:
    every unit of a layer starts a copy of the others, and gradient descent keeps it one)."""
    model = factory()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def scaled(factory: Callable[[], nn.Module], scale: float) -> nn.Module:
    """A fresh ``factory()`` model with every parameter multiplied by ``scale`` (``1e-6``: a start
    next to the origin)."""
    model = factory()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model
