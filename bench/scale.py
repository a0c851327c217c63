"""The stall monitor at scale: a character-level transformer and a small ResNet, from DataLoaders.

Usage:
    .venv/bin/python bench/scale.py             # the tables recorded in bench/RESULTS.md
    .venv/bin/python bench/scale.py --quick     # shorter runs, one round (a smoke test)

Targets (issue 25, item 6), with the default monitor (``StallMonitor(loss, loader)``: budget 0.25,
5 s, sample 512, window 50) attached to a plain PyTorch loop through ``LoopState`` and
``on_step_end``:

* **models**: a character-level transformer (~1M parameters, context 64, pre-norm blocks with
  ``F.scaled_dot_product_attention`` and attention dropout written ``p if self.training else 0``,
  AdamW, linear warm-up then cosine decay) on a generated language (words of a seeded random
  lexicon strung together by a seeded bigram chain: spelling to learn exactly, word order to
  learn as probabilities, so the loss keeps falling for hundreds of steps and never reaches 0),
  and a small ResNet with BatchNorm (~0.3M parameters, SGD with momentum) on scikit-learn's
  digits upsampled to 16x16. Both read their batches from a shuffling ``DataLoader``;
* **verdicts**: the healthy run raises no alarm; a schedule that ends early gives
  ``no_learning_rate``; a rate far too high gives ``unstable`` while the loss still is finite and
  ``diverged`` once it is not (AdamW at 30x its rate oscillates at a finite loss: ``unstable`` is
  right; SGD far past 2/λ_max leaves the finite numbers within a few steps: ``diverged`` is right,
  measured at the last good point); a saddle-like start (every weight x1e-3) gives ``saddle``
  where the curvature has a negative eigenvalue that matters, or in the ResNet
  ``vanishing_gradient`` (its training function's gradient fades through the depth there, and the
  verdict table names a cause in the network before the curvature it makes); the ResNet at
  batch 4 gives ``noise_floor``;
* **budget**: every plateau of a >= 500-step run is diagnosed within the default budget (no
  stall left ``skipped (budget)``);
* **cost**: the monitor's overhead <= 10 % of the training time (median of paired rounds, the
  order alternating: wall time of the monitored run against the same run without the monitor,
  and the monitor's own clock, ``spent / train_time``), and with sharpness tracked every 50
  steps <= 15 % (met only if the estimates stayed 50 steps apart: the cap spreads them out
  where they cost more);
* **what the tracked sharpness is** (``--only samples``): the sharpness the stability rule reads,
  on the first n of one random draw, for n from 8 to 512, at steps 100 and 400 of the healthy
  runs: a tracker's sample is fixed for its run, and this says what a smaller one measures;
* **what a warm start buys** (``--only starts``): products to a 1 % residual, and what one
  product reads, from a random vector, the eigenvector of 50 steps before, the last update and
  the sample's gradient, every 50 steps of the healthy runs: whether any start makes an estimate
  every 50 steps cheap enough for the 15 % target.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from descentlab.critical import StallMonitor  # noqa: E402
from descentlab.curvature import ModelLoss, token_cross_entropy  # noqa: E402
from descentlab.engine import LoopState  # noqa: E402
from descentlab.monitor_defaults import DEFAULT_BUDGET  # noqa: E402

CONTEXT = 64


# ---------------------------------------------------------------------- the language
def generated_text(n_chars: int, seed: int = 0) -> str:
    """Words of a seeded random lexicon (3-8 letters) joined by a seeded sparse bigram chain."""
    g = torch.Generator().manual_seed(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = []
    while len(lexicon) < 300:
        length = int(torch.randint(3, 9, (1,), generator=g))
        word = "".join(letters[int(i)] for i in torch.randint(0, 26, (length,), generator=g))
        if word not in lexicon:
            lexicon.append(word)
    # each word is followed by one of 6 words, with Zipf-like weights
    followers = torch.randint(0, len(lexicon), (len(lexicon), 6), generator=g)
    weights = 1.0 / torch.arange(1, 7, dtype=torch.float64)
    out, word, size = [], 0, 0
    while size < n_chars:
        out.append(lexicon[word])
        size += len(lexicon[word]) + 1
        word = int(followers[word, int(torch.multinomial(weights, 1, generator=g))])
        if int(torch.randint(0, 12, (1,), generator=g)) == 0:
            out[-1] += "."
    return " ".join(out)[:n_chars]


def text_loader(batch_size: int = 16, n_chars: int = 200_000, seed: int = 0):
    """Sequences of ``CONTEXT + 1`` character ids (stride ``CONTEXT``) in a shuffling loader."""
    text = generated_text(n_chars, seed)
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    n = (len(ids) - 1) // CONTEXT
    seqs = torch.stack([ids[i * CONTEXT: i * CONTEXT + CONTEXT + 1] for i in range(n)])
    return DataLoader(TensorDataset(seqs), batch_size=batch_size, shuffle=True), len(vocab)


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention (SDPA) and a GELU MLP."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        # attention dropout as most code writes it: a module flag read by hand, not an nn.Dropout
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A GPT-style character model: token and position embeddings, blocks, a final norm, a head."""

    def __init__(self, vocab: int, d: int = 160, layers: int = 3, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(CONTEXT, d)
        self.blocks = nn.Sequential(*[Block(d, heads, dropout) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.ln(self.blocks(x)))


LM_LOSS = ModelLoss(lambda model, batch: token_cross_entropy(model(batch[0][:, :-1]), batch[0][:, 1:]))


# ---------------------------------------------------------------------- the images
def digits_loader(batch_size: int = 32):
    """scikit-learn's digits, upsampled to 16x16 and standardized, in a shuffling loader."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    X = F.interpolate(X, size=16, mode="bilinear", align_corners=False)
    X = (X - X.mean()) / X.std()
    y = torch.tensor(digits.target)
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True)


class Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Sequential() if stride == 1 and c_in == c_out
                     else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet(nn.Module):
    """A small ResNet: a stem, three stages of one residual block (32, 64, 128 channels), a head."""

    def __init__(self, widths=(32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(Residual(c, w, 1 if i == 0 else 2))
            c = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


def image_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------- the runs
def warmup_cosine(optimizer, warmup: int, total: int, floor: float = 0.1):
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` x the peak at step
    ``total``; 0 after ``total`` (a schedule built for a shorter run than the loop's ends early)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step > total:
            return 0.0
        t = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


#: scenario -> (model, what it changes, the verdicts that are right)
SCENARIOS = {
    "transformer/healthy": ("transformer", {}, ()),
    "transformer/schedule-ends-early": ("transformer", {"schedule_total": 150}, ("no_learning_rate",)),
    "transformer/rate-too-high": ("transformer", {"lr": 3e-2, "floor": 1.0}, ("unstable",)),
    "transformer/sgd-rate-too-high": ("transformer", {"optimizer": "sgd", "lr": 5.0}, ("diverged",)),
    "transformer/saddle-start": ("transformer", {"shrink": 1e-3}, ("saddle",)),
    "resnet/healthy": ("resnet", {}, ()),
    "resnet/schedule-ends-early": ("resnet", {"schedule_total": 150}, ("no_learning_rate",)),
    "resnet/rate-too-high": ("resnet", {"lr": 100.0}, ("diverged",)),
    "resnet/saddle-start": ("resnet", {"shrink": 1e-3}, ("saddle|vanishing_gradient",)),
    "resnet/batch-4": ("resnet", {"batch_size": 4, "lr": 0.05}, ("noise_floor",)),
}
DEFAULTS = {
    "transformer": {"lr": 1e-3, "batch_size": 8, "warmup": 50, "optimizer": "adamw", "floor": 0.1},
    "resnet": {"lr": 0.05, "batch_size": 32, "warmup": 0, "optimizer": "sgd", "floor": 0.1},
}


def build(model_kind: str, changes: dict, steps: int, seed: int = 0):
    """(model, loss, loader, optimizer, scheduler, batch size) of one scenario."""
    settings = {**DEFAULTS[model_kind], **changes}
    torch.manual_seed(seed)
    if model_kind == "transformer":
        loader, vocab = text_loader(settings["batch_size"], seed=seed)
        model, loss = CharTransformer(vocab), LM_LOSS
    else:
        loader, model, loss = digits_loader(settings["batch_size"]), ResNet(), image_loss
    if settings["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.01)
    elif model_kind == "transformer":  # plain SGD, as a user trying a rate from a vision recipe
        optimizer = torch.optim.SGD(model.parameters(), lr=settings["lr"])
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=0.9, weight_decay=5e-4)
    if "shrink" in settings:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(settings["shrink"])
    scheduler = warmup_cosine(optimizer, settings["warmup"], settings.get("schedule_total", steps), settings["floor"])
    return model, loss, loader, optimizer, scheduler, settings["batch_size"]


def train(name: str, steps: int, monitor: str | None = None, seed: int = 0):
    """One run of scenario ``name``: ``monitor`` None (unmonitored), ``"default"`` or ``"sharpness"``
    (sharpness tracked every 50 steps). Returns a dict: wall seconds, the monitor, the last loss."""
    model_kind, changes, _ = SCENARIOS[name]
    model, loss_fn, loader, optimizer, scheduler, batch = build(model_kind, changes, steps, seed)
    watcher = None
    if monitor is not None:  # "uncapped": budget=None, the routine's cadence before the cap (512 samples, every 10)
        watcher = StallMonitor(loss_fn, loader, track_sharpness=50 if monitor == "sharpness" else None,
                               budget=None if monitor == "uncapped" else DEFAULT_BUDGET)
    loop = LoopState(model, optimizer, scheduler, batch_size=batch, n_train=len(loader.dataset), total_steps=steps)
    started = time.perf_counter()
    if watcher is not None:
        watcher.on_train_start(loop)
    step, last = 0, math.nan
    model.train()
    while step < steps and not (watcher is not None and watcher.control.should_stop):
        for batch_data in loader:
            loop.optimizer.zero_grad(set_to_none=True)
            value = (loss_fn(model, batch_data) if model_kind == "transformer"
                     else loss_fn(model(batch_data[0]), batch_data[1]))
            value.backward()
            loop.optimizer.step()
            if loop.scheduler is not None:
                loop.scheduler.step()
            step += 1
            loop.step = step
            if watcher is not None:
                watcher.on_step_end(loop, value.detach())
                if watcher.control.should_stop:
                    break
            if step == steps:
                break
    if watcher is not None:
        watcher.on_train_end(loop)
    last = float(value.detach())
    return {"seconds": time.perf_counter() - started, "monitor": watcher, "loss": last, "steps": step}


def stall_text(stall) -> str:
    """One stall in a few words: verdict (or status) @ step (seconds, samples read)."""
    samples = ((stall.evidence or {}).get("data") or {}).get("samples")
    what = stall.verdict if stall.status == "diagnosed" else stall.status
    return f"{what} @{stall.step} ({stall.seconds:.1f} s" + (f", {samples} samples)" if samples else ")")


def at_start(name: str) -> str:
    """An on-demand diagnosis at step 0, without a budget, on four training batches of the sample:
    what the curvature says of a saddle-like start before any plateau."""
    model_kind, changes, _ = SCENARIOS[name]
    model, loss_fn, loader, optimizer, scheduler, batch = build(model_kind, changes, 1)
    monitor = StallMonitor(loss_fn, loader, optimizer=optimizer, batch_size=batch, budget=None, escape=False,
                           sample_size=4 * batch)
    stall = monitor.diagnose(model)
    return f"{stall.verdict or stall.status} ({stall.seconds:.1f} s)"


def verdicts(names: list[str], steps: int) -> list[dict]:
    """Each scenario once with the default monitor: what it said, what it cost."""
    rows = []
    for name in names:
        model_kind, _, right = SCENARIOS[name]
        start = at_start(name) if name.endswith("saddle-start") else None
        run = train(name, steps, "default")
        monitor = run["monitor"]
        found = list(monitor.stalls)
        # plateaus (and gradient alarms) left waiting for the budget; an alarm a divergence overtook is not
        diverged = any(s.verdict == "diverged" for s in found)
        skipped = [s for s in found if s.status == "skipped (budget)" and not (diverged and s.reason == "growth")]
        said = {s.verdict for s in found if s.status == "diagnosed"}
        # each expected verdict said ("a|b": either), and nothing else
        allowed = {name for expected in right for name in expected.split("|")}
        ok = (not found) if not right else (all(said & set(e.split("|")) for e in right) and not said - allowed)
        if start is not None and not found and not start.startswith("saddle"):
            ok = True  # no plateau, and at the start the curvature says no saddle: nothing to find
        row = {"case": name, "steps": run["steps"], "train": monitor.train_time, "spent": monitor.spent,
               "stalls": "; ".join(stall_text(s) for s in found) or "no alarm",
               "expected": ", ".join(e.replace("|", " or ") for e in right) or "no alarm", "right": ok,
               "all": not skipped,
               "tracked": monitor.diagnoser.tracked_size, "every": monitor.every, "uncapped": "-",
               "start": start or "-"}
        if skipped and not diverged:
            # what the diagnosis says at the end on the samples the budget would have had to afford
            monitor.diagnoser.size = monitor.diagnoser.sizes(4 * DEFAULTS[model_kind]["batch_size"])[-1]
            stall = monitor.diagnose(monitor.loop.model)
            row["uncapped"] = (f"{stall.verdict or stall.status} at step {stall.step} ({stall.seconds:.1f} s, "
                               f"{monitor.diagnoser.size} samples)")
            row["right"] = stall.verdict in right
        rows.append(row)
        print(f"  {name}, {steps} steps: {row['stalls']} [{row['train']:.1f} s training, monitor {row['spent']:.1f} s; "
              f"at the end without budget: {row['uncapped']}; at step 0: {row['start']}]", flush=True)
    return rows


def verdict_table(rows: list[dict]) -> None:
    print("\n| scenario | steps | expected | what the monitor said: verdict @ step (diagnosis s, samples read) | "
          "right | every plateau diagnosed in budget | tracked samples, every | training s | monitor s (share) | "
          "a waiting plateau, diagnosed at the end without budget | at step 0, without budget |")
    print("|---|---:|---|---|---|---|---|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['steps']} | {r['expected']} | {r['stalls']} | {'yes' if r['right'] else 'NO'} | "
              f"{'yes' if r['all'] else 'NO'} | {r['tracked']}, {r['every']} | {r['train']:.1f} | "
              f"{r['spent']:.1f} ({r['spent'] / r['train']:.1%}) | {r['uncapped']} | {r['start']} |")


def overhead(model_kind: str, steps: int, rounds: int) -> dict:
    """Paired rounds on the healthy run: unmonitored, default monitor, sharpness every 50 (the order
    rotating); medians of the wall time and of the monitor's own clock."""
    name = f"{model_kind}/healthy"
    modes = [None, "default", "sharpness"]
    walls: dict = {m: [] for m in modes}
    own: dict = {m: [] for m in modes[1:]}
    losses: dict = {m: [] for m in modes}
    points: list = []
    for index in range(rounds):
        for mode in modes[index % 3:] + modes[:index % 3]:
            run = train(name, steps, mode)
            walls[mode].append(run["seconds"])
            losses[mode].append(run["loss"])
            if mode is not None:
                monitor = run["monitor"]
                own[mode].append(monitor.spent / monitor.train_time)
                if mode == "sharpness" and monitor.sharpness is not None:
                    points = monitor.sharpness.points
    before = train(name, steps, "uncapped")["monitor"]  # once: what the same monitor cost before the cap
    return {"model": model_kind, "steps": steps, "rounds": rounds, "plain": statistics.median(walls[None]),
            "before": before.spent / before.train_time,
            "default": statistics.median(walls["default"]), "sharpness": statistics.median(walls["sharpness"]),
            "own_default": statistics.median(own["default"]), "own_sharpness": statistics.median(own["sharpness"]),
            "same": all(a == b for a, b in zip(losses[None], losses["default"] + losses["sharpness"])),
            "samples": sorted({p.samples for p in points}),
            "interval": sorted({b.step - a.step for a, b in zip(points, points[1:])})}


def batch_norm_sharpness(steps: int, every: int = 50) -> list[dict]:
    """The ResNet's sharpness against its stability limit along a healthy run (lr 0.05) and one far
    too high (lr 10), three ways on the same 256 samples: the running statistics' function (eval
    mode), the batch statistics' with the 256 as one batch, and with the 256 in batches of 32 (as
    training normalises them). Each λ_max by Lanczos at residual 1e-2."""
    from descentlab.curvature import HessianOperator, lanczos

    rows = []
    for lr in (0.05, 10.0):
        model, loss_fn, loader, optimizer, _, _ = build("resnet", {"lr": lr}, 10 ** 9)
        X, y = next(iter(DataLoader(loader.dataset, batch_size=256, shuffle=False)))
        chunks = [(X[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
        limit = 2 * (1 + 0.9)  # heavy ball, momentum 0.9

        def top(op) -> float:
            return float(lanczos(op, k=1, which="LA", tol=1e-2, max_iter=60).values[0])

        step = 0
        while step <= steps:
            for xb, yb in loader:
                if step % every == 0:
                    running = HessianOperator(model, loss_fn, (X, y), eval_mode=True)
                    rows.append({"lr": lr, "step": step, "eval": lr * top(running) / limit,
                                 "batch": lr * top(running.with_batch_statistics()) / limit,
                                 "batches": lr * top(HessianOperator(model, loss_fn, chunks, eval_mode=True)
                                                     .with_batch_statistics()) / limit,
                                 "loss_eval": float(running.loss()),
                                 "loss_batch": float(running.with_batch_statistics().loss())})
                if step == steps:
                    break
                optimizer.zero_grad()
                value = loss_fn(model(xb), yb)
                value.backward()
                optimizer.step()
                step += 1
                if not torch.isfinite(value):
                    break
            if step == steps or not torch.isfinite(value):
                break
    return rows


def _step(model_kind: str, model, loss_fn, optimizer, scheduler, batch) -> None:
    """One training step of a scenario's loop on ``batch``."""
    optimizer.zero_grad()
    value = loss_fn(model, batch) if model_kind == "transformer" else loss_fn(model(batch[0]), batch[1])
    value.backward()
    optimizer.step()
    scheduler.step()


def sample_sharpness(model_kind: str, at: tuple[int, ...], sizes: tuple[int, ...]) -> list[dict]:
    """The sharpness the stability rule reads (λ_max of the preconditioned Hessian for AdamW, of the
    Hessian for heavy ball; batch statistics) on the first n of one fixed random draw of the data,
    for each n of ``sizes``, at steps ``at`` of the healthy run: what a tracker that reads fewer
    samples would be measuring. Lanczos at residual 1e-2, cold."""
    from descentlab.critical.stability import sharpness_of, stability_operator, stability_rule
    from descentlab.curvature import HessianOperator, lanczos

    model, loss_fn, loader, optimizer, scheduler, _ = build(model_kind, {}, 500)
    draw = next(iter(DataLoader(loader.dataset, batch_size=max(sizes), shuffle=True,
                                generator=torch.Generator().manual_seed(1))))
    rows, step = [], 0
    model.train()
    while step <= max(at):
        for batch in loader:
            if step in at:
                row = {"model": model_kind, "step": step}
                for n in sizes:
                    part = tuple(x[:n] for x in draw)
                    op = HessianOperator(model, loss_fn, [part] if model_kind == "transformer" else part,
                                         eval_mode=True).with_batch_statistics()
                    rule = stability_rule(optimizer, model, op.names)
                    top = lanczos(stability_operator(rule, op), k=1, which="LA", tol=1e-2, max_iter=200)
                    row[n] = sharpness_of(rule, float(top.values[0])) / rule.lr
                rows.append(row)
            if step >= max(at):
                break
            _step(model_kind, model, loss_fn, optimizer, scheduler, batch)
            step += 1
        if step >= max(at):
            break
    return rows


def cut_short(every: int = 50, steps: int = 400, size: int = 64) -> list[dict]:
    """Estimates cut short along the healthy ResNet run, on a fixed ``size``-image sample: one
    tracker that takes one product per warm estimate, one that takes two (the least a tracker
    takes), each against a converged Lanczos (residual 1e-3) on the same operator. Says whether
    value·(1 + residual) bounds λ_max (it need not: the residual bounds the distance to *some*
    eigenvalue) and what one product gives."""
    from descentlab.critical.stability import stability_operator, stability_rule
    from descentlab.curvature import HessianOperator, lanczos
    from descentlab.curvature.tracking import EigenTracker

    model, loss_fn, loader, optimizer, scheduler, _ = build("resnet", {}, steps)
    X, y = next(iter(DataLoader(loader.dataset, batch_size=size, shuffle=True,
                                generator=torch.Generator().manual_seed(1))))
    trackers = {1: EigenTracker("LA", tol=1e-2), 2: EigenTracker("LA", tol=1e-2)}
    rows, step = [], 0
    model.train()
    while step <= steps:
        for xb, yb in loader:
            if step % every == 0:
                op = HessianOperator(model, loss_fn, (X, y), eval_mode=True).with_batch_statistics()
                target = stability_operator(stability_rule(optimizer, model, op.names), op)
                top = float(lanczos(target, k=1, which="LA", tol=1e-3, max_iter=300).values[0])
                row = {"step": step, "top": top}
                for least, tracker in trackers.items():  # the first estimate of each: cold, converged
                    pairs = tracker(target, seconds=None if step == 0 else 0.0, least=least)
                    row[least] = (float(pairs.values[0]), float(pairs.residuals[0]))
                rows.append(row)
            if step >= steps:
                break
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
            scheduler.step()
            step += 1
        if step >= steps:
            break
    return rows


def start_vectors(model_kind: str, steps: int = 200, every: int = 50) -> list[dict]:
    """What a warm start buys the tracked sharpness: along the healthy run, every ``every`` steps on
    the tracker's sample (16 sequences, 96 images), Lanczos to a 1 % residual on the stability
    operator from a random vector, from the converged eigenvector of ``every`` steps before, from
    the last update (the parameters now less those 10 steps before, in the operator's coordinates
    S^{-1/2}Δw) and from the sample's gradient (S^{1/2}g): products spent, and the Rayleigh
    quotient of the start itself (what one product reads), both against a converged Lanczos (1e-4)."""
    from descentlab.critical.stability import stability_operator, stability_rule
    from descentlab.curvature import HessianOperator, lanczos

    model, loss_fn, loader, optimizer, scheduler, _ = build(model_kind, {}, 2 * steps)
    size = 16 if model_kind == "transformer" else 96
    draw = tuple(next(iter(DataLoader(loader.dataset, batch_size=size, shuffle=True,
                                      generator=torch.Generator().manual_seed(0)))))
    data = [draw] if model_kind == "transformer" else draw

    def flat() -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()

    rows, step, before, last = [], 0, None, None
    model.train()
    while step < steps:
        for batch in loader:
            _step(model_kind, model, loss_fn, optimizer, scheduler, batch)
            step += 1
            if step % every == every - 10:
                before = flat()
            if step % every == 0:
                op = HessianOperator(model, loss_fn, data, eval_mode=True).with_batch_statistics()
                rule = stability_rule(optimizer, model, op.names)
                target = stability_operator(rule, op)
                root = target.root if rule.preconditioned else torch.ones(op.shape[0], dtype=op.dtype)
                top = lanczos(target, k=1, which="LA", tol=1e-4, max_iter=400, seed=1)
                lam = float(top.values[0])
                starts = {"random": torch.randn(op.shape[0], generator=torch.Generator().manual_seed(2),
                                                dtype=torch.float64).to(op.dtype),
                          "eigenvector": last, "update": (flat() - before).to(op.dtype) / root,
                          "gradient": op.gradient() * root}
                row = {"model": model_kind, "step": step, "top": lam}
                for name, v0 in starts.items():
                    if v0 is None:
                        continue
                    pairs = lanczos(target, k=1, which="LA", tol=1e-2, max_iter=400, seed=2, v0=v0)
                    unit = v0 / v0.norm()
                    row[name] = (pairs.n_matvecs, float(unit @ (target @ unit)) / lam)
                rows.append(row)
                last = top.vectors[:, 0].clone()
            if step >= steps:
                break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, one round")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds per overhead case (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a machine shared with other jobs, a second thread "
                             "waits for a descheduled core at every parallel region)")
    parser.add_argument("--only", nargs="*", help="scenarios to run (default: all), 'batchnorm' for the sharpness "
                        "of the batch-norm modes, 'samples' for the sharpness against the sample size, "
                        "'overhead' for the cost rounds, 'starts' for the tracked sharpness's start vectors")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    steps = 200 if args.quick else 500
    rounds = 1 if args.quick else args.rounds
    wanted = args.only or [*SCENARIOS, "batchnorm", "samples", "starts", "overhead"]
    torch.manual_seed(0)
    vocab = text_loader()[1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); transformer "
          f"{n_params(CharTransformer(vocab)):,} parameters (context {CONTEXT}, batch 8, AdamW 1e-3, warm-up 50 + "
          f"cosine), ResNet {n_params(ResNet()):,} parameters (BatchNorm, batch 32, SGD 0.05 momentum 0.9); "
          f"{steps} steps; the default monitor (budget 0.25, 5 s)\n", flush=True)
    rows = verdicts([n for n in SCENARIOS if n in wanted], steps)
    # a plateau that waited for the budget to the end: the same run three times as long
    rows += verdicts([r["case"] for r in rows if not r["all"]], 3 * steps)
    if rows:
        verdict_table(rows)
    if "batchnorm" in wanted:
        print("\n| ResNet, SGD momentum 0.9 | step | sharpness / limit: eval mode (running statistics) | batch "
              "statistics, 256 as one batch | batch statistics, batches of 32 | loss eval mode | loss batch statistics |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in batch_norm_sharpness(100 if args.quick else 300):
            print(f"| lr {r['lr']:g} | {r['step']} | {r['eval']:.3g} | {r['batch']:.3g} | {r['batches']:.3g} | "
                  f"{r['loss_eval']:.4g} | {r['loss_batch']:.4g} |")
    if "samples" in wanted:
        sizes = (8, 16, 32, 64, 128, 256, 512)
        print("\n| healthy run | step | " + " | ".join(f"{n} samples" for n in sizes) + " |")
        print("|---|---:|" + "---:|" * len(sizes))
        for kind, at, most in (("transformer", (100, 400), 256), ("resnet", (100, 400), 512)):
            for r in sample_sharpness(kind, (50, 200) if args.quick else at, tuple(n for n in sizes if n <= most)):
                print(f"| {r['model']} | {r['step']} | " + " | ".join(
                    f"{r[n]:.4g} ({r[n] / r[most]:.2f}x)" if n in r else "-" for n in sizes) + " |")
        print("\n| ResNet, 64 images | step | λ_max (converged) | 2 products: value / λ_max | residual r | "
              "value·(1 + r) / λ_max | 1 product: value / λ_max |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in cut_short(steps=200 if args.quick else 400):
            (two, res), (one, _) = r[2], r[1]
            print(f"| healthy | {r['step']} | {r['top']:.4g} | {two / r['top']:.3f} | {res:.3g} | "
                  f"{two * (1 + res) / r['top']:.3f} | {one / r['top']:.3f} |")
    if "starts" in wanted:
        names = ("random", "eigenvector", "update", "gradient")
        print("\n| healthy run | step | λ_max (1e-4) | " + " | ".join(
            f"from the {n}: products to 1 %, one product reads" for n in names) + " |")
        print("|---|---:|---:|" + "---|" * len(names))
        for kind in ("transformer", "resnet"):
            for r in start_vectors(kind, 100 if args.quick else 200):
                print(f"| {r['model']} | {r['step']} | {r['top']:.4g} | " + " | ".join(
                    f"{r[n][0]}, {r[n][1]:.3f}" if n in r else "-" for n in names) + " |")
    if "overhead" in wanted:
        cost = [overhead(kind, 150 if args.quick else 400, rounds) for kind in ("transformer", "resnet")]
        print(f"\n| healthy run, {rounds} paired rounds (medians) | steps | unmonitored s | monitored s | wall "
              "overhead | own clock | sharpness every 50: s | wall overhead | own clock | sharpness samples, "
              "intervals | same trajectory | before the cap (own clock, one run) | targets |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|")
        for c in cost:
            met = ("met" if c["own_default"] <= 0.10 and c["default"] / c["plain"] - 1 <= 0.10 else "NOT met",
                   "met" if c["own_sharpness"] <= 0.15 and c["sharpness"] / c["plain"] - 1 <= 0.15
                   and c["interval"] == [50] else "NOT met")  # spread out by the cap: not every 50
            print(f"| {c['model']} | {c['steps']} | {c['plain']:.1f} | {c['default']:.1f} | "
                  f"{c['default'] / c['plain'] - 1:+.1%} | {c['own_default']:.1%} | {c['sharpness']:.1f} | "
                  f"{c['sharpness'] / c['plain'] - 1:+.1%} | {c['own_sharpness']:.1%} | {c['samples']}, "
                  f"{c['interval']} | {'yes' if c['same'] else 'NO'} | {c['before']:.1%} | "
                  f"<= 10 % ({met[0]}), <= 15 % ({met[1]}) |")


if __name__ == "__main__":
    main()
