"""SIGINT and SIGTERM sent to a command's main process only end its workers and leave a resumable run.

A terminal's Ctrl-C reaches the whole process group, but ``timeout -s INT``, ``kill`` and job
schedulers signal the main process alone: these tests do that, then look for every process the
command had started (``/proc/PID/task/*/children``, Linux only).
"""

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")

SCRIPT = Path(sys.executable).with_name("descentlab")
#: A comparison whose two tuning points run in a pool of two workers.
COMPARE = ["compare", "--workload", "minimum", "--optimizers", "sgd,adam", "--budget", "1", "--seeds", "1",
           "--batch-size", "full", "--workers", "2", "--no-progress"]
#: Seconds every wait may take on a loaded 2-core CI machine (interpreters importing torch).
PATIENCE = 90
#: Seconds every process the command started gets to be gone after the main process was signalled
#: (the workers end at once; multiprocessing's resource tracker ends once the main process has).
PROMPT = 10


def _identity(pid: int) -> tuple[int, str] | None:
    """``(pid, start time)`` of a live process (not a zombie), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return None if fields[0] in "ZX" else (pid, fields[19])


def _descendants(pid: int) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids = [int(word) for word in children.read_text().split()]
        except OSError:
            continue
        for child in pids:
            who = _identity(child)
            if who is not None:
                found |= {who} | _descendants(child)
    return found


def _alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    return {p for p in processes if _identity(p[0]) == p}


def _kill_left_over(processes: set[tuple[int, str]]) -> None:
    """A failed test must not leave a million-step worker running (the bug this file is about)."""
    for pid, _ in _alive(processes):
        os.kill(pid, signal.SIGKILL)


def _wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout: float = PATIENCE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the command ended ({process.returncode}) before {what}: {process.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"no {what} after {timeout} s")


def _start(argv: list[str]) -> subprocess.Popen:
    # A shell without job control starts background commands with SIGINT ignored (POSIX), and the
    # child would inherit that: give it the default disposition a terminal's Ctrl-C meets.
    return subprocess.Popen([str(SCRIPT), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_while_training(argv: list[str], out: Path, signum: int) -> tuple[int, str]:
    """Start the command, wait until both workers train (their staging folders exist), send
    ``signum`` to the main process only, and check that every process it started is gone
    within ``PROMPT`` seconds; returns its exit status and its stderr."""
    process = _start(argv)
    started: set[tuple[int, str]] = set()
    try:
        _wait_for(lambda: len(list((out / "runs").glob(".tune-*.partial"))) == 2, "two workers training", process)
        started = _descendants(process.pid)
        assert len(started) >= 2  # the two workers (and multiprocessing's resource tracker)
        process.send_signal(signum)
        _wait_for(lambda: not _alive(started), "end of the workers", timeout=PROMPT)
        _, err = process.communicate(timeout=PATIENCE)
        return process.returncode, err
    finally:
        if process.poll() is None:  # never leave a long run behind
            process.kill()
            process.communicate()
        _kill_left_over(started)


@pytest.mark.slow  # a whole comparison (two spawned pools) on resume: ~15 s on 2 cores
def test_sigint_to_the_main_process_ends_the_workers_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "run"
    # long enough that the signal lands while both points train, short enough to finish on resume
    argv = [*COMPARE, "--steps", "2000", "--eval-every", "500", "--out", str(out)]
    status, err = _interrupt_while_training(argv, out, signal.SIGINT)
    assert status == 130
    last = err.strip().splitlines()[-1]
    assert last == f"descentlab compare: interrupted; resume with: {shlex.join(['descentlab', *argv])}"
    assert not [p.name for p in (out / "runs").iterdir() if not p.name.startswith(".")]  # nothing half-finished

    resume = shlex.split(last.split("resume with: ", 1)[1])
    result = subprocess.run([str(SCRIPT), *resume[1:]], capture_output=True, text=True, timeout=PATIENCE * 2)
    assert result.returncode == 0, result.stderr
    assert "removed 2 unfinished staging folder(s)" in result.stderr
    names = sorted(p.name for p in (out / "runs").iterdir())
    added = [n for n in names if "-w" in n]  # rates tried beyond a grid's edge: tune-<optimizer>-w<round>
    assert sorted(set(names) - set(added)) == ["final-adam", "final-sgd", "tune-adam", "tune-sgd"]
    assert (out / "report.html").is_file()


def test_sigterm_to_the_main_process_ends_the_workers_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    argv = [*COMPARE, "--steps", "1000000", "--eval-every", "1000", "--out", str(out)]
    status, err = _interrupt_while_training(argv, out, signal.SIGTERM)
    assert status == 143
    assert err.strip().splitlines()[-1] == f"descentlab compare: terminated; resume with: " \
                                           f"{shlex.join(['descentlab', *argv])}"
    assert (out / "config.json").is_file()  # the sweep's root stays, so the same command resumes it


# --- the pool itself: both start methods, and a parent killed outright ----------------------------

POOL_SCRIPT = textwrap.dedent("""
    import sys, time
    from descentlab.worker_pool import worker_pool

    with worker_pool(2, start_method=sys.argv[1]) as pool:
        futures = [pool.submit(time.sleep, 1000) for _ in range(4)]
        print("submitted", flush=True)
        for future in futures:
            future.result()
""")


def _pool_workers(pid: int) -> set[tuple[int, str]]:
    """The worker processes under ``pid`` once there are two (multiprocessing's resource tracker left out)."""
    found = {p for p in _descendants(pid) if b"resource_tracker" not in _cmdline(p[0])}
    return found if len(found) >= 2 else set()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("start_method, signum, status", [
    ("fork", signal.SIGINT, -signal.SIGINT),  # an uncaught KeyboardInterrupt ends Python by SIGINT
    ("spawn", signal.SIGKILL, -signal.SIGKILL),  # no clean-up at all: the workers notice their parent is gone
])
def test_pool_workers_end_with_their_parent(start_method, signum, status):
    process = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT, start_method], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers: set[tuple[int, str]] = set()
    try:
        assert process.stdout.readline().strip() == "submitted"
        workers = _wait_for(lambda: _pool_workers(process.pid), "two workers", process)
        process.send_signal(signum)
        process.communicate(timeout=PATIENCE)
        _wait_for(lambda: not _alive(workers), "end of the workers", timeout=PROMPT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        _kill_left_over(workers)
    assert process.returncode == status


def _blocked_signals(status: Path) -> set[int]:
    """The signals a thread or process blocks, as the kernel reports them (``SigBlk``, a hex mask)."""
    mask = next(int(line.split()[1], 16) for line in status.read_text().splitlines() if line.startswith("SigBlk:"))
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def _report_pid() -> int:
    return os.getpid()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the threads' masks from /proc")
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_only_the_main_thread_takes_an_interrupt_and_the_workers_can_be_terminated(start_method):
    """A SIGINT the kernel hands to one of the executor's helper threads leaves a main thread
    blocked in ``future.result()`` asleep (a hung run, seen beside a busy suite): the pool's
    threads block SIGINT and SIGTERM, as /proc reports their masks; the main thread and the
    workers (which inherit the mask of the thread that started them) do not."""
    import threading

    from descentlab.worker_pool import worker_pool

    wanted = {signal.SIGINT, signal.SIGTERM}
    with worker_pool(2, start_method=start_method) as pool:
        helpers = [t for t in threading.enumerate() if t is not threading.main_thread()
                   and type(t).__module__.startswith(("concurrent.futures", "multiprocessing", "threading"))]
        helpers = [t for t in helpers if "Feeder" in t.name or type(t).__name__ == "_ExecutorManagerThread"]
        assert len(helpers) == 2  # the executor's manager and its call queue's feeder
        for thread in helpers:
            assert wanted <= _blocked_signals(Path(f"/proc/self/task/{thread.native_id}/status"))
        assert not wanted & _blocked_signals(Path(f"/proc/self/task/{threading.main_thread().native_id}/status"))
        worker = pool.submit(_report_pid).result()
        assert not wanted & _blocked_signals(Path(f"/proc/{worker}/status"))
