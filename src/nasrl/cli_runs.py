"""``nasrl search | resume | status | best | export | report``: search runs from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from nasrl.config import ConfigError, parse_assignment
from nasrl.errors import NasrlError

FLAG_KEYS = {  # command-line flag -> config key
    "method": "method",
    "space": "space",
    "dataset": "dataset",
    "data_dir": "data_dir",
    "strategy": "strategy",
    "evaluator": "evaluator",
    "table": "table",
    "budget": "budget",
    "seed": "seed",
    "executor": "executor",
    "workers": "workers",
    "ray_address": "ray_address",
    "train_on_valid": "train_on_valid",
}


def add_parsers(sub: Any, positive_int: Any) -> None:
    search = sub.add_parser("search", help="run an architecture search (the main job)")
    search.add_argument("--config", type=Path, default=None, help="TOML file of settings")
    search.add_argument("--method", choices=["multi-trial", "enas"],
                        help="multi-trial: train every child from scratch; enas: one-shot search with "
                             "shared weights, settings under oneshot.* (default: multi-trial)")
    search.add_argument("--space", help="search space (default: conv)")
    search.add_argument(
        "--dataset", help="digits | fashion-mnist | cifar10 | ptb (default: digits, ptb for rnn_cell)"
    )
    search.add_argument("--data-dir", help="folder holding the dataset's files")
    search.add_argument("--strategy", help="reinforce | random | evolution (default: reinforce)")
    search.add_argument("--evaluator", choices=["training", "tabular"], help="(default: training)")
    search.add_argument("--table", help="benchmark table for --evaluator tabular (default: found as for "
                                        "'nasrl benchmark', the table bundled with nasrl last)")
    search.add_argument("--budget", type=positive_int, help="architectures to evaluate (default: 30)")
    search.add_argument("--seed", type=int, help="run seed (default: 0)")
    search.add_argument("--executor", choices=["serial", "process", "ray"], help="(default: process)")
    search.add_argument("--workers", type=positive_int, help="parallel children (default: one per core)")
    search.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    search.add_argument("--out", type=Path, default=None, help="run directory (default: runs/search-TIME)")
    search.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting by dotted key, e.g. training.epochs=5 or strategy_config.learning_rate=0.01",
    )
    search.add_argument(
        "--train-on-valid",
        action="store_true",
        default=None,
        help="PTB without ptb.train.txt: train on the validation text",
    )
    search.add_argument("--objective", choices=["auto", "accuracy", "perplexity"],
                        help="quality term of the reward: accuracy^3 or 80/ppl^2 (default: auto, by space)")
    search.add_argument("--constraint", dest="constraints", action="append", default=None, metavar="SPEC",
                        help="cost constraint on params, macs, flops or latency_ms, e.g. 'params<=50k' "
                             "(hard) or 'latency_ms<=2:soft' (MnasNet-style); repeatable")
    search.add_argument("--latency-device", help="device latency_ms is measured on (default: cpu)")
    search.add_argument("--latency-mode", choices=["measure", "table"],
                        help="time each child, or predict from a per-op table cached per machine")
    search.add_argument("--quiet", action="store_true", help="no progress display")

    resume = sub.add_parser("resume", help="continue a run that stopped or was killed")
    resume.add_argument("run_dir", type=Path)
    resume.add_argument("--executor", choices=["serial", "process", "ray"])
    resume.add_argument("--workers", type=positive_int)
    resume.add_argument("--ray-address")
    resume.add_argument("--budget", type=positive_int, help="raise (or lower) the budget")
    resume.add_argument("--quiet", action="store_true")

    status = sub.add_parser("status", help="where a run stands")
    status.add_argument("run_dir", type=Path)

    best = sub.add_parser("best", help="the best architectures of a run")
    best.add_argument("run_dir", type=Path)
    best.add_argument("-n", type=positive_int, default=1, help="how many (default: 1)")
    best.add_argument("--json", action="store_true", help="architecture documents as JSON")
    best.add_argument("--pareto", action="store_true",
                      help="the non-dominated trials on (accuracy, each constrained metric)")
    best.add_argument("--metrics", default=None,
                      help="with --pareto: cost axes, comma-separated (default: the constrained metrics, "
                           "else params)")

    export = sub.add_parser("export", help="export the best architecture (or a trial) as a model")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--format", choices=["json", "pt2", "torchscript", "onnx"], default="json",
                        help="json: the architecture; pt2: torch.export program (torch.export.load); "
                             "torchscript: legacy torch.jit; onnx (default: json)")
    export.add_argument("--trial", type=int, default=None,
                        help="trial id (default: the best); in a one-shot run, the derived "
                             "architecture's rank (default: 1)")
    export.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="train the model on train + validation first (default: the run's epochs)",
    )
    export.add_argument("--untrained", action="store_true", help="export freshly initialized weights")
    export.add_argument("--out", type=Path, default=None, help="output file (default: RUN_DIR/export/...)")

    report = sub.add_parser("report", help="plots and an HTML page for a run")
    report.add_argument("run_dir", type=Path)


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            values = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NasrlError(f"config file not found: {args.config}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{args.config}: not valid TOML ({exc})") from None
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[key] = value
    objective = values.get("objective", {})
    if not isinstance(objective, dict):
        raise ConfigError("config key 'objective' must be a table of settings")
    for flag, key in (("objective", "quality"), ("constraints", "constraints")):
        if getattr(args, flag, None) is not None:
            objective[key] = getattr(args, flag)
    for flag, key in (("latency_device", "device"), ("latency_mode", "mode")):
        if getattr(args, flag, None) is not None:
            latency = objective.setdefault("latency", {})
            if not isinstance(latency, dict):
                raise ConfigError("config key 'objective.latency' must be a table of settings")
            latency[key] = getattr(args, flag)
    if objective:
        values["objective"] = objective
    for item in args.overrides:
        dotted, value = parse_assignment(item)
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a table of settings")
            node = child
        node[leaf] = value
    return values


def cmd_search(args: argparse.Namespace) -> int:
    from nasrl.search import Search, load_config

    config = load_config(_config_values(args))
    out = args.out or Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")
    if config.method == "enas":
        from nasrl.oneshot import cli as oneshot_cli
        from nasrl.oneshot.enas import OneShotSearch

        oneshot = OneShotSearch.create(out, config)
        oneshot_cli.header(oneshot, out)
        return oneshot_cli.run(oneshot, args.quiet)
    search = Search.create(out, config)
    from nasrl.models import builder_task

    default = "ptb" if builder_task(config.space) == "language" else "digits"
    where = "" if config.evaluator == "tabular" else f" on {config.dataset or default}"
    print(
        f"nasrl search: {config.space} space, {config.strategy}, {config.evaluator} evaluator"
        f"{where}, budget {config.budget}, "
        f"seed {config.seed}, {config.executor} executor; run directory {out}",
        flush=True,
    )
    print(f"  reward {search.objective.describe()}", flush=True)
    return _run(search, args.quiet)


def cmd_resume(args: argparse.Namespace) -> int:
    from nasrl.search import Search

    overrides = {
        k: getattr(args, k)
        for k in ("executor", "workers", "ray_address", "budget")
        if getattr(args, k) is not None
    }
    if _is_oneshot(args.run_dir):
        return _resume_oneshot(args.run_dir, overrides, args.quiet)
    search = Search.open(args.run_dir, overrides)
    counts = search.store.counts()
    print(
        f"nasrl resume: {args.run_dir}: {counts['evaluated']} of {search.config.budget} evaluated, "
        f"{counts['running'] + counts['queued']} to re-queue",
        flush=True,
    )
    return _run(search, args.quiet)


def _is_oneshot(run_dir: Path) -> bool:
    from nasrl.oneshot.enas import is_oneshot
    from nasrl.runs import open_run

    view = open_run(run_dir)
    try:
        return is_oneshot(view.info["config"])
    finally:
        view.store.close()


def _resume_oneshot(run_dir: Path, overrides: dict[str, Any], quiet: bool) -> int:
    from nasrl.oneshot import cli as oneshot_cli
    from nasrl.oneshot.enas import OneShotSearch

    if overrides:
        raise ConfigError(f"--{next(iter(overrides)).replace('_', '-')} does not apply to a one-shot run "
                          "(it trains in this process, with no budget of children)")
    search = OneShotSearch.open(run_dir)
    saved = search.store.checkpoint()
    print(f"nasrl resume: {run_dir}: {0 if saved is None else saved[0]} of {search.config.oneshot.epochs} "
          "one-shot epochs done", flush=True)
    return oneshot_cli.run(search, quiet)


def _run(search: Any, quiet: bool) -> int:
    from nasrl.monitor import ProgressDisplay, TensorBoardLogger

    if not quiet:
        search.listeners.append(ProgressDisplay(search.config.budget, search.store.counts()["evaluated"]))
    search.listeners.append(TensorBoardLogger(search.run_dir))
    try:
        result = search.run()
    except KeyboardInterrupt as stop:
        from nasrl.lock import stopped_message
        from nasrl.signals import exit_code

        print(stopped_message(search.run_dir, stop, search.store.counts()), file=sys.stderr)
        return exit_code(stop)
    counts = result.counts
    print(
        f"done: {counts['evaluated']} evaluated ({counts['failed']} failed, {counts['pruned']} pruned, "
        f"{counts['reused']} reused) "
        f"in {result.seconds:.1f}s; controller and store {result.overhead_seconds:.2f}s"
    )
    if result.best is None:
        print("no trial completed")
        return 1
    _print_best(search.space, [result.best], search.objective.cost_metrics)
    print(f"next: nasrl report {search.run_dir}")
    return 0


def _print_best(space: Any, trials: list[Any], costs: list[str] | None = None) -> None:
    from nasrl.objectives import format_number, format_reward

    for rank, t in enumerate(trials, 1):
        acc = t.metrics.get("val_acc_max_last", t.metrics.get("val_acc"))
        acc_text = f", validation accuracy {100 * acc:.2f}%" if acc is not None else ""
        if "val_ppl_best" in t.metrics:
            acc_text = f", validation perplexity {t.metrics['val_ppl_best']:.1f}"
        cost_text = "".join(f", {m} {format_number(t.metrics[m])}" for m in costs or [] if m in t.metrics)
        print(f"#{rank} trial {t.id}: reward {format_reward(t.reward)}{acc_text}{cost_text}")
        print(f"   {space.describe(t.arch)}")


def cmd_status(args: argparse.Namespace) -> int:
    from nasrl.runs import open_run

    view = open_run(args.run_dir)
    if view.config.method == "enas":
        from nasrl.oneshot import cli as oneshot_cli

        return oneshot_cli.status(view)
    store, info = view.store, view.info
    cfg = info["config"]
    counts = store.counts()
    best = store.best(1)
    updates = store.updates()
    from nasrl.lock import live_status

    state, counts = live_status(args.run_dir, info["status"], counts)
    print(
        f"run {args.run_dir}: {state}; {cfg['space']} space, {cfg['strategy']}, "
        f"seed {info['seed']}, nasrl {info['version']}"
    )
    print(view.reward_note)
    print(
        f"trials: {counts['evaluated']}/{cfg['budget']} evaluated, {counts['complete']} complete, "
        f"{counts['failed']} failed, {counts['pruned']} pruned, {counts['running']} running, "
        f"{counts['queued']} queued, {counts['reused']} reused"
    )
    if view.depth_note:
        print(view.depth_note)
    if state.startswith("running"):
        from nasrl.monitor import epoch_line

        for progress in store.progress():
            print(f"  {epoch_line(progress)}")
    print(
        f"controller updates: {len(updates)}"
        + (f", last {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(updates[-1][1]))}" if updates else "")
    )
    if best:
        from nasrl.objectives import format_reward

        quality = view.quality(best[0])
        what = ("" if quality is None else f", {view.objective.metric} "
                + (f"{100 * quality:.2f}%" if view.objective.quality == "accuracy" else f"{quality:.1f}"))
        print(f"best: trial {best[0].id}, reward {format_reward(best[0].reward)}{what}")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from nasrl.runs import open_run
    from nasrl.spaces.io import trial_document

    view = open_run(args.run_dir)
    if view.config.method == "enas":
        if args.pareto or args.metrics is not None:
            raise NasrlError("--pareto and --metrics need a multi-trial run (a one-shot run has no costs)")
        from nasrl.oneshot import cli as oneshot_cli

        return oneshot_cli.best(view, args.n, args.json)
    space = view.space
    costs = view.objective.cost_metrics
    if args.pareto:
        axes = _front_axes(args.metrics)
        costs, trials = view.pareto(axes)
        if not trials:
            raise NasrlError(f"{args.run_dir}: no completed feasible trial with {', '.join(costs)} yet")
    else:
        if args.metrics is not None:
            raise NasrlError("--metrics goes with --pareto")
        trials = view.store.best(args.n)
        if not trials:
            raise NasrlError(f"{args.run_dir}: no completed feasible trial yet")
    if args.json:
        docs = [trial_document(space, t) for t in trials]
        print(json.dumps(docs[0] if args.n == 1 and not args.pareto else docs, indent=2))
    else:
        if args.pareto:
            print(f"Pareto front of {len(trials)} trials on ({view.objective.metric}, {', '.join(costs)})")
        _print_best(space, trials, costs)
    return 0


def _front_axes(text: str | None) -> list[str] | None:
    from nasrl.objectives import COST_METRICS

    if text is None:
        return None
    axes = [m.strip() for m in text.split(",") if m.strip()]
    for m in axes:
        if m not in COST_METRICS:
            raise NasrlError(f"--metrics: unknown metric {m!r} (known: {', '.join(COST_METRICS)})")
    if not axes:
        raise NasrlError("--metrics: give at least one metric")
    return axes


def cmd_export(args: argparse.Namespace) -> int:
    from nasrl.export import export_run

    path = export_run(
        args.run_dir,
        args.format,
        trial_id=args.trial,
        epochs=args.epochs,
        untrained=args.untrained,
        out=args.out,
        log=lambda m: print(m, flush=True),
    )
    print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nasrl.report import write_report
    from nasrl.runs import open_run

    view = open_run(args.run_dir)
    if view.config.method == "enas":
        from nasrl.oneshot.report import write_oneshot_report

        print(f"wrote {write_oneshot_report(view)}")
        return 0
    page = write_report(view)
    print(f"wrote {page}")
    return 0


COMMANDS = {
    "search": cmd_search,
    "resume": cmd_resume,
    "status": cmd_status,
    "best": cmd_best,
    "export": cmd_export,
    "report": cmd_report,
}
