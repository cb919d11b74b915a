"""The ``nasrl`` command line: a thin layer over the Python API.

Bad input (an argument, a config value, a data file) is reported as one line on stderr
with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
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
                       help="path of nb201_cifar10.csv (default: $NASRL_NB201_TABLE, then "
                            "~/.cache/nasrl, /usr/share/datasets/nasbench201)")
    bench.add_argument("--out", type=Path, default=None,
                       help="directory for benchmark.json and benchmark.png")
    bench.add_argument("--jobs", type=_positive_int, default=None,
                       help="worker processes (default: one per core)")
    bench.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="STRATEGY.KEY=VALUE",
                       help="override a strategy setting, e.g. reinforce.learning_rate=0.01")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


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


def cmd_benchmark(args: argparse.Namespace) -> int:
    from nasrl.benchmark import format_table, run_benchmark, summarize, write_outputs
    from nasrl.evaluators.tabular import find_nb201_table
    from nasrl.strategies import strategy_class

    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not names:
        raise NasrlError("--strategies: give at least one strategy")
    for name in names:
        strategy_class(name)
    configs = _strategy_overrides(args.overrides, names)
    table = find_nb201_table(args.table)
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    start = time.perf_counter()
    print(f"nasrl benchmark nb201: {', '.join(names)}; budget {args.budget}; "
          f"{args.seeds} seeds; table {table}", flush=True)
    traces = run_benchmark(table, names, seeds, args.budget, configs, jobs=args.jobs)
    summary = summarize(traces, args.budget)
    summary["table"] = str(table)
    summary["configs"] = _resolved_configs(names, configs)
    summary["version"] = __version__
    print(format_table(summary))
    print(f"best-so-far val_acc (test_acc of that architecture below it), mean ± std; "
          f"'found best' = share of seeds that evaluated the table's best "
          f"within {args.budget}. {time.perf_counter() - start:.1f}s")
    if args.out is not None:
        write_outputs(summary, traces, args.out)
        print(f"wrote {args.out / 'benchmark.json'} and {args.out / 'benchmark.png'}")
    return 0


def _resolved_configs(names: Sequence[str], configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from nasrl.config import build, to_dict
    from nasrl.strategies import strategy_class

    return {n: to_dict(build(strategy_class(n).config_class, configs.get(n, {}))) for n in names}


COMMANDS = {"benchmark": cmd_benchmark}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except NasrlError as err:
        print(f"nasrl: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nasrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
