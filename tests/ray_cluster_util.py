"""Helpers of the tests that start a real Ray cluster on this machine.

Ray never binds a node to 127.0.0.1 while the machine has another interface, and test traffic
stays on loopback, so such a test re-executes itself (a pytest subprocess running only that
test) inside namespaces of its own: a network namespace where only loopback exists (Ray then uses
127.0.0.1) and a PID namespace, so that every process the test starts (Ray's GCS, raylets,
workers, a driver) ends when the test process ends, whatever happens. Creating namespaces needs
root; elsewhere these tests are skipped, with that reason (without Ray they fail: CI installs it).
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from profiler.targets import TARGET_LABEL

REPO = Path(__file__).resolve().parent.parent
INNER_ENV = "SPARSEBENCH_TEST_PRIVATE_NETWORK"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it
# --kill-child: the namespace's first process dies with unshare (e.g. on a timeout), and with it
# every process of the PID namespace; --mount-proc: /proc shows that namespace, as Ray expects
NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
# The inner pytest leaves without interpreter finalization once the test has passed or failed
# (its nodes and driver are already shut down; PID 1 of the namespace exiting ends any left):
# Ray's core worker can crash in its exit handlers after nodes of its cluster were killed, which
# would turn a finished test's result into a signal with its report lost.
INNER_PYTEST = ("import os, sys, pytest\n"
                "code = pytest.main(['-q', '-x', '-p', 'no:cacheprovider', sys.argv[1]])\n"
                "sys.stdout.flush(); sys.stderr.flush()\n"
                "os._exit(int(code))\n")


def require_ray() -> None:
    """Fail (not skip) without Ray: `make test` installs the ``ray`` extra, so CI runs these tests."""
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.fail("Ray is not installed: pip install -e '.[ray]' (`make test` installs it)")


def namespace_problem() -> str | None:
    """Why this machine cannot give a test its own network and PID namespaces (None when it can)."""
    if os.geteuid() != 0:
        return ("needs root for `unshare --net --pid` (a Ray cluster must run where only loopback exists: "
                "Ray binds to the machine's other interface otherwise)")
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return f"needs {' and '.join(missing)} to give the Ray cluster a loopback-only network namespace"
    try:
        subprocess.run(NAMESPACES + ["true"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`unshare --net --pid` is not possible here ({exc}); a Ray cluster needs a loopback-only network"
    return None


def private_network(timeout_s: float = 600) -> Callable:
    """Decorator: outside the namespaces, run this test again in a subprocess inside them and fail
    with its output if it fails (skip when Ray is missing or namespaces are impossible); inside,
    run the test body."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def test(*args: Any, **kwargs: Any) -> Any:
            if os.environ.get(INNER_ENV) == "1":
                return fn(*args, **kwargs)
            require_ray()
            problem = namespace_problem()
            if problem:
                pytest.skip(problem)
            _run_inside(f"{Path(fn.__code__.co_filename).relative_to(REPO)}::{fn.__name__}", timeout_s)

        return test

    return wrap


def _die_with_parent() -> None:
    """In the forked child before exec: SIGKILL it when the test process dies (Linux
    ``PR_SET_PDEATHSIG``), so a killed test run takes its namespaces, and their Ray processes, along
    (``unshare --fork`` itself ignores SIGTERM)."""
    _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _run_inside(node_id: str, timeout_s: float) -> None:
    ray_tmp = tempfile.mkdtemp(prefix="sbray-")  # Ray's session files and sockets, removed afterwards
    # unbuffered, with faulthandler on for the whole life of the process: a crash (even one at
    # interpreter exit, after pytest's own faulthandler is off) still shows its output and traceback
    env = {**os.environ, INNER_ENV: "1", "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = NAMESPACES + ["sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, "-c", INNER_PYTEST, node_id]
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-6000:]
        pytest.fail(f"{node_id} did not finish within {timeout_s:.0f} s inside its namespaces:\n{out!r}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if proc.returncode != 0:
        how = f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
        pytest.fail(f"{node_id} failed inside its namespaces ({how}):\n"
                    f"{proc.stdout[-12000:]}\n{proc.stderr[-4000:]}")


@contextmanager
def local_cluster(*labels: str, cpus: int = 1, object_store_mb: int = 200) -> Iterator[tuple[Any, list[Any]]]:
    """A head node and one worker node per further label, each with ``cpus`` CPUs and its own
    ``sparsebench.target`` label; yields (cluster, worker nodes) and shuts everything down after."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": cpus, "object_store_memory": object_store_mb * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "labels": {TARGET_LABEL: labels[0]}})
    try:
        workers = [cluster.add_node(**node, labels={TARGET_LABEL: label}) for label in labels[1:]]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def result_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file as JSON (none skipped: a damaged line fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_until(what: str, check: Callable[[], Any], proc: subprocess.Popen | None = None, timeout_s: float = 300) -> Any:
    """Poll ``check`` (every 0.2 s) until it returns something truthy, and return that. Fails the
    test after ``timeout_s`` or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver exited (status {proc.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
