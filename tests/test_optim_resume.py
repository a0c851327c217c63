"""Save mid-run, load into a fresh optimizer in a FRESH PROCESS, continue: bit-identical.

For every registry entry, and every entry under each wrapper, with a schedule attached.
All optimizers are resumed by one subprocess (this file, run as a script) to keep the test fast.
"""

import subprocess
import sys
from pathlib import Path

import torch

NAMES_ARG = "names"
HALF = 12  # steps before the save, and again after it


def all_names():
    from descentlab.optim import OPTIMIZERS

    bases = list(OPTIMIZERS)
    return bases + [f"lookahead:{b}" for b in bases] + [f"noisy:{b}" for b in bases] + ["lookahead:noisy:swats"]


def hyperparameters(name):
    # SWATS with tolerances that make it switch to SGD before the save (step 2 here) or after it
    # (step 16 here), so both the SGD phase and the Adam-phase switch state cross the process
    # boundary. The exact step is a threshold test in float32 and may move with the CPU's kernels.
    if name == "swats":
        return {"eps": 1e-2, "lr": 0.01}
    if name == "lookahead:noisy:swats":
        return {"eps": 1.5e-3, "lr": 0.03, "k": 5, "eta": 0.3}
    if name.startswith("lookahead"):
        return {"k": 5}  # a sync at step 10 before the save, one at 15 and 20 after it
    return {}


def build(name, seed):
    from descentlab.optim import make_optimizer
    from descentlab.schedules import make_scheduler

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = make_optimizer(name, model.parameters(), **hyperparameters(name))
    sched = make_scheduler(opt, "warmup-cosine:warmup=4,total=30,final=0.1")
    return model, opt, sched


def train(model, opt, sched, start, stop):
    for t in range(start, stop):
        data = torch.Generator().manual_seed(1000 + t)  # the batch depends on the step only
        x, y = torch.randn(16, 6, generator=data), torch.randn(16, 2, generator=data)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()


def resume(folder: Path) -> None:
    """Fresh process: a model with a different init, loaded from the checkpoint, runs the second half."""
    from descentlab import files

    for line in (folder / NAMES_ARG).read_text().splitlines():
        name, index = line.rsplit(" ", 1)
        checkpoint = files.load_torch(folder / f"{index}.pt")
        model, opt, sched = build(name, seed=12345)
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        sched.load_state_dict(checkpoint["scheduler"])
        train(model, opt, sched, HALF, 2 * HALF)
        files.save_torch(folder / f"{index}.resumed.pt", {"model": model.state_dict(), "optimizer": opt.state_dict()})


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    from descentlab import files

    names = all_names()
    finals = {}
    for index, name in enumerate(names):
        model, opt, sched = build(name, seed=0)
        train(model, opt, sched, 0, HALF)
        files.save_torch(tmp_path / f"{index}.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                    "scheduler": sched.state_dict()})
        train(model, opt, sched, HALF, 2 * HALF)
        finals[index] = (name, model.state_dict(), opt)
    (tmp_path / NAMES_ARG).write_text("\n".join(f"{n} {i}" for i, n in enumerate(names)))
    subprocess.run([sys.executable, __file__, str(tmp_path)], check=True, timeout=300,
                   env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    for index, (name, expected, opt) in finals.items():
        resumed = files.load_torch(tmp_path / f"{index}.resumed.pt")
        for key, value in expected.items():
            assert torch.equal(resumed["model"][key], value), f"{name}: {key} differs after resume"
        assert not torch.equal(expected["0.weight"], build(name, seed=0)[0].state_dict()["0.weight"]), name
        if name.endswith("swats"):
            group = resumed["optimizer"]["param_groups"][0]
            assert (group["phase"], group["switch_step"]) == (opt.param_groups[0]["phase"],
                                                              opt.param_groups[0]["switch_step"]), name
    switches = {name: opt.param_groups[0]["switch_step"] for name, _, opt in finals.values() if name.endswith("swats")}
    assert switches["swats"] <= HALF < switches["lookahead:noisy:swats"] <= 2 * HALF, switches


if __name__ == "__main__":
    torch.set_num_threads(1)
    resume(Path(sys.argv[1]))
