"""Issue 12's robust-defaults protocol: REINFORCE candidates vs regularized evolution on
landscapes and seeds the defaults were not chosen on.

    python benchmarks/controller_defaults.py select  [--seeds 100] [--out DIR]
    python benchmarks/controller_defaults.py check   [--seeds 100] [--out DIR]

``select`` runs every candidate and evolution on the *tuning* landscapes (the validation
column, the validation column plus Gaussian noise of 0.2 points, seed 1, and the 4-op
subspaces without skip_connect, without nor_conv_1x1 and without avg_pool_3x3) with the
tuning seeds 100..; a candidate's score is its
worst margin over evolution at 200 and at 500 distinct evaluations across those
landscapes (mean best val_acc, points), and the candidate with the best worst case wins.
``check`` runs the defaults (``reinforce`` with no override) and evolution on the
*held-out* landscapes -- the test column, noise seed 2, and the 4-op subspace without
nor_conv_3x3 (the best cell's op) -- with the held-out seeds 0..; it prints the margins
and the share of seeds that found each landscape's best cell by 500. The validation
column with seeds 0-99 is the controller study's own run (``nasrl study nb201``). The
noise's size, 0.2 points, is that of seed-to-seed differences: among the table's 150 best
cells test minus validation accuracy has a standard deviation of 0.28 points, two
independent draws' worth.
Both stages run two worker processes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from nasrl.evaluators.tabular import find_nb201_table
from nasrl.study import run_study, summarize_study

PREVIOUS = {"baseline": "ema", "elite_weight": 0.02, "elite_halflife": None, "advantage_shaping": "none",
            "local_share": 0.0}
"""The defaults before this protocol chose new ones (nasrl 0.2): every candidate is spelled
as a change of these, so the select stage reruns as it ran whatever today's defaults are."""
THIRD_BASE = {**PREVIOUS, "baseline": "leave_one_out", "elite_weight": 0.1, "elite_halflife": 40,
              "local_edit": "policy"}
"""nasrl 0.3's defaults, the base of the third round's candidates (local_edit spelled out:
the policy edits were the default when the round began)."""
CANDIDATES: dict[str, dict[str, Any]] = {
    "default": PREVIOUS,  # the name it had in the select runs: the defaults of then
    "first-batch-zero": {**PREVIOUS, "first_batch": "zero"},
    "adv-clip-0.1": {**PREVIOUS, "advantage_clip": 0.1},
    "critic": {**PREVIOUS, "baseline": "critic"},
    "loo": {**PREVIOUS, "baseline": "leave_one_out"},
    "elite-0.1": {**PREVIOUS, "elite_weight": 0.1},
    "rank": {**PREVIOUS, "advantage_shaping": "rank"},
    "rank-elite-0.1": {**PREVIOUS, "advantage_shaping": "rank", "elite_weight": 0.1},
    "elite-0.1-half-40": {**PREVIOUS, "elite_weight": 0.1, "elite_halflife": 40},
    "loo-elite-0.1-half-40": {**PREVIOUS, "baseline": "leave_one_out", "elite_weight": 0.1,
                              "elite_halflife": 40},  # nasrl 0.3's winner
    # the second round (issue 12's subspace miss): 0.3's defaults plus one change each
    "loo-elite-0.1-half-40-rank": {**PREVIOUS, "baseline": "leave_one_out", "elite_weight": 0.1,
                                   "elite_halflife": 40, "advantage_shaping": "rank"},  # today's
    "loo-elite-0.3-half-40": {**PREVIOUS, "baseline": "leave_one_out", "elite_weight": 0.3,
                              "elite_halflife": 40},
    "loo-elite-0.2-half-40": {**PREVIOUS, "baseline": "leave_one_out", "elite_weight": 0.2,
                              "elite_halflife": 40},
    "loo-elite-1-half-40-rank": {**PREVIOUS, "baseline": "leave_one_out", "elite_weight": 1.0,
                                 "elite_halflife": 40, "advantage_shaping": "rank"},
    "loo-elite-0.1-half-40-ent-0.03": {**PREVIOUS, "baseline": "leave_one_out", "elite_weight": 0.1,
                                       "elite_halflife": 40, "entropy_weight": 0.03},
    # the third round: 0.3's defaults plus a share of local asks (one-token edits of the
    # best), their token from a policy draw or (uniform) any other value
    **{f"loo-elite-0.1-half-40-local-{share}": {**THIRD_BASE, "local_share": share}
       for share in (0.1, 0.2, 0.3)},
    **{f"loo-elite-0.1-half-40-local-{share}-uniform": {**THIRD_BASE, "local_share": share,
                                                        "local_edit": "uniform"}
       for share in (0.1, 0.2, 0.3, 0.4)},
}
TUNING = ("val", "noisy:0.2:1", "without:skip_connect", "without:nor_conv_1x1", "without:avg_pool_3x3")
"""The first three chose nasrl 0.3's defaults; the two other subspaces (of the same kind
as the held-out one, never the held-out one itself) were added for the second round, after
the check showed the one subspace too few to judge how a cliff of failing cells is met."""
HELD_OUT = ("test", "noisy:0.2:2", "without:nor_conv_3x3")
CHECKPOINTS = (200, 500)


def compare(candidates: dict[str, dict[str, Any]], landscapes: tuple[str, ...], seeds: range,
            jobs: int) -> dict[str, Any]:
    table = find_nb201_table(None)
    variants = {name: ("reinforce", cfg) for name, cfg in candidates.items()}
    variants["evolution"] = ("evolution", {})
    out: dict[str, Any] = {}
    for landscape in landscapes:
        start = time.perf_counter()
        summary = summarize_study(run_study(table, variants, seeds, 500, landscape, jobs), 500)
        row = {}
        evo = summary["strategies"]["evolution"]["checkpoints"]
        for name in variants:
            cps = summary["strategies"][name]["checkpoints"]
            row[name] = {str(cp): {"val_mean": cps[str(cp)]["val_mean"],
                                   "margin": cps[str(cp)]["val_mean"] - evo[str(cp)]["val_mean"],
                                   "found_best": cps[str(cp)]["found_best"]} for cp in CHECKPOINTS}
        out[landscape] = row
        print(f"{landscape} ({time.perf_counter() - start:.0f}s)", flush=True)
        for name, cps in row.items():
            print(f"  {name:<18}" + "".join(
                f"  @{cp} {c['val_mean']:.3f} ({c['margin']:+.3f}) found {100 * c['found_best']:.0f}%"
                for cp, c in cps.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["select", "check"])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--candidates", default=None,
                        help="select: a comma-separated subset of the candidates (a quick screen)")
    args = parser.parse_args()
    if args.stage == "select":
        names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
        unknown = [n for n in names if n not in CANDIDATES]
        if unknown:
            parser.error(f"unknown candidate {unknown[0]!r} (known: {', '.join(CANDIDATES)})")
        chosen = {n: CANDIDATES[n] for n in names}
        result = compare(chosen, TUNING, range(100, 100 + args.seeds), args.jobs)
        worst = {name: min(result[ls][name][str(cp)]["margin"] for ls in TUNING for cp in CHECKPOINTS)
                 for name in chosen}
        for name, value in sorted(worst.items(), key=lambda kv: -kv[1]):
            print(f"worst margin over evolution, {name}: {value:+.3f}")
        result["worst_margin"] = worst
    else:
        # the tuning table's own column too (the CIFAR-10 targets), then the held-out ones
        result = compare({"default": {}}, ("val", *HELD_OUT), range(args.seeds), args.jobs)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"defaults-{args.stage}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
