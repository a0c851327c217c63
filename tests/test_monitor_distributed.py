"""A DDP job (two gloo ranks, each watching its own share of the data) reaches one verdict
together, identical on every rank, from the all-reduced evidence; a remedy is applied on every
rank or none; only rank 0 logs."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import monitor_ranks


def _same(stalls):
    """A stall as every rank must agree on it: all but the wall time each rank's clock measured."""
    out = []
    for stall in stalls:
        stall = {k: v for k, v in stall.items() if k != "seconds"}
        if stall.get("trials"):
            stall["trials"] = {k: v for k, v in stall["trials"].items() if k != "seconds"}
        out.append(stall)
    return out


def _ranks(tmp_path, how, remedies=False, job="run"):
    mp.start_processes(monitor_ranks.worker, args=(2, str(tmp_path / "init"), str(tmp_path), how, remedies, job),
                       nprocs=2, join=True, start_method="fork")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
@pytest.mark.parametrize("how", ["even", "noniid"])
def test_both_ranks_reach_the_one_process_verdict_from_the_all_reduced_evidence(tmp_path, how):
    """Equal shares (iid, or non-iid: each rank half the classes, whose local gradients are large while
    their mean is ~0): the DDP run is the one-process run on all the data, and so are its stalls."""
    ranks = _ranks(tmp_path, how)
    one = monitor_ranks.run(0, 1, how="all")
    assert _same(ranks[0]["stalls"]) == _same(ranks[1]["stalls"])
    got, want = ranks[0]["stalls"], one["stalls"]
    assert [s["verdict"] for s in got] == [s["verdict"] for s in want] and want[0]["verdict"] == "saddle"
    for a, b in zip(got, want):
        assert a["step"] == b["step"]
        assert a["evidence"]["gradient"]["norm"] == pytest.approx(b["evidence"]["gradient"]["norm"], rel=1e-3)
        assert a["min_eigenvalue"] == pytest.approx(b["min_eigenvalue"], rel=1e-3)
    # up to the stall the runs agree to float32's summation order (the all-reduce adds the shards'
    # gradients in another order); after its escape step, which leaves the saddle along negative
    # curvature, that difference grows (1 + lr |lambda_min|)x a step like any other, for 140 steps
    stall_step = want[0]["step"]
    before = [v for step, v in one["tracked"] if step <= stall_step]
    assert [v for _, v in ranks[0]["tracked"]][:len(before)] == pytest.approx(before, rel=1e-5)
    assert [v for _, v in ranks[0]["tracked"]] == pytest.approx([v for _, v in one["tracked"]], rel=1e-3)
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_uneven_shards_agree_and_a_remedy_is_applied_on_every_rank(tmp_path):
    ranks = _ranks(tmp_path, "uneven", remedies=True)
    assert _same(ranks[0]["stalls"]) == _same(ranks[1]["stalls"]) and ranks[0]["stalls"]
    assert ranks[0]["logged"] and not ranks[1]["logged"]  # one finding line per job, from rank 0
    assert all(s["trials"]["status"] == "ran" and s["trials"]["eval_samples"] == 600 for s in ranks[0]["stalls"]
               if s.get("trials"))
    # a standardizing remedy divides by the statistics of all the ranks' data (here, all 600 rows)
    _, X, _ = monitor_ranks.problem()
    spread = X.double().std(dim=0)
    for stall in ranks[0]["stalls"]:
        for trial in (stall.get("trials") or {}).get("trials", []):
            if (trial.get("change") or {}).get("change", {}).get("standardize"):
                mean, std = trial["change"]["change"]["standardize"]
                torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), X.double().mean(dim=0))
                torch.testing.assert_close(torch.tensor(std, dtype=torch.float64),
                                           torch.where(spread > 0, spread, torch.ones_like(spread)))
    applied = [s["remedy_applied"] for s in ranks[0]["stalls"]]
    assert applied == [s["remedy_applied"] for s in ranks[1]["stalls"]]
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_a_diverged_ddp_run_is_rolled_back_on_every_rank_to_the_same_weights(tmp_path):
    """Uneven shards, so each rank's own tracked loss (and its best step) could differ: rank 0's
    last good point is put back everywhere, the weights stay identical, and the run goes on finite."""
    ranks = _ranks(tmp_path, "uneven", job="diverging")
    assert ranks[0]["applied"] == ranks[1]["applied"] and ranks[0]["applied"][:1] == ["rollback"]
    assert _same(ranks[0]["stalls"]) == _same(ranks[1]["stalls"]) and ranks[0]["stalls"][0]["verdict"] == "diverged"
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)
    assert bool(torch.isfinite(ranks[0]["params"]).all()) and ranks[0]["lr"] < 1e3


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_a_ddp_loop_without_zero_grad_is_named_on_every_rank_and_repaired_on_each(tmp_path):
    """Uneven shards: the loop's gradient (DDP's average, the same on every rank) against the
    loss's, all-reduced over the ranks' shares: one ``accumulating_gradient`` at one step on both
    ranks, ``zero-grad`` applied on both, the weights identical after; the one-process run on all
    the data names it at the same step."""
    ranks = _ranks(tmp_path, "uneven", job="accumulating")
    assert _same(ranks[0]["stalls"]) == _same(ranks[1]["stalls"])
    assert [s["verdict"] for s in ranks[0]["stalls"]] == ["accumulating_gradient"]
    assert ranks[0]["applied"] == ranks[1]["applied"] == ["zero-grad"]
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)
    one = monitor_ranks.run_accumulating(0, 1, "all")
    assert [(s["step"], s["verdict"]) for s in one["stalls"]] == [(s["step"], s["verdict"]) for s in ranks[0]["stalls"]]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ringing_momentum_in_a_ddp_loop_is_named_on_every_rank_and_lowered_on_each(tmp_path):
    """Uneven shards, each rank its own batches: momentum 0.999 named `unstable` (it rings) at one
    step on both ranks, `lower-momentum` applied on both, the momentum 0.9 and the weights identical
    after."""
    ranks = _ranks(tmp_path, "uneven", job="ringing")
    assert _same(ranks[0]["stalls"]) == _same(ranks[1]["stalls"])
    first = ranks[0]["stalls"][0]
    assert first["verdict"] == "unstable" and first["evidence"]["rate"]["ring_half_life"] > 1000
    assert ranks[0]["applied"] == ranks[1]["applied"] and ranks[0]["applied"][0] == "lower-momentum"
    assert ranks[0]["momentum"] == ranks[1]["momentum"] == 0.9
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)
