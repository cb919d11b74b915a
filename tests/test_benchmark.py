from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasrl.benchmark import run_tabular, summarize
from nasrl.errors import NasrlError
from nasrl.evaluators import TabularEvaluator, find_nb201_table
from nasrl.spaces.nb201 import NB201Space
from nasrl.strategies import make_strategy


def test_table_loads_with_the_known_facts(nb201_table: TabularEvaluator) -> None:
    assert len(nb201_table) == 15625 == NB201Space().size()
    best = nb201_table.best
    assert best.index == 13714
    assert best.val_acc == pytest.approx(84.892, abs=1e-3)
    assert best.test_acc == pytest.approx(89.03)
    result = nb201_table.evaluate(best.arch, seed=0)
    assert result.ok and result.metrics["val_acc"] == pytest.approx(0.84892, abs=1e-5)
    assert result.metrics["test_acc"] == pytest.approx(0.8903)


def test_budget_counts_distinct_architectures(nb201_table: TabularEvaluator) -> None:
    trace = run_tabular(make_strategy("random", nb201_table.space, 0), nb201_table, 40)
    assert len(trace.best_val) == 40
    assert trace.best_val == sorted(trace.best_val)
    # a strategy stuck on one architecture spends one evaluation, then repeats are free
    stuck = make_strategy("random", nb201_table.space, 0)
    arch = stuck.ask(1)[0]
    stuck.ask = lambda n: [arch] * n  # type: ignore[method-assign]
    trace = run_tabular(stuck, nb201_table, 10)
    assert len(trace.best_val) == 1 and trace.proposals == 10 * 50


def test_summary_reports_per_seed_values(nb201_table: TabularEvaluator) -> None:
    traces = [run_tabular(make_strategy(s, nb201_table.space, seed), nb201_table, 60)
              for s in ("random", "evolution") for seed in (0, 1)]
    summary = summarize(traces, 60)
    assert summary["checkpoints"] == [50, 60]
    cp = summary["strategies"]["random"]["checkpoints"]["50"]
    assert cp["val_acc"] == [traces[0].best_val[49], traces[1].best_val[49]]
    assert len(summary["strategies"]["evolution"]["found_best_at"]) == 2


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_tables_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(NasrlError, match="missing column 'test_acc'"):
        TabularEvaluator(_write(tmp_path / "a.csv", "index,arch,val_acc\n"))
    good = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(NasrlError, match="line 2: bad row"):
        TabularEvaluator(_write(tmp_path / "b.csv", f"index,arch,val_acc,test_acc\n0,{good},x,1\n"))
    with pytest.raises(NasrlError, match="line 2: bad row"):
        TabularEvaluator(_write(tmp_path / "c.csv", "index,arch,val_acc,test_acc\n0,|x~0|,1,1\n"))
    with pytest.raises(NasrlError, match="no rows"):
        TabularEvaluator(_write(tmp_path / "d.csv", "index,arch,val_acc,test_acc\n"))
    with pytest.raises(NasrlError, match="cannot read"):
        TabularEvaluator(tmp_path / "missing.csv")


def nasrl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True,
                          text=True, timeout=600)


def test_benchmark_command_writes_json_and_plot(nb201_table_path: Path, tmp_path: Path) -> None:
    out = nasrl("benchmark", "nb201", "--budget", "60", "--seeds", "3", "--jobs", "2",
                "--table", str(nb201_table_path), "--out", str(tmp_path),
                "--set", "evolution.population_size=20")
    assert out.returncode == 0, out.stderr
    assert "reinforce" in out.stdout and "found best" in out.stdout
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(data["strategies"]) == {"reinforce", "random", "evolution"}
    assert len(data["strategies"]["reinforce"]["checkpoints"]["60"]["val_acc"]) == 3
    assert data["configs"]["evolution"]["population_size"] == 20
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_is_independent_of_the_number_of_jobs(nb201_table_path: Path) -> None:
    from nasrl.benchmark import run_benchmark

    one = run_benchmark(nb201_table_path, ["reinforce"], [0, 1], 30, jobs=1)
    two = run_benchmark(nb201_table_path, ["reinforce"], [0, 1], 30, jobs=2)
    assert [t.best_val for t in one] == [t.best_val for t in two]


def test_a_benchmark_on_the_test_landscape_searches_and_scores_test_accuracy(
        nb201_table_path: Path, nb201_table: TabularEvaluator) -> None:
    from nasrl.benchmark import run_benchmark

    objective = {"constraints": ["macs<=30M"]}
    val = run_benchmark(nb201_table_path, ["random"], [3], 25, jobs=1, objective=objective)[0]
    test = run_benchmark(nb201_table_path, ["random"], [3], 25, jobs=1, objective=objective,
                         landscape="test")[0]
    # random asks the same cells on both; on "test" the searched column is test_acc
    assert [c for _, c in test.points or []] == [c for _, c in val.points or []]
    assert test.best_val == test.best_test and val.best_val != val.best_test
    tests = {round(100 * nb201_table.metrics(a.arch)["test_acc"], 6) for a in nb201_table.entries.values()}
    assert all(round(v, 6) in tests for v, _ in test.points or [])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["benchmark", "nb201", "--landscape", "noisy:x", "--table", "{table}"],
         "landscape 'noisy:x'"),
        (["benchmark", "nb201", "--strategies", "reinforce,ppo9"], "unknown strategy 'ppo9'"),
        (["benchmark", "nb201", "--budget", "0"], "--budget"),
        (["benchmark", "nb999"], "invalid choice"),
        (["benchmark", "nb201", "--table", "/nonexistent/t.csv"], "file not found"),
        (["benchmark", "nb201", "--set", "reinforce.lr=1", "--table", "{table}"],
         "unknown config key 'reinforce.lr'"),
        (["benchmark", "nb201", "--set", "random", "--table", "{table}"], "key=value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str,
                                          nb201_table_path: Path) -> None:
    out = nasrl(*[a.replace("{table}", str(nb201_table_path)) for a in args])
    assert out.returncode == 2
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_damaged_table_is_one_line_and_exit_2(nb201_table_path: Path, tmp_path: Path) -> None:
    # found on disk but cut off mid-row: read in the worker processes, not the CLI
    damaged = tmp_path / "nb201_cifar10.csv"
    damaged.write_text(gzip.decompress(nb201_table_path.read_bytes()).decode()[:300] + "garbage\n")
    out = nasrl("benchmark", "nb201", "--budget", "5", "--seeds", "2", "--table", str(damaged))
    assert out.returncode == 2
    assert "line 4: bad row" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_gzipped_table_reads_like_the_plain_one(nb201_table: TabularEvaluator, tmp_path: Path) -> None:
    assert nb201_table.path.name == "nb201_cifar10.csv.gz"
    text = "".join(gzip.decompress(nb201_table.path.read_bytes()).decode().splitlines(keepends=True)[:50])
    plain = TabularEvaluator(_write(tmp_path / "t.csv", text))
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    assert len(plain) == 49 and TabularEvaluator(packed).entries == plain.entries
    assert all(nb201_table.lookup(e.arch) == e for e in plain.entries.values())


DAMAGES = [
    (lambda raw: raw[: len(raw) // 2], "cannot read table"),  # truncated
    (lambda raw: raw[:2000] + bytes(b ^ 0xFF for b in raw[2000:2100]) + raw[2100:], "cannot read table"),
    (lambda raw: gzip.decompress(raw)[:5000], "cannot read table"),  # not gzip at all
]


@pytest.mark.parametrize(("damage", "needle"), DAMAGES, ids=["truncated", "corrupt", "not-gzip"])
def test_damaged_gzipped_table_is_one_line_and_exit_2(damage, needle: str, nb201_table_path: Path,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    damaged = tmp_path / "nb201_cifar10.csv.gz"
    damaged.write_bytes(damage(nb201_table_path.read_bytes()))
    with pytest.raises(NasrlError, match=f"{damaged}: {needle}"):
        TabularEvaluator(damaged)
    if damage is not DAMAGES[0][0]:
        return  # the command line path is the same for every damage: run it once
    out = nasrl("search", "--space", "nb201", "--evaluator", "tabular", "--table", str(damaged),
                "--budget", "2", "--executor", "serial", "--out", str(tmp_path / "run"))
    assert out.returncode == 2, out.stderr
    assert f"{damaged}: {needle}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_bundled_table_is_found_last(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     nb201_table_path: Path) -> None:
    import nasrl.evaluators.tabular as tabular

    monkeypatch.delenv("NASRL_NB201_TABLE", raising=False)
    monkeypatch.setattr(tabular, "NB201_LOCATIONS", (str(tmp_path / "cache"), str(tmp_path / "share")))
    assert find_nb201_table() == nb201_table_path  # nothing installed: the bundled one
    local = tmp_path / "share" / "nb201_cifar10.csv"
    local.parent.mkdir()
    local.write_text("index,arch,val_acc,test_acc\n")
    assert find_nb201_table() == local  # a table installed on the machine comes first
    # an explicit path or the environment variable never falls back
    with pytest.raises(NasrlError, match="file not found"):
        find_nb201_table(tmp_path / "missing.csv")
    monkeypatch.setenv("NASRL_NB201_TABLE", str(tmp_path / "missing.csv"))
    with pytest.raises(NasrlError, match="points to"):
        find_nb201_table()
    monkeypatch.setattr(tabular, "NB201_BUNDLED", ("nasrl.tables", "absent.csv.gz"))
    monkeypatch.delenv("NASRL_NB201_TABLE")
    local.unlink()
    with pytest.raises(NasrlError, match="nb201_cifar10.csv not found; pass its path"):
        find_nb201_table()


def test_benchmark_works_out_of_the_box_with_the_bundled_table(nb201_table_path: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NASRL_NB201_TABLE"} | {"HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "nasrl", "benchmark", "nb201", "--strategies", "random",
                          "--budget", "20", "--seeds", "2", "--jobs", "1"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    machine = Path("/usr/share/datasets/nasbench201/nb201_cifar10.csv")  # would come first
    if not machine.is_file():
        assert f"table {nb201_table_path}" in out.stdout
    assert "random" in out.stdout and "found best" in out.stdout
