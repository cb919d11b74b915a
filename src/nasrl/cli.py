"""The ``nasrl`` command line: a thin layer over the Python API.

Bad input (an argument, a config value, a data file) is reported as one line on stderr
with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasrl import __version__
from nasrl.config import ConfigError, parse_assignment
from nasrl.errors import NasrlError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other bad input
        # name the subcommand ("nasrl benchmark: ..."); the top level is named by main()
        raise NasrlError(f"{self.prog}: {message}" if " " in self.prog else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nasrl", description="Neural architecture search with RL.")
    parser.add_argument("--version", action="version", version=f"nasrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bench = sub.add_parser("benchmark", help="compare strategies on a tabular benchmark")
    bench.add_argument("benchmark", choices=["nb201"], help="which benchmark table")
    bench.add_argument("--strategies", default="reinforce,random,evolution",
                       help="comma-separated registered strategies (default: %(default)s)")
    bench.add_argument("--budget", type=_positive_int, default=500,
                       help="distinct architectures evaluated per run (default: %(default)s)")
    bench.add_argument("--seeds", type=_positive_int, default=100,
                       help="runs per strategy, seeds 0..N-1 (default: %(default)s)")
    bench.add_argument("--seed-offset", type=int, default=0, help="first seed (default: 0)")
    bench.add_argument("--table", default=None,
                       help="path of nb201_cifar10.csv or .csv.gz (default: $NASRL_NB201_TABLE, then "
                            "~/.cache/nasrl, /usr/share/datasets/nasbench201, then the table "
                            "bundled with nasrl)")
    bench.add_argument("--out", type=Path, default=None,
                       help="directory for benchmark.json and benchmark.png")
    bench.add_argument("--jobs", type=_positive_int, default=None,
                       help="worker processes (default: one per core)")
    bench.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="STRATEGY.KEY=VALUE",
                       help="override a strategy setting, e.g. reinforce.learning_rate=0.01, "
                            "or the objective's, e.g. objective.accuracy_power=1")
    bench.add_argument("--landscape", default="val",
                       help="the table's val_acc column as searched and scored: val | test | "
                            "noisy:SIGMA:SEED | without:OP (default: %(default)s)")
    bench.add_argument("--constraint", dest="constraints", action="append", default=[], metavar="SPEC",
                       help="cost constraint on params, macs or flops, e.g. 'macs<=median' (the "
                            "table's median) or 'params<=400k:soft' (repeatable)")
    _add_study_parser(sub)
    _add_train_parser(sub)
    from nasrl import cli_runs

    cli_runs.add_parsers(sub, _positive_int)
    return parser


def _add_study_parser(sub: Any) -> None:
    from nasrl.study import DEFAULT_VARIANTS

    study = sub.add_parser("study", help="compare controller variants on a tabular benchmark")
    study.add_argument("benchmark", choices=["nb201"], help="which benchmark table")
    study.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                       help="comma-separated variants of nasrl.study.VARIANTS (default: %(default)s)")
    study.add_argument("--budget", type=_positive_int, default=500,
                       help="distinct architectures evaluated per run (default: %(default)s)")
    study.add_argument("--seeds", type=_positive_int, default=100,
                       help="runs per variant, seeds OFFSET..OFFSET+N-1 (default: %(default)s)")
    study.add_argument("--seed-offset", type=_non_negative_int, default=0, help="first seed (default: 0)")
    study.add_argument("--landscape", default="val",
                       help="val | test | noisy:SIGMA:SEED | without:OP (default: %(default)s)")
    study.add_argument("--table", default=None, help="path of nb201_cifar10.csv[.gz] (default: as "
                                                     "for nasrl benchmark)")
    study.add_argument("--out", type=Path, default=None,
                       help="directory for study.md, study.json and study.png")
    study.add_argument("--jobs", type=_positive_int, default=2, help="worker processes (default: 2)")
    study.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="STRATEGY.KEY=VALUE",
                       help="override a setting of every variant of that strategy, "
                            "e.g. reinforce.batch_size=10")


def _add_train_parser(sub: Any) -> None:
    train = sub.add_parser("train", help="train one architecture on real data and report test accuracy")
    train.add_argument("--arch", required=True,
                       help="architecture: a JSON file, inline JSON, or the space's text form "
                            "(e.g. an nb201 cell string)")
    train.add_argument("--space", default=None,
                       help="space of the architecture (default: the one its JSON names)")
    train.add_argument("--space-param", dest="space_params", action="append", default=[],
                       metavar="KEY=VALUE", help="space parameter, e.g. predict_strides=true")
    train.add_argument("--dataset", default=None,
                       help="digits | fashion-mnist | cifar10, or ptb for rnn_cell (default: digits / ptb)")
    train.add_argument("--train-on-valid", action="store_true",
                       help="PTB without ptb.train.txt: train on the validation text")
    train.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    train.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default: 10)")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: 128)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05)")
    train.add_argument("--seed", type=int, default=0, help="seed for weights, split, order (default: 0)")
    train.add_argument("--final", action="store_true",
                       help="train on train + validation, as for a final model (no per-epoch validation)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any training setting, e.g. label_smoothing=0.1 or schedule=step")
    train.add_argument("--build", dest="build_options", action="append", default=[], metavar="KEY=VALUE",
                       help="model builder option, e.g. channels=16 for nb201")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    train.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    train.add_argument("--save", action="store_true",
                       help="write the weights (state_dict) and a results JSON next to the architecture file")
    train.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                       help="keep the training state in FILE after every epoch; the same command "
                            "run again resumes from it (image datasets)")
    train.add_argument("--stop-after", type=_positive_float, default=None, metavar="MINUTES",
                       help="with --checkpoint: stop at the first epoch end after MINUTES, to "
                            "continue with the same command (a long final training in sittings)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _int_at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(1, text)


def _non_negative_int(text: str) -> int:
    return _int_at_least(0, text)


def _strategy_overrides(items: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``reinforce.controller.hidden_size=64`` -> {"reinforce": {"controller": {...}}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, value = parse_assignment(item)
        name, _, rest = key.partition(".")
        if name not in names or not rest:
            raise ConfigError(f"--set {item!r}: key must start with one of {', '.join(names)}")
        node = out.setdefault(name, {})
        *parents, leaf = rest.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _name_list(text: str, flag: str, what: str) -> list[str]:
    """A comma-separated list of names, at least one."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise NasrlError(f"{flag}: give at least one {what}")
    return names


def _check_out(out: Path | None) -> None:
    """An --out folder that can be written: checked now, not after the results are computed."""
    if out is not None:
        from nasrl.checks import writable_folder

        writable_folder(out, "--out")


def cmd_benchmark(args: argparse.Namespace) -> int:
    from nasrl.benchmark import (
        constrained_defaults,
        format_table,
        run_benchmark,
        summarize,
        tabular_objective,
        true_front_reference,
        write_outputs,
    )
    from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table
    from nasrl.strategies import strategy_class
    from nasrl.study import make_landscape

    names = _name_list(args.strategies, "--strategies", "strategy")
    for name in names:
        strategy_class(name)
    configs = _strategy_overrides(args.overrides, [*names, "objective"])
    _check_out(args.out)
    objective_values = configs.pop("objective", {})
    table = find_nb201_table(args.table)
    evaluator = make_landscape(TabularEvaluator(table), args.landscape)  # a bad spec fails here
    if args.constraints:
        objective_values["constraints"] = [_median_target(c, evaluator) for c in args.constraints]
    objective = tabular_objective(objective_values)
    configs = constrained_defaults(configs, objective_values)  # reinforce searches the front
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    start = time.perf_counter()
    print(f"nasrl benchmark nb201: {', '.join(names)}; budget {args.budget}; "
          f"{args.seeds} seeds; landscape {args.landscape}; table {table}; "
          f"reward {objective.describe()}", flush=True)
    if args.budget > len(evaluator):
        print(f"note: the table has {len(evaluator)} architectures; runs stop when a strategy "
              f"has evaluated them all", flush=True)
    traces = run_benchmark(table, names, seeds, args.budget, configs, jobs=args.jobs,
                           objective=objective_values, landscape=args.landscape)
    summary = summarize(traces, args.budget, front=true_front_reference(evaluator, objective))
    summary["table"] = str(table)
    summary["landscape"] = args.landscape
    summary["objective"] = objective.resolved()
    summary["configs"] = _resolved_configs(names, configs)
    summary["version"] = __version__
    print(format_table(summary))
    feasible = "feasible " if objective.constraints else ""
    print(f"best-so-far {feasible}val_acc (test_acc of that architecture below it), mean ± std; "
          f"'found best' = share of seeds that evaluated the table's best {feasible}cell "
          f"within {args.budget}. {time.perf_counter() - start:.1f}s")
    if "front" in summary:
        f = summary["front"]
        print(f"hv ratio: hypervolume of the found (val_acc, {f['metric']}) front / the true front's "
              f"({f['front_size']} cells), reference point ({f['reference'][0]:.3f}, "
              f"{f['reference'][1]:g})")
    if args.out is not None:
        write_outputs(summary, traces, args.out)
        print(f"wrote {args.out / 'benchmark.json'} and {args.out / 'benchmark.png'}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from nasrl.config import check_seed
    from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table
    from nasrl.study import (
        format_markdown,
        make_landscape,
        resolve_variants,
        run_study,
        summarize_study,
        write_study,
    )

    names = _name_list(args.variants, "--variants", "variant")
    check_seed(args.seed_offset + args.seeds - 1, "--seed-offset + --seeds - 1")
    overrides = _strategy_overrides(args.overrides, ["reinforce", "evolution", "random"])
    variants = resolve_variants(names, overrides)
    _check_out(args.out)
    table = find_nb201_table(args.table)
    make_landscape(TabularEvaluator(table), args.landscape)  # a bad spec or table fails here
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    start = time.perf_counter()
    print(f"nasrl study nb201: {', '.join(names)}; budget {args.budget}; {args.seeds} seeds "
          f"from {args.seed_offset}; landscape {args.landscape}; table {table}", flush=True)
    runs = run_study(table, variants, seeds, args.budget, args.landscape, jobs=args.jobs)
    summary = summarize_study(runs, args.budget)
    summary.update(table=str(table), landscape=args.landscape, version=__version__,
                   variants={n: {"strategy": s, "config": c} for n, (s, c) in variants.items()})
    seconds = time.perf_counter() - start
    summary["seconds"] = seconds
    print(format_markdown(summary))
    print(f"mean best-so-far val_acc ± std; 'best found' = share of seeds that evaluated the "
          f"table's best cell; gradient columns: means over the first updates (see nasrl.study). "
          f"{seconds:.1f}s with {args.jobs} workers")
    if args.out is not None:
        write_study(summary, args.out)
        print(f"wrote {args.out / 'study.md'}, study.json and study.png")
    return 0


def _median_target(spec: str, table: Any) -> str:
    """'macs<=median' -> 'macs<=N' with N the table's median of that metric."""
    import statistics

    metric, sep, rest = spec.partition("<=")
    value, colon, tail = rest.partition(":")
    if not sep or value.strip() != "median":
        return spec
    values = [table.metrics(e.arch).get(metric.strip()) for e in table.entries.values()]
    if any(v is None for v in values):
        raise ConfigError(f"constraint {spec!r}: the table has no {metric.strip()!r} column")
    # exact: many cells share the median's cost, and a rounded target would exclude them
    return f"{metric.strip()}<={statistics.median(values)!r}{colon}{tail}"


def _resolved_configs(names: Sequence[str], configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from nasrl.config import build, to_dict
    from nasrl.strategies import strategy_class

    return {n: to_dict(build(strategy_class(n).config_class, configs.get(n, {}))) for n in names}


def _assignments(items: Sequence[str]) -> dict[str, Any]:
    return dict(parse_assignment(item) for item in items)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from nasrl.checks import check_dataset
    from nasrl.config import build, check_seed
    from nasrl.data import load_images
    from nasrl.spaces.io import read_architecture
    from nasrl.training import TrainConfig, TrainResult, train_architecture
    from nasrl.training.common import check_device

    check_seed(args.seed, "--seed")
    check_device(args.device, "--device")
    space, arch = read_architecture(args.arch, args.space, _assignments(args.space_params))
    check_dataset(space.name, args.dataset, train_on_valid=args.train_on_valid, data_dir=args.data_dir)
    from nasrl.models import builder_task

    if args.stop_after is not None and args.checkpoint is None:
        raise NasrlError("--stop-after needs --checkpoint (where the next command resumes from)")
    if builder_task(space.name) == "language":
        if args.checkpoint is not None:
            raise NasrlError("--checkpoint is for image training; a recurrent cell's training has none yet")
        return _train_language(args, space, arch)
    args.dataset = args.dataset or "digits"
    values = _assignments(args.overrides)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                       ("learning_rate", args.lr)):
        if value is not None:
            values[key] = value
    config = build(TrainConfig, values)
    if args.threads:
        torch.set_num_threads(args.threads)
    build_options = _assignments(args.build_options)
    checkpoint = _open_checkpoint(args, arch, config, build_options)
    data = load_images(args.dataset, data_dir=args.data_dir, seed=args.seed)
    if args.final:
        data = data.for_final_training()
    print(f"nasrl train: {space.name} {space.describe(arch)}", flush=True)
    print(f"  {args.dataset}: {len(data.train_x)} train, {len(data.test_x)} test"
          f"{'' if args.final else f', {len(data.val_x)} validation'}; {config.epochs} epochs", flush=True)

    if checkpoint is not None and checkpoint.epochs_done:
        print(f"  resuming from {args.checkpoint}: {checkpoint.epochs_done} of {config.epochs} epochs done",
              flush=True)
    started = time.perf_counter()

    from nasrl.signals import check_stop

    def report(epoch: int, res: TrainResult) -> bool:
        check_stop()  # the epoch is saved (--checkpoint): a dropped stop (nasrl.signals) stops here
        val = f"  val {100 * res.val_acc[-1]:.2f}%" if res.val_acc else ""
        print(f"  epoch {epoch + 1:3d}/{config.epochs}  loss {res.train_loss[-1]:.4f}{val}"
              f"  {res.wall_time:7.1f}s", flush=True)
        # --stop-after: this sitting ends at the first epoch end past the limit
        return args.stop_after is not None and time.perf_counter() - started > 60 * args.stop_after

    result, model = train_architecture(space, arch, data, config, seed=args.seed, device=args.device,
                                       test=True, validate=not args.final, on_epoch=report,
                                       build_options=build_options, checkpoint=checkpoint)
    if not result.ok:
        print(f"nasrl train: training failed: {result.error}", file=sys.stderr)
        return 1
    if len(result.train_loss) < config.epochs:
        print(f"stopped after epoch {len(result.train_loss)}/{config.epochs} "
              f"(--stop-after {args.stop_after:g}); the same command continues from {args.checkpoint}")
        return 0
    assert result.test_acc is not None
    print(f"test accuracy {100 * result.test_acc:.2f}%  ({result.params:,} parameters, "
          f"{result.macs / 1e6:.1f}M MACs, {result.wall_time:.1f}s)")
    if args.save and model is not None:
        _save_trained(args, space, arch, model, result, config)
    return 0


def _open_checkpoint(args: argparse.Namespace, arch: Any, config: Any, build_options: dict[str, Any]) -> Any:
    """``--checkpoint``'s file, checked to be this training's (None without the flag)."""
    if args.checkpoint is None:
        return None
    import dataclasses
    import json

    from nasrl.training.checkpoint import TrainCheckpoint

    fingerprint = json.dumps({
        "architecture": arch.to_dict(), "dataset": args.dataset, "final": args.final, "seed": args.seed,
        "training": dataclasses.asdict(config), "build": build_options,
    }, sort_keys=True, default=str)
    path = args.checkpoint.expanduser()
    if not path.parent.is_dir():
        raise NasrlError(f"--checkpoint {path}: the folder {path.parent} does not exist")
    return TrainCheckpoint.open(path, fingerprint)


def _train_language(args: argparse.Namespace, space: Any, arch: Any) -> int:
    import torch

    from nasrl.config import build
    from nasrl.data.text import load_text
    from nasrl.training import TrainResult
    from nasrl.training.language import LMTrainConfig, train_cell

    values = _assignments(args.overrides)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("learning_rate", args.lr)):
        if value is not None:
            values[key] = value
    config = build(LMTrainConfig, values)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_text(args.dataset or "ptb", data_dir=args.data_dir, train_on_valid=args.train_on_valid)
    print(f"nasrl train: {space.name} {space.describe(arch)}", flush=True)
    note = f"; {data.note}" if data.note else ""
    print(f"  {data.name}: {len(data.train)} train tokens, {len(data.valid)} validation, "
          f"{len(data.test)} test, vocabulary {data.vocab_size}{note}; {config.epochs} epochs", flush=True)

    from nasrl.signals import check_stop

    def report(epoch: int, res: TrainResult) -> None:
        check_stop()  # between epochs: a dropped stop (nasrl.signals) stops here
        print(f"  epoch {epoch + 1:3d}/{config.epochs}  loss {res.train_loss[-1]:.4f}  "
              f"val ppl {res.extra['val_ppl']:.1f}  {res.wall_time:7.1f}s", flush=True)

    result, _ = train_cell(space, arch, data, config, seed=args.seed, device=args.device, test=True,
                           on_epoch=report, build_options=_assignments(args.build_options))
    if not result.ok:
        print(f"nasrl train: training failed: {result.error}", file=sys.stderr)
        return 1
    print(f"test perplexity {result.extra['test_ppl']:.1f}  ({result.params:,} parameters, "
          f"{result.wall_time:.1f}s)")
    return 0


def _save_trained(args: argparse.Namespace, space: Any, arch: Any, model: Any, result: Any,
                  config: Any) -> None:
    import dataclasses
    import json

    import torch

    from nasrl.spaces.io import architecture_document

    source = Path(args.arch).expanduser()
    stem = source.with_suffix("") if source.is_file() else Path(f"arch-{arch.key}")
    weights, record = stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".train.json")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    record.write_text(json.dumps({
        "architecture": architecture_document(space, arch), "dataset": args.dataset, "seed": args.seed,
        "final": args.final, "training": dataclasses.asdict(config), "test_acc": result.test_acc,
        "val_acc": result.val_acc, "params": result.params, "macs": result.macs,
        "wall_time": result.wall_time, "version": __version__,
    }, indent=2) + "\n")
    print(f"wrote {weights} and {record}")


def _commands() -> dict[str, Any]:
    from nasrl import cli_runs

    return {"benchmark": cmd_benchmark, "study": cmd_study, "train": cmd_train, **cli_runs.COMMANDS}


def _os_error(err: OSError) -> str:
    """'PATH: reason' for what the operating system refused (a read-only file system, a file
    where a folder is needed, a name too long, ...)."""
    reason = err.strerror or str(err)
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def main(argv: Sequence[str] | None = None) -> int:
    from nasrl.signals import Terminated, exit_code, handle_sigterm

    handle_sigterm()  # SIGTERM stops as cleanly as Ctrl-C (exit 143 rather than 130)
    try:
        args = build_parser().parse_args(argv)
        return int(_commands()[args.command](args))
    except NasrlError as err:
        print(f"nasrl: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # the reader went away (``nasrl best RUN -n 20 | head -1``): nothing more to say;
        # point stdout at /dev/null so the interpreter's final flush does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        print(f"nasrl: error: {_os_error(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sqlite3.OperationalError as err:  # e.g. a run database on a read-only file system
        print(f"nasrl: error: run database: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:
        print(f"nasrl: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}", file=sys.stderr)
        return exit_code(stop)


if __name__ == "__main__":
    sys.exit(main())
