"""The objective: one place shapes the reward, and what a strategy is told is exactly it."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasrl.benchmark import run_tabular, tabular_objective
from nasrl.config import ConfigError
from nasrl.evaluators import TabularEvaluator
from nasrl.objectives import (
    Constraint,
    Objective,
    ObjectiveConfig,
    hypervolume_2d,
    pareto_front,
    parse_constraint,
)
from nasrl.search import Search, SearchConfig, load_config
from nasrl.strategies import Observation, Reinforce, ReinforceConfig, make_strategy
from nasrl.strategies.base import Strategy

LEGACY_RUN = Path(__file__).parent / "data" / "legacy-run-0.1.0"


def nasrl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True,
                          timeout=timeout)


# -- constraints and rewards ---------------------------------------------------------------------
def test_constraint_specs_parse_with_suffixes_and_weights() -> None:
    assert parse_constraint("params<=50k") == Constraint("params", 50_000.0, "hard")
    assert parse_constraint(" macs <= 2.5M ") == Constraint("macs", 2_500_000.0, "hard")
    assert parse_constraint("latency_ms<=2:soft") == Constraint("latency_ms", 2.0, "soft", -0.07, 0.0)
    assert parse_constraint("flops<=1G:soft=-0.5") == Constraint("flops", 1e9, "soft", -0.5, 0.0)
    assert parse_constraint("params<=1e5:soft=-0.07/-0.07") == Constraint("params", 1e5, "soft", -0.07, -0.07)
    assert str(parse_constraint("params<=100k:soft=-0.5/-0.1")) == "params<=100k:soft=-0.5/-0.1"


@pytest.mark.parametrize(("spec", "needle"), [
    ("params<50k", "expected METRIC<=VALUE"),
    ("params=<50k", "expected METRIC<=VALUE"),
    ("accuracy<=0.9", "unknown metric 'accuracy'"),
    ("params<=-5", "positive number"),
    ("params<=0", "positive number"),
    ("params<=lots", "not a number"),
    ("params<=50k:firm", "neither 'hard' nor 'soft'"),
    ("params<=50k:hard=-1", "weights belong to soft"),
    ("params<=50k:soft=0.5", "weights must be <= 0"),
    ("params<=50k:soft=-1/-1/-1", "at most two weights"),
])
def test_bad_constraints_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_constraint(spec)


def test_paper_rewards_and_mnasnet_costs() -> None:
    acc = Objective(ObjectiveConfig())
    assert acc.metric == "val_acc_max_last"
    assert acc.evaluate({"val_acc_max_last": 0.9}).reward == pytest.approx(0.729)
    assert Objective(ObjectiveConfig(), evaluator="tabular").metric == "val_acc"
    ppl = Objective(ObjectiveConfig(), task="language")
    assert ppl.metric == "val_ppl_best" and not ppl.higher_is_better
    assert ppl.evaluate({"val_ppl_best": 100.0}).reward == pytest.approx(80 / 100**2)

    soft = Objective(ObjectiveConfig(constraints=("params<=100k:soft=-0.5/-0.1",)))
    # above the target: (2)^-0.5; below: (0.5)^-0.1
    assert soft.evaluate({"val_acc_max_last": 0.5, "params": 200e3}).reward == pytest.approx(0.125 * 2**-0.5)
    assert soft.evaluate({"val_acc_max_last": 0.5, "params": 50e3}).reward == pytest.approx(0.125 * 0.5**-0.1)

    hard = Objective(ObjectiveConfig(constraints=("params<=100k",), infeasible_reward=-1.0))
    inside = hard.evaluate({"val_acc_max_last": 0.5, "params": 100e3})
    assert inside.feasible and inside.reward == pytest.approx(0.125)
    outside = hard.evaluate({"val_acc_max_last": 0.99, "params": 100_001})
    assert not outside.feasible and outside.reward == -1.0 and outside.quality == 0.99
    assert outside.violations == ("params 100.001k > 100k",)
    unlearned = Objective(ObjectiveConfig(constraints=("params<=1k",), infeasible_reward=None))
    assert unlearned.evaluate({"val_acc_max_last": 0.5, "params": 2e3}).reward is None

    missing = hard.evaluate({"val_acc_max_last": 0.5})
    assert missing.reward is None and "no 'params' metric" in (missing.error or "")
    assert Objective(ObjectiveConfig(), task="language").evaluate({"val_ppl_best": math.inf}).error


def test_objective_config_is_strict() -> None:
    with pytest.raises(ConfigError, match="two constraints on 'params'"):
        ObjectiveConfig(constraints=("params<=1k", "params<=2k:soft"))
    with pytest.raises(ConfigError, match="needs trained language models"):
        Objective(ObjectiveConfig(quality="perplexity"), evaluator="tabular")
    with pytest.raises(ConfigError, match="accuracy_power"):
        ObjectiveConfig(accuracy_power=0)


def test_pareto_front_and_hypervolume_on_hand_made_points() -> None:
    points = [(0.9, [100.0]), (0.8, [50.0]), (0.85, [120.0]), (0.8, [60.0]), (0.7, [10.0]), (0.9, [100.0])]
    # (0.85, 120) is dominated by (0.9, 100); (0.8, 60) by (0.8, 50); the duplicate stays
    assert pareto_front(points) == [0, 5, 1, 4]
    # perplexity: lower is better
    assert pareto_front([(100.0, [1.0]), (90.0, [2.0]), (95.0, [3.0])], higher_is_better=False) == [1, 0]
    # staircase from the reference (0.5, 200): slabs 190 x 0.2 + 150 x 0.1 + 100 x 0.1
    front = [(0.7, 10.0), (0.8, 50.0), (0.9, 100.0)]
    assert hypervolume_2d(front, (0.5, 200.0)) == pytest.approx(190 * 0.2 + 150 * 0.1 + 100 * 0.1)
    # dominated and outside points add nothing
    assert hypervolume_2d([*front, (0.6, 150.0), (0.95, 250.0), (0.4, 1.0)], (0.5, 200.0)) == pytest.approx(63.0)


# -- the seam: what a strategy is told ---------------------------------------------------------------
class Spy:
    """Records every observation a strategy is told, then passes it on."""

    def __init__(self, strategy: Strategy) -> None:
        self.told: list[Observation] = []
        self.inner = strategy.tell

        def tell(observations: list[Observation]) -> None:
            self.told += observations
            self.inner(observations)

        strategy.tell = tell  # type: ignore[method-assign]


def _ema(told: list[float], batch: int, decay: float) -> float:
    baseline = None
    for k in range(0, len(told) - len(told) % batch, batch):
        mean = float(torch.tensor(told[k:k + batch]).mean())
        baseline = mean if baseline is None else decay * baseline + (1 - decay) * mean
    assert baseline is not None
    return baseline


def test_training_search_tells_the_strategy_the_papers_reward_once(tmp_path: Path) -> None:
    paper = ReinforceConfig.paper()
    config = load_config({"space": "conv", "space_params": {"num_layers": 2}, "budget": 10, "executor": "serial",
                          "strategy_config": {"learning_rate": paper.learning_rate, "avoid_seen": False,
                                              "baseline": paper.baseline,
                                              "baseline_decay": paper.baseline_decay, "elite_weight": 0.0},
                          "training": {"epochs": 2, "max_train_samples": 300}})
    search = Search.create(tmp_path / "run", config)
    spy = Spy(search.strategy)
    search.run()
    stored = {t.arch.key: t for t in search.store.trials() if t.reused_from is None}
    assert spy.told and all(o.reward is not None for o in spy.told)
    for obs in spy.told:
        acc = stored[obs.arch.key].metrics["val_acc_max_last"]
        assert obs.reward == pytest.approx(acc**3, rel=1e-12)  # acc^3, not (acc^3)^3
        assert stored[obs.arch.key].reward == pytest.approx(acc**3, rel=1e-12)
    # the controller's baseline is the EMA of batch means of acc^3: it learned from acc^3
    strategy = search.strategy
    assert isinstance(strategy, Reinforce)
    told = [float(o.reward or 0.0) for o in spy.told]
    assert strategy.baseline == pytest.approx(_ema(told, 5, paper.baseline_decay), rel=1e-6)
    assert max(told) < 1 and strategy.baseline > min(told) ** 1.5  # not in (acc^3)^3's range


def test_language_search_tells_80_over_ppl_squared(tmp_path: Path, ptb_dir: Path) -> None:
    config = load_config({"space": "rnn_cell", "space_params": {"base": 2}, "dataset": "ptb",
                          "data_dir": str(ptb_dir), "train_on_valid": True, "budget": 5, "executor": "serial",
                          "lm_training": {"epochs": 1, "max_train_tokens": 3000},
                          "build_options": {"hidden_size": 16, "embedding_size": 16, "num_layers": 1}})
    search = Search.create(tmp_path / "run", config)
    spy = Spy(search.strategy)
    search.run()
    stored = {t.arch.key: t for t in search.store.trials()}
    assert len(spy.told) == 5
    for obs in spy.told:
        ppl = stored[obs.arch.key].metrics["val_ppl_best"]
        assert obs.reward == pytest.approx(80 / ppl**2, rel=1e-12)


def test_tabular_search_and_benchmark_tell_val_acc_cubed(tmp_path: Path, nb201_table: TabularEvaluator,
                                                         nb201_table_path: Path) -> None:
    config = SearchConfig(space="nb201", evaluator="tabular", table=str(nb201_table_path), budget=10,
                          executor="serial")
    search = Search.create(tmp_path / "run", config)
    spy = Spy(search.strategy)
    search.run()
    for obs in spy.told:
        assert obs.reward == pytest.approx(nb201_table.lookup(obs.arch).val_acc ** 3 / 1e6, rel=1e-12)
    strategy = make_strategy("reinforce", nb201_table.space, 0)
    bench_spy = Spy(strategy)
    run_tabular(strategy, nb201_table, 10)
    assert len(bench_spy.told) >= 10
    for obs in bench_spy.told:
        assert obs.reward == pytest.approx(nb201_table.lookup(obs.arch).val_acc ** 3 / 1e6, rel=1e-12)


def test_constrained_tabular_search_stores_infeasible_trials_and_never_reports_them(
        tmp_path: Path, nb201_table_path: Path) -> None:
    run = tmp_path / "run"
    out = nasrl("search", "--space", "nb201", "--evaluator", "tabular", "--table", str(nb201_table_path),
                "--budget", "40", "--executor", "serial", "--quiet", "--out", str(run),
                "--constraint", "macs<=40M", "--set", "objective.infeasible_reward=-0.5",
                # off: told the table's feasible set, reinforce would propose no infeasible cell
                "--set", "strategy_config.constrained_decoding=false")
    assert out.returncode == 0, out.stderr
    assert "subject to macs<=40M (infeasible: reward -0.5)" in out.stdout
    from nasrl.runs import open_run

    view = open_run(run)
    trials = [t for t in view.store.trials() if t.reused_from is None]
    infeasible = [t for t in trials if not t.feasible]
    assert infeasible and all(t.metrics["macs"] > 40e6 and t.reward == -0.5 for t in infeasible)
    assert all(t.metrics["macs"] <= 40e6 for t in trials if t.feasible)
    best = nasrl("best", str(run), "-n", "40", "--json")
    docs = json.loads(best.stdout)
    assert docs and all(d["metrics"]["macs"] <= 40e6 for d in docs)
    front = nasrl("best", str(run), "--pareto", "--json")
    assert front.returncode == 0, front.stderr
    points = [(d["metrics"]["val_acc"], d["metrics"]["macs"]) for d in json.loads(front.stdout)]
    assert points == sorted(points, reverse=True)  # best accuracy first, costs falling
    # (two cells with the same table entry are both on the front: exact duplicates are kept)
    distinct = sorted(set(points), reverse=True)
    assert all(b[1] < a[1] for a, b in itertools.pairwise(distinct))
    status = nasrl("status", str(run))
    assert "reward val_acc^3; subject to macs<=40M" in status.stdout


def test_runs_written_before_the_objective_still_open_and_say_their_reward(tmp_path: Path) -> None:
    run = tmp_path / "legacy"
    shutil.copytree(LEGACY_RUN, run)
    status = nasrl("status", str(run))
    assert status.returncode == 0, status.stderr
    assert ("legacy run: trials store the reward val_acc_max_last^3; its reinforce strategy learned "
            "from (val_acc_max_last^3)^3, a defect of nasrl 0.1") in status.stdout
    best = nasrl("best", str(run), "--json")
    assert best.returncode == 0 and json.loads(best.stdout)["reward"] > 0
    report = nasrl("report", str(run))
    assert report.returncode == 0, report.stderr
    assert "legacy run" in (run / "report" / "index.html").read_text()
    resume = nasrl("resume", str(run))
    assert resume.returncode == 2 and "cannot resume" in resume.stderr
    assert len(resume.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "needle"), [
    (["--constraint", "params<50k"], "expected METRIC<=VALUE"),
    (["--constraint", "size<=5"], "unknown metric 'size'"),
    (["--constraint", "params<=-3"], "positive number"),
    (["--constraint", "latency_ms<=2", "--latency-device", "cuda:7"], "cuda:7"),
    (["--constraint", "latency_ms<=2", "--latency-device", "tpu"], "'tpu'"),
    (["--objective", "perplexity", "--evaluator", "tabular", "--space", "nb201"], "needs trained language"),
    (["--set", "objective.infeasible_reward=x"], "infeasible_reward"),
])
def test_bad_objective_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    out = nasrl("search", "--out", str(tmp_path / "run"), "--budget", "2", *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_benchmark_objective_rejects_latency() -> None:
    with pytest.raises(Exception, match="params, macs and flops only"):
        tabular_objective({"constraints": ["latency_ms<=2"]})


def test_shipped_nb201_costs_match_building_the_cells(nb201_table: TabularEvaluator) -> None:
    import random

    from nasrl.tables.nb201_costs import cell_costs, load_costs

    costs = load_costs()
    assert len(costs) == 15625
    # the benchmark's published ranges: 0.07M-1.53M parameters, 7.8M-220M MACs
    assert min(p for p, _ in costs.values()) == 73306 and max(p for p, _ in costs.values()) == 1531546
    assert min(m for _, m in costs.values()) == 7783040 and max(m for _, m in costs.values()) == 220119680
    for cell in random.Random(0).sample(sorted(costs), 4):
        assert cell_costs(cell) == costs[cell]
    metrics = nb201_table.metrics(nb201_table.best.arch)
    assert (metrics["params"], metrics["macs"]) == costs[nb201_table.space.to_string(nb201_table.best.arch)]


def test_children_breaking_a_static_hard_limit_are_screened_not_trained(tmp_path: Path) -> None:
    config = load_config({"space": "conv", "space_params": {"num_layers": 2}, "budget": 8, "executor": "serial",
                          "strategy": "random", "training": {"epochs": 1, "max_train_samples": 200},
                          "objective": {"constraints": ["params<=8k"]}})
    search = Search.create(tmp_path / "run", config)
    spy = Spy(search.strategy)
    search.run()
    trials = search.store.trials()
    screened = [t for t in trials if t.metrics.get("screened")]
    trained = [t for t in trials if "val_acc" in t.metrics]
    assert screened and trained and len(screened) + len(trained) == len(trials) == 8
    assert all(not t.feasible and t.metrics["params"] > 8000 and t.reward == 0.0 for t in screened)
    assert all(t.feasible and t.metrics["params"] <= 8000 for t in trained)
    told = {o.arch.key: o.reward for o in spy.told}
    assert all(told[t.arch.key] == 0.0 for t in screened)
    assert search.store.best(8) and all(t.feasible for t in search.store.best(8))


def test_latency_is_measured_and_predicted_from_a_cached_per_op_table(tmp_path: Path) -> None:
    from nasrl.latency import LatencyTable, measure_latency
    from nasrl.models import build_model
    from nasrl.objectives import LatencyConfig
    from nasrl.spaces import get_space

    space = get_space("conv", num_layers=2)
    small = space.make({"L0.filter_height": 1, "L0.filter_width": 1, "L0.filters": 24, "L0.inputs": [],
                        "L1.filter_height": 1, "L1.filter_width": 1, "L1.filters": 24, "L1.inputs": [0]})
    big = space.make({"L0.filter_height": 7, "L0.filter_width": 7, "L0.filters": 64, "L0.inputs": [],
                      "L1.filter_height": 7, "L1.filter_width": 7, "L1.filters": 64, "L1.inputs": [0]})
    x = torch.zeros(1, 1, 28, 28)
    models = {n: build_model(space, a, input_shape=(1, 28, 28), num_classes=10) for n, a in
              (("small", small), ("big", big))}
    cfg = LatencyConfig(repeats=5, warmup=2)
    measured = {n: measure_latency(m, x, cfg) for n, m in models.items()}
    assert 0 < measured["small"] < measured["big"]
    table = LatencyTable(LatencyConfig(mode="table", repeats=5, warmup=2), cache_dir=tmp_path)
    predicted = {n: table.predict(m, x) for n, m in models.items()}
    assert 0 < predicted["small"] < predicted["big"] and table.measured > 0
    again = LatencyTable(LatencyConfig(mode="table", repeats=5, warmup=2), cache_dir=tmp_path)
    assert again.predict(models["big"], x) == predicted["big"] and again.measured == 0  # from the file
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_a_search_with_a_soft_latency_target_records_latency_and_shapes_the_reward(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    monkeypatch.setenv("NASRL_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config({"space": "conv", "space_params": {"num_layers": 2}, "budget": 4, "executor": "serial",
                          "strategy": "random", "training": {"epochs": 1, "max_train_samples": 200},
                          "objective": {"constraints": ["latency_ms<=0.05:soft=-0.5/-0.1"],
                                        "latency": {"mode": "table", "repeats": 3, "warmup": 1}}})
    search = Search.create(tmp_path / "run", config)
    search.run()
    trials = search.store.trials()
    assert len(trials) == 4 and list((tmp_path / "cache" / "latency").glob("*.json"))
    for t in trials:
        lat, acc = t.metrics["latency_ms"], t.metrics["val_acc_max_last"]
        w = -0.5 if lat > 0.05 else -0.1
        assert t.reward == pytest.approx(acc**3 * (lat / 0.05) ** w, rel=1e-9)
