"""The Ray executor against a real local cluster: a head and a second node on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasrl.execution import SerialExecutor, Task
from nasrl.search import Search, SearchConfig
from test_async import check_complete_async_run, kill_9_and_resume
from test_search import SleepyEvaluator, final_state, nb201_archs

ray = pytest.importorskip("ray", reason="the ray extra is part of the test install")
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                   check=True, capture_output=True, env=env, timeout=180)
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([RAY, "start", f"--address={address}", *common], check=True, capture_output=True,
                       env=env, timeout=180)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_ray_retries_a_task_whose_worker_was_killed(cluster: str, tmp_path: Path) -> None:
    from nasrl.execution.ray import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[SleepyEvaluator.__module__])
    executor = RayExecutor(cluster, max_retries=2)
    executor.start(SleepyEvaluator(3.0, str(tmp_path)))
    try:
        assert ray.cluster_resources()["CPU"] == 2  # both nodes joined
        assert executor.capacity == 2
        for i, arch in enumerate(nb201_archs(2)):
            executor.submit(Task(i, arch, seed=i))
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.pid")) and time.monotonic() < deadline:
            time.sleep(0.1)
        victim = int(next(tmp_path.glob("*.pid")).stem)
        os.kill(victim, signal.SIGKILL)
        results = {}
        while executor.pending():
            results.update(executor.wait(timeout=120))
        assert sorted(results) == [0, 1] and all(r.ok for r in results.values()), results
        assert len(list(tmp_path.glob("*.pid"))) >= 3  # the killed task ran again elsewhere
    finally:
        executor.close()


def test_ray_search_gives_the_same_trials_as_serial(cluster: str, tmp_path: Path, nb201_table_path: Path) -> None:
    from nasrl.execution.ray import RayExecutor

    def config(executor: str) -> SearchConfig:
        return SearchConfig(space="nb201", evaluator="tabular", table=str(nb201_table_path), budget=15,
                            executor=executor, seed=5, ray_address=cluster)  # type: ignore[arg-type]

    Search.create(tmp_path / "serial", config("serial")).run(SerialExecutor())
    Search.create(tmp_path / "ray", config("ray")).run(RayExecutor(cluster))
    assert final_state(tmp_path / "ray")[0] == final_state(tmp_path / "serial")[0]


@pytest.mark.slow
def test_ray_async_search_completes_and_retries_a_killed_worker(cluster: str, tmp_path: Path,
                                                                nb201_table_path: Path) -> None:
    from nasrl.execution.ray import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[SleepyEvaluator.__module__])
    killed: list[int] = []
    finished = threading.Event()

    def kill_first_worker() -> None:
        # the first child to start writes its worker's pid, then sleeps 2 s: killed mid-trial
        while not list(tmp_path.glob("*.pid")) and not finished.is_set():
            time.sleep(0.05)
        pids = list(tmp_path.glob("*.pid"))
        if pids and not finished.is_set():
            os.kill(int(pids[0].stem), signal.SIGKILL)
            killed.append(int(pids[0].stem))

    config = SearchConfig(space="nb201", evaluator="tabular", table=str(nb201_table_path), budget=6,
                          executor="ray", ray_address=cluster, seed=5, strategy="random", mode="async")
    search = Search.create(tmp_path / "run", config)
    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    try:
        result = search.run(RayExecutor(cluster, max_retries=2), evaluator=SleepyEvaluator(2.0, str(tmp_path)))
    finally:
        finished.set()
        killer.join()
    search.close()
    assert killed and result.counts["evaluated"] == 6 and result.counts["complete"] == 6
    check_complete_async_run(tmp_path / "run", 6)


@pytest.mark.slow
def test_ray_async_kill_9_of_the_driver_then_resume_loses_no_finished_trial(cluster: str, tmp_path: Path,
                                                                            nb201_table_path: Path) -> None:
    # two kills at most: each driver start connects to Ray, which takes a while here
    budget, run = 16, tmp_path / "run"
    ray_args = ["--executor", "ray", "--ray-address", cluster]
    first = ["search", "--space", "nb201", "--evaluator", "tabular", "--table", str(nb201_table_path),
             "--budget", str(budget), *ray_args, "--seed", "3", "--set", "mode=async",
             "--set", "async_checkpoint_seconds=0", "--quiet", "--out", str(run)]
    resume = ["resume", str(run), *ray_args, "--quiet"]
    assert kill_9_and_resume(run, first, resume, budget, seed=1, attempts=2) >= 1
