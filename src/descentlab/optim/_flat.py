"""Weight-sized scratch space kept between steps: one flat buffer per (device, dtype).

GradientNoise draws its noise into it and SWATS lets Adam write its step there. Allocating a
fresh weight-sized tensor every step costs page faults on CPU (a sizeable share of a noise
draw; the measurement is in ``bench/RESULTS.md``), so the buffers are reused while the list
of parameters stays the same.
"""

from __future__ import annotations

import torch

from descentlab.params import split

__all__ = ["FlatScratch"]


class FlatScratch:
    """Flat buffers, and views of them shaped like a list of parameters.

    :meth:`views` returns ``(views, flats)``: ``views[i]`` has ``params[i]``'s shape, device and
    dtype; the views of each (device, dtype), in the order of the parameters, tile one flat
    buffer of ``flats`` (ordered by first appearance). The contents are whatever the last user
    left there.
    """

    def __init__(self) -> None:
        self._params: list[torch.Tensor] = []
        self._views: list[torch.Tensor] = []
        self._flats: list[torch.Tensor] = []

    def views(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(params) != len(self._params) or any(a is not b for a, b in zip(params, self._params)):
            self._build(params)
        return self._views, self._flats

    def _build(self, params: list[torch.Tensor]) -> None:
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            buckets.setdefault((p.device, p.dtype), []).append(i)
        views: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
        flats = []
        for (device, dtype), index in buckets.items():
            flat = torch.empty(sum(params[i].numel() for i in index), device=device, dtype=dtype)
            for i, view in zip(index, split(flat, [params[i].shape for i in index])):
                views[i] = view
            flats.append(flat)
        self._params, self._views, self._flats = list(params), views, flats
