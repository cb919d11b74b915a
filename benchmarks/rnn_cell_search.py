"""Issue 5's check: a short recurrent-cell search on PTB, then the best cell against an LSTM.

    python benchmarks/rnn_cell_search.py [--data-dir ../shared/data/ptb] [--budget 30] [--workers 2]

The shared PTB copy has no ptb.train.txt, so children train on the first 90% of
ptb.valid.txt and are rewarded (80 / ppl^2) on the last 10%; the test text only reports.
Each child gets a small budget (hidden 64, 2 epochs over 20k tokens). Then the best cell
and a standard LSTM language model of the same size are trained with the same final budget
(the whole training split, ``--final-epochs`` epochs, same seed) and their test
perplexities are printed side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nasrl.data.text import load_text
from nasrl.models import lstm_language_model
from nasrl.search import Search, SearchConfig
from nasrl.training.common import seeded
from nasrl.training.language import LMTrainConfig, train_cell, train_language_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/ptb"
SIZE = {"hidden_size": 64, "embedding_size": 64}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--final-epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    child = LMTrainConfig(epochs=2, max_train_tokens=20000)
    config = SearchConfig(
        space="rnn_cell",
        dataset="ptb",
        data_dir=str(args.data_dir),
        train_on_valid=True,
        budget=args.budget,
        seed=args.seed,
        executor="process",
        workers=args.workers,
        lm_training=child,
        build_options=SIZE,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        search = Search.create(Path(tmp) / "run", config)
        result = search.run()
        counts = result.counts
        print(
            f"search: {counts['evaluated']} cells ({counts['failed']} failed) in "
            f"{time.perf_counter() - start:.0f}s on {args.workers} workers",
            flush=True,
        )
        assert result.best is not None
        best = result.best
        print(f"best cell: trial {best.id}, child val ppl {best.metrics['val_ppl_best']:.1f}")
        print(f"  {search.space.describe(best.arch)}", flush=True)
        data = load_text("ptb", data_dir=args.data_dir, train_on_valid=True)
        final = LMTrainConfig(epochs=args.final_epochs)
        t0 = time.perf_counter()
        cell, _ = train_cell(
            search.space, best.arch, data, final, seed=args.seed, test=True, build_options=SIZE
        )
        cell_s = time.perf_counter() - t0
        with seeded(args.seed):
            lstm_model = lstm_language_model(data.vocab_size, **SIZE)
        t0 = time.perf_counter()
        lstm = train_language_model(lstm_model, data, final, seed=args.seed, test=True)
        lstm_s = time.perf_counter() - t0
    print(
        f"final training: {args.final_epochs} epochs on {len(data.train)} tokens, "
        f"hidden {SIZE['hidden_size']}"
    )
    for name, res, secs in (("best cell", cell, cell_s), ("LSTM", lstm, lstm_s)):
        if res.ok:
            print(
                f"{name:10s} test ppl {res.extra['test_ppl']:7.1f}  "
                f"val ppl {res.extra['val_ppl_best']:7.1f}  "
                f"{res.params:,} parameters  {secs:.0f}s"
            )
        else:
            print(f"{name:10s} failed: {res.error}")
    print(f"total {time.perf_counter() - start:.0f}s; threads per process {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
