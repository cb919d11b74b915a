"""The trial store: one SQLite database (WAL) per run, the single source of truth.

Trials move queued -> running -> complete | failed | pruned (stopped early by the search's
pruning rule, see :mod:`nasrl.pruning`). A search round is committed in one
transaction that marks its trials as told and saves the strategy state they produced, so
after a crash (``kill -9`` included) the database holds either the round's update and its
trials' results together, or neither update; completed trials are never lost because each
is written as soon as it finishes. Readers (``nasrl status``, reports) may open the
database while the search writes: WAL lets them read a consistent snapshot.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nasrl.errors import NasrlError
from nasrl.spaces.base import Architecture

SCHEMA_VERSION = 5
"""2 (nasrl 0.2): trials.feasible. 3: the one-shot tables (checkpoint, epochs, derived),
only added, so a version 2 database is still read and resumed as it is (its schema number
stays 2). 4: the trial state 'pruned' (in the trials table's CHECK, which SQLite cannot
alter in place) and the per-epoch table trial_epochs. A version 2 or 3 database keeps its
number and its CHECK: its config has no pruning, which a resume cannot switch on, so it
never stores a pruned trial; trial_epochs is created in it by the first epoch report.
Version 1 databases (nasrl 0.1) are read, never written. 5: a strategy state's seen rows
(``seen_rows``, token arrays by length) are kept in the table strategy_rows, appended at
each save, instead of inside the state: the state saved after every round no longer grows
with the architectures seen (6.5 MB at 12,800 twenty-layer ones, rewritten every round).
A version 2-4 database keeps its number and its rows inside the state."""
READABLE_SCHEMAS = (1, 2, 3, 4, 5)
ROWS_KEY = "seen_rows"
"""The state entry kept in strategy_rows (schema 5): {length: (n, length) int tensor}."""
ROWS_STORED = "seen_rows_stored"
"""What the saved state holds instead: {length: rows}; the rows are strategy_rows'."""
TrialState = Literal["queued", "running", "complete", "failed", "pruned"]
STATES: tuple[TrialState, ...] = ("queued", "running", "complete", "failed", "pruned")
FINISHED: tuple[TrialState, ...] = ("complete", "failed", "pruned")

COUNTERS = (
    # trials per (state, reused) kept by triggers: counts() reads a few rows instead of
    # counting the whole table after every trial (quadratic over a 12,800-trial run)
    "CREATE TABLE IF NOT EXISTS trial_counts (state TEXT NOT NULL, reused INTEGER NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (state, reused))",
    "CREATE TRIGGER IF NOT EXISTS trial_counts_insert AFTER INSERT ON trials BEGIN "
    "INSERT INTO trial_counts VALUES (NEW.state, NEW.reused_from IS NOT NULL, 1) "
    "ON CONFLICT (state, reused) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER IF NOT EXISTS trial_counts_update AFTER UPDATE OF state, reused_from ON trials "
    "BEGIN UPDATE trial_counts SET n = n - 1 "
    "WHERE state = OLD.state AND reused = (OLD.reused_from IS NOT NULL); "
    "INSERT INTO trial_counts VALUES (NEW.state, NEW.reused_from IS NOT NULL, 1) "
    "ON CONFLICT (state, reused) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER IF NOT EXISTS trial_counts_delete AFTER DELETE ON trials BEGIN "
    "UPDATE trial_counts SET n = n - 1 "
    "WHERE state = OLD.state AND reused = (OLD.reused_from IS NOT NULL); END",
    # best() walks this index from the top instead of sorting every complete trial
    "CREATE INDEX IF NOT EXISTS trials_by_reward ON trials(state, reward DESC, id)",
)
"""Added to a database of schema 2-4 the first time it is opened for writing (counted
once, in the same transaction that installs the triggers); its schema number stays."""
COUNTER_TRIGGERS = ("trial_counts_insert", "trial_counts_update", "trial_counts_delete")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    created REAL NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    version TEXT NOT NULL,
    schema INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    arch_key TEXT NOT NULL,
    arch TEXT NOT NULL,
    seed INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'complete', 'failed', 'pruned')),
    reward REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    cost REAL,
    reused_from INTEGER REFERENCES trials(id),
    feasible INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    told INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS trials_by_key ON trials(arch_key);
CREATE INDEX IF NOT EXISTS trials_by_round ON trials(round);
CREATE TABLE IF NOT EXISTS strategy (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    round INTEGER NOT NULL,
    asked INTEGER NOT NULL,
    state BLOB NOT NULL,
    saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS strategy_rows (
    length INTEGER NOT NULL,
    start INTEGER NOT NULL,
    rows BLOB NOT NULL,
    PRIMARY KEY (length, start)
);
CREATE TABLE IF NOT EXISTS updates (
    round INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    state BLOB NOT NULL,
    saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    epoch INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS derived (
    rank INTEGER PRIMARY KEY,
    arch TEXT NOT NULL,
    score REAL NOT NULL,
    reward REAL,
    metrics TEXT NOT NULL
);
"""
"""The last three tables belong to one-shot runs (:mod:`nasrl.oneshot`): the checkpoint of
everything that decides the rest of the run, per-epoch metrics, and the derived
architectures. A multi-trial run leaves them empty."""


PROGRESS_TABLE = """
CREATE TABLE IF NOT EXISTS progress (
    trial_id INTEGER PRIMARY KEY REFERENCES trials(id),
    epoch INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    seconds REAL NOT NULL,
    updated REAL NOT NULL
)
"""
"""Epochs done by running trials. Added by the first report rather than in SCHEMA, so
runs written before it need no migration (readers find no table and report nothing)."""

TRIAL_EPOCHS_TABLE = """
CREATE TABLE IF NOT EXISTS trial_epochs (
    trial_id INTEGER NOT NULL REFERENCES trials(id),
    epoch INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    seconds REAL NOT NULL,
    PRIMARY KEY (trial_id, epoch)
)
"""
"""Each trial's learning curve: the validation metric (val_acc, or val_ppl for language
models) after each epoch of its current attempt. Created like the progress table, by the
first report, so older runs gain it without a migration."""


STALENESS_TABLE = """
CREATE TABLE IF NOT EXISTS staleness (
    trial_id INTEGER PRIMARY KEY REFERENCES trials(id),
    told_update INTEGER NOT NULL,
    staleness INTEGER NOT NULL,
    learned INTEGER NOT NULL
)
"""
"""Asynchronous runs (:mod:`nasrl.search_async`): for each told trial, the strategy's update
count when it was told, and how many updates happened between its ask (the update count
then is the trial's ``round``) and its tell; ``learned`` is 0 when it was too stale to be
learned from. Created by the first async tell, so other runs never have it."""


@dataclass(frozen=True)
class Staleness:
    trial_id: int
    told_update: int
    staleness: int
    learned: bool


@dataclass(frozen=True)
class Curve:
    trial_id: int
    metric: str
    """val_acc (higher is better) or val_ppl (lower is better)."""
    values: list[float]
    """The metric after epochs 1, 2, ... (NaN where it was not finite)."""


@dataclass(frozen=True)
class Progress:
    trial_id: int
    epoch: int
    epochs: int
    seconds: float
    """Seconds since the trial started, at the end of ``epoch``."""

    @property
    def seconds_left(self) -> float:
        """Estimated from the epochs so far (the first epoch gives the first estimate)."""
        return self.seconds / max(1, self.epoch) * max(0, self.epochs - self.epoch)


class StoreError(NasrlError):
    """The run database is missing, damaged or from an incompatible version."""


@dataclass(frozen=True)
class Trial:
    id: int
    round: int
    arch: Architecture
    seed: int
    state: TrialState
    reward: float | None
    metrics: dict[str, float]
    error: str | None
    cost: float | None
    reused_from: int | None
    attempts: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    told: bool
    feasible: bool = True
    """False when the trial broke a hard constraint of the objective."""

    @property
    def finished(self) -> bool:
        """Done for good: a resumed run re-runs only trials that are not."""
        return self.state in FINISHED


def _trial(row: sqlite3.Row) -> Trial:
    return Trial(
        id=row["id"],
        round=row["round"],
        arch=Architecture.from_json(row["arch"]),
        seed=row["seed"],
        state=row["state"],
        reward=row["reward"],
        metrics=json.loads(row["metrics"]),
        error=row["error"],
        cost=row["cost"],
        reused_from=row["reused_from"],
        attempts=row["attempts"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        told=bool(row["told"]),
        feasible=bool(row["feasible"]) if "feasible" in row.keys() else True,  # noqa: SIM118 (sqlite3.Row)
    )


@dataclass(frozen=True)
class Derived:
    """An architecture a one-shot run derived, ranked by its shared-weight score."""

    rank: int
    arch: Architecture
    score: float
    """Validation accuracy with the shared weights (batch norm recalibrated for it)."""
    reward: float | None
    metrics: dict[str, float]


def encode_state(state: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


def decode_state(blob: bytes) -> dict[str, Any]:
    # weights_only: a run directory may come from elsewhere; never unpickle arbitrary objects
    # map_location: a run checkpointed on a GPU still opens on a machine without one
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise StoreError("strategy state in the run database is not a mapping")
    return state


class TrialStore:
    """Open (or create) the database at ``path``. One writer (the search), any readers."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self._feasible_column: bool | None = None
        self._progress_table = False
        self._epochs_table = False
        self._counters: bool | None = None
        self._rows_saved: dict[int, Any] | None = None
        """The seen rows strategy_rows holds, by length (None: not read yet)."""
        self._rows_pending: dict[int, Any] | None = None
        """What strategy_rows will hold once the open transaction commits."""
        self._schema_5: bool | None = None
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no run database here")
        try:
            if readonly:
                # a URI: '?', '#' and '%' in the path must be escaped, or sqlite reads
                # 'runs/a?b' as the file 'runs/a' with a query (and creates it)
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
            else:
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                # NORMAL, SQLite's advice for WAL: a commit survives the process being
                # killed at any moment (what resume relies on) without an fsync per commit,
                # which cost ~3 ms a trial (two commits) -- a quarter of the driver's time
                # per trial at paper scale. After a power loss the last commits may roll
                # back, never half of one: resume then re-runs those children with their
                # seeds, as it does the unfinished ones after a kill.
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.row_factory = sqlite3.Row
            if create:
                self.db.executescript(SCHEMA)
            self._check()
            if not readonly:
                self._install_counters()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: damaged run database ({exc})") from None

    def _check(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"runs", "trials", "strategy", "updates"} - tables
        if missing:
            raise StoreError(f"{self.path}: damaged run database (missing table {sorted(missing)[0]})")

    def _install_counters(self) -> None:
        if self._has_counters():
            return
        schema = self.db.execute("SELECT schema FROM runs WHERE id = 1").fetchone()
        if schema is not None and schema[0] < 2:
            return  # a version 1 database is read, never written
        with self.transaction() as db:
            # a partial set (the trials table rebuilt, which drops its triggers) is counted anew
            for trigger in COUNTER_TRIGGERS:
                db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            db.execute("DROP TABLE IF EXISTS trial_counts")
            db.execute(COUNTERS[0])
            db.execute("INSERT INTO trial_counts SELECT state, reused_from IS NOT NULL, COUNT(*) "
                       "FROM trials GROUP BY 1, 2")
            for statement in COUNTERS[1:]:
                db.execute(statement)
        self._counters = True

    def _has_counters(self) -> bool:
        """The counts table and all its triggers: without every trigger the counts go stale."""
        if self._counters is None:
            names = {r[0] for r in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') "
                "AND name LIKE 'trial_counts%'")}
            self._counters = {"trial_counts", *COUNTER_TRIGGERS} <= names
        return self._counters

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        self._rows_pending = self._rows_saved
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            # the table is as before; what was saved of it may be unknown now (None: re-read)
            self._rows_pending = self._rows_saved
            raise
        self.db.execute("COMMIT")
        self._rows_saved = self._rows_pending

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Several reads that see one consistent state of the database (WAL snapshot)."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    # -- the run -------------------------------------------------------------------------
    @classmethod
    def create_run(
        cls,
        path: str | Path,
        config: Mapping[str, Any],
        seed: int,
        version: str,
        strategy_state: Mapping[str, Any],
    ) -> TrialStore:
        """Create the database under a temporary name and rename it into place, so a reader
        (or a crash) never meets a half-initialized run."""
        path = Path(path)
        tmp = path.with_name(path.name + ".creating")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        store = cls(tmp, create=True)
        store.init_run(config, seed, version, strategy_state)
        store.close()  # checkpoints the WAL into the main file
        tmp.rename(path)
        return cls(path)

    def init_run(
        self, config: Mapping[str, Any], seed: int, version: str, strategy_state: Mapping[str, Any]
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs VALUES (1, ?, 'running', ?, ?, ?, ?)",
                (time.time(), json.dumps(config, sort_keys=True), seed, version, SCHEMA_VERSION),
            )
            db.execute("INSERT INTO strategy VALUES (1, 0, 0, ?, ?)",
                       (self._state_blob(db, strategy_state), time.time()))

    def run_info(self) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM runs WHERE id = 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: damaged run database (no run record)")
        if row["schema"] not in READABLE_SCHEMAS:
            raise StoreError(
                f"{self.path}: run database schema {row['schema']}, this nasrl reads "
                f"{', '.join(map(str, READABLE_SCHEMAS))}"
            )
        try:
            config = json.loads(row["config"])
        except json.JSONDecodeError:
            raise StoreError(f"{self.path}: damaged run database (config is not JSON)") from None
        return {
            "created": row["created"],
            "status": row["status"],
            "config": config,
            "seed": row["seed"],
            "version": row["version"],
            "schema": row["schema"],
        }

    def set_status(self, status: str) -> None:
        self.db.execute("UPDATE runs SET status = ? WHERE id = 1", (status,))

    def set_config(self, config: Mapping[str, Any]) -> None:
        """Record a changed setting (a resume's new budget) as part of the run's config."""
        text = json.dumps(dict(config), sort_keys=True)
        self.db.execute("UPDATE runs SET config = ? WHERE id = 1", (text,))

    # -- strategy state --------------------------------------------------------------------
    def strategy_state(self) -> tuple[int, int, dict[str, Any]]:
        """(rounds told so far, rounds asked so far, the strategy state after both)."""
        row = self.db.execute("SELECT round, asked, state FROM strategy WHERE id = 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: damaged run database (no strategy state)")
        try:
            state = decode_state(row["state"])
            if ROWS_STORED in state:
                state[ROWS_KEY] = self._stored_rows(state.pop(ROWS_STORED))
            return row["round"], row["asked"], state
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.path}: damaged strategy state ({type(exc).__name__})") from None

    def _chunked_rows(self) -> bool:
        if self._schema_5 is None:  # read once: a database keeps its schema number
            row = self.db.execute("SELECT schema FROM runs WHERE id = 1").fetchone()
            if row is None:
                return False
            self._schema_5 = row[0] >= 5
        return self._schema_5

    def _state_blob(self, db: sqlite3.Connection, state: Mapping[str, Any]) -> bytes:
        """The state encoded for the strategy table; in a schema-5 database its seen rows go
        to strategy_rows, only the rows not already there appended (call inside the
        transaction that saves the state: :meth:`transaction` keeps what the table then
        holds once it commits)."""
        rows = state.get(ROWS_KEY)
        if not isinstance(rows, Mapping) or not self._chunked_rows() or not all(
                isinstance(t, torch.Tensor) and t.dim() == 2 for t in rows.values()):
            return encode_state(state)
        saved = self._rows_saved if self._rows_saved is not None else self._read_rows()
        self._rows_saved = None  # unknown until this transaction commits
        pending: dict[int, Any] = {}
        for length, tensor in rows.items():
            new = tensor.numpy()
            old = saved.get(int(length))
            kept = 0 if old is None or len(old) > len(new) or not (new[: len(old)] == old).all() else len(old)
            if old is not None and kept < len(old):  # not an extension of what is there
                db.execute("DELETE FROM strategy_rows WHERE length = ?", (int(length),))
            if len(new) > kept:
                db.execute("INSERT INTO strategy_rows VALUES (?, ?, ?)",
                           (int(length), kept, new[kept:].astype("<i2").tobytes()))
            pending[int(length)] = new
        for length in set(saved) - set(pending):
            db.execute("DELETE FROM strategy_rows WHERE length = ?", (length,))
        self._rows_pending = pending
        counts = {length: len(new) for length, new in pending.items()}
        return encode_state({k: v for k, v in state.items() if k != ROWS_KEY} | {ROWS_STORED: counts})

    def _read_rows(self) -> dict[int, Any]:
        """What strategy_rows holds: {length: (n, length) int16 array}."""
        chunks: dict[int, list[Any]] = {}
        for row in self.db.execute("SELECT length, rows FROM strategy_rows ORDER BY length, start"):
            chunks.setdefault(row[0], []).append(np.frombuffer(row[1], dtype="<i2").reshape(-1, row[0]))
        return {length: np.concatenate(parts) for length, parts in chunks.items()}

    def _stored_rows(self, counts: Any) -> dict[int, torch.Tensor]:
        if not isinstance(counts, Mapping):
            raise StoreError(f"{self.path}: damaged strategy state (seen rows)")
        saved = self._read_rows()
        rows = {}
        for length, n in counts.items():
            have = saved.get(int(length))
            if (have is None and n) or (have is not None and len(have) < n):
                raise StoreError(f"{self.path}: damaged strategy state ({n} seen rows of length "
                                 f"{length} recorded, {0 if have is None else len(have)} stored)")
            part = have[:n] if have is not None else np.zeros((0, int(length)), dtype="<i2")
            rows[int(length)] = torch.from_numpy(part.astype(np.int16))
        self._rows_saved = {k: v.numpy() for k, v in rows.items()}
        return rows

    def commit_round(
        self, round_: int, strategy_state: Mapping[str, Any], metrics: Mapping[str, Any], asked: int
    ) -> None:
        """Mark the round's trials told and save the state they produced (which has also
        asked ``asked`` rounds), atomically."""
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE trials SET told = 1 WHERE round = ?", (round_,))
            db.execute(
                "UPDATE strategy SET round = ?, asked = ?, state = ?, saved_at = ? WHERE id = 1",
                (round_ + 1, asked, self._state_blob(db, strategy_state), now),
            )
            db.execute(
                "INSERT OR REPLACE INTO updates VALUES (?, ?, ?)",
                (round_, now, json.dumps(dict(metrics), sort_keys=True)),
            )

    # -- trials -------------------------------------------------------------------------------
    def add_trials(self, round_: int, rows: Sequence[tuple[Architecture, int, int | None]]) -> list[int]:
        """Queue (arch, seed, reused_from) rows for ``round_``; returns their ids in order.

        ``reused_from`` is a trial id, or ``-(j + 1)`` for "the j-th row of this call" (a
        repeat within one round).
        """
        now = time.time()
        ids: list[int] = []
        with self.transaction() as db:
            for arch, seed, reused in rows:
                if reused is not None and reused < 0:
                    reused = ids[-reused - 1]
                cur = db.execute(
                    "INSERT INTO trials (round, arch_key, arch, seed, state, reused_from, queued_at) "
                    "VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                    (round_, arch.key, arch.to_json(), seed, reused, now),
                )
                ids.append(int(cur.lastrowid or 0))
        return ids

    def mark_running(self, trial_id: int) -> None:
        """A (re)started attempt: its learning curve starts again (the child trains from
        scratch), while until now the previous attempt's showed where it stood."""
        self._ensure_epochs_table()
        with self.transaction() as db:
            db.execute(
                "UPDATE trials SET state = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                (time.time(), trial_id),
            )
            db.execute("DELETE FROM trial_epochs WHERE trial_id = ?", (trial_id,))

    def finish(
        self,
        trial_id: int,
        state: TrialState,
        reward: float | None,
        metrics: Mapping[str, float],
        error: str | None,
        cost: float | None,
        feasible: bool = True,
    ) -> None:
        if state not in FINISHED:
            raise ValueError(f"finish: state must be one of {', '.join(FINISHED)}, not {state!r}")
        self.db.execute(
            "UPDATE trials SET state = ?, reward = ?, metrics = ?, error = ?, cost = ?, finished_at = ?, "
            "feasible = ? WHERE id = ?",
            (state, reward, json.dumps(dict(metrics)), error, cost, time.time(), int(feasible), trial_id),
        )

    def set_progress(self, trial_id: int, epoch: int, epochs: int, seconds: float) -> None:
        if not self._progress_table:
            self.db.execute(PROGRESS_TABLE)
            self._progress_table = True
        self.db.execute(
            "INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?, ?)",
            (trial_id, epoch, epochs, seconds, time.time()),
        )

    def _ensure_epochs_table(self) -> None:
        if not self._epochs_table:
            self.db.execute(TRIAL_EPOCHS_TABLE)
            self._epochs_table = True

    def add_epoch(self, trial_id: int, epoch: int, metric: str, value: float, seconds: float) -> None:
        """One point of a running trial's learning curve (epochs count from 1)."""
        self._ensure_epochs_table()
        self.db.execute(
            "INSERT OR REPLACE INTO trial_epochs VALUES (?, ?, ?, ?, ?)",
            (trial_id, epoch, metric, value if math.isfinite(value) else None, seconds),
        )

    def curves(self) -> list[Curve]:
        """Every trial's learning curve (its current or last attempt), by trial id."""
        try:
            rows = self.db.execute(
                "SELECT trial_id, epoch, metric, value FROM trial_epochs ORDER BY trial_id, epoch"
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # a run written before learning curves were stored
        out: list[Curve] = []
        for row in rows:
            if not out or out[-1].trial_id != row["trial_id"]:
                out.append(Curve(row["trial_id"], row["metric"], []))
            value = row["value"]
            out[-1].values.append(math.nan if value is None else float(value))
        return out

    def progress(self) -> list[Progress]:
        """The latest epoch report of each running trial (from its current attempt)."""
        try:
            rows = self.db.execute(
                "SELECT p.* FROM progress p JOIN trials t ON t.id = p.trial_id "
                "WHERE t.state = 'running' AND p.updated >= t.started_at ORDER BY p.trial_id"
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # no report yet (or a run written before progress was recorded)
        return [Progress(r["trial_id"], r["epoch"], r["epochs"], r["seconds"]) for r in rows]

    def requeue_unfinished(self) -> int:
        """After a crash: trials left running go back to queued (same architecture and seed)."""
        cur = self.db.execute("UPDATE trials SET state = 'queued', started_at = NULL WHERE state = 'running'")
        return cur.rowcount

    def trials(self, *, round_: int | None = None, state: TrialState | None = None) -> list[Trial]:
        sql, args = "SELECT * FROM trials", list[Any]()
        where = []
        if round_ is not None:
            where.append("round = ?")
            args.append(round_)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_trial(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def trial(self, trial_id: int) -> Trial:
        row = self.db.execute("SELECT * FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if row is None:
            raise StoreError(f"no trial {trial_id}")
        return _trial(row)

    def first_by_key(self, key: str) -> Trial | None:
        """The first evaluated (not reused) trial of an architecture, in any state."""
        row = self.db.execute(
            "SELECT * FROM trials WHERE arch_key = ? AND reused_from IS NULL ORDER BY id LIMIT 1", (key,)
        ).fetchone()
        return None if row is None else _trial(row)

    def counts(self) -> dict[str, int]:
        """Trials per state, and 'evaluated' = finished (complete, failed or pruned) trials that
        were not reused (the budget)."""
        if not self._has_counters():  # a database opened read-only before it had counters
            return self._count_rows()
        out: dict[str, int] = dict.fromkeys(STATES, 0)
        out["evaluated"] = out["reused"] = 0
        for state, reused, n in self.db.execute("SELECT state, reused, n FROM trial_counts"):
            out[state] += n
            if reused:
                out["reused"] += n
            elif state in FINISHED:
                # a pruned child was evaluated too: it took a place in the budget and its time
                out["evaluated"] += n
        return out

    def _count_rows(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATES, 0)
        for row in self.db.execute("SELECT state, COUNT(*) AS n FROM trials GROUP BY state"):
            out[row["state"]] = row["n"]
        out["evaluated"] = self.db.execute(
            "SELECT COUNT(*) FROM trials WHERE reused_from IS NULL "
            "AND state IN ('complete', 'failed', 'pruned')"
        ).fetchone()[0]
        out["reused"] = self.db.execute(
            "SELECT COUNT(*) FROM trials WHERE reused_from IS NOT NULL"
        ).fetchone()[0]
        return out

    def _totals(self) -> tuple[int, int]:
        """(all trials, trials not reused)."""
        counts = self.counts()
        total = sum(counts[s] for s in STATES)
        return total, total - counts["reused"]

    def planned_before(self, round_: int) -> int:
        """Budget taken by the rounds before ``round_``: their trials that are not reused."""
        # the total minus the few rounds from round_ on (an index range), not a table scan
        later = self.db.execute(
            "SELECT COUNT(*) FROM trials WHERE round >= ? AND reused_from IS NULL", (round_,)
        ).fetchone()[0]
        return self._totals()[1] - int(later)

    def planned_total(self) -> int:
        """Budget taken by every round asked so far, finished or not."""
        return self._totals()[1]

    def total_trials_before(self, round_: int) -> int:
        later = self.db.execute("SELECT COUNT(*) FROM trials WHERE round >= ?", (round_,)).fetchone()[0]
        return self._totals()[0] - int(later)

    def best(self, n: int = 1) -> list[Trial]:
        """The n highest rewards among complete, feasible, evaluated (not reused) trials."""
        feasible = "AND feasible = 1 " if self._has_feasible() else ""
        rows = self.db.execute(
            "SELECT * FROM trials WHERE state = 'complete' AND reward IS NOT NULL "
            f"AND reused_from IS NULL {feasible}ORDER BY reward DESC, id LIMIT ?",
            (n,),
        )
        return [_trial(r) for r in rows]

    def _has_feasible(self) -> bool:
        if self._feasible_column is None:
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(trials)")}
            self._feasible_column = "feasible" in columns
        return self._feasible_column

    def updates(self) -> list[tuple[int, float, dict[str, Any]]]:
        return [
            (r["round"], r["time"], json.loads(r["metrics"]))
            for r in self.db.execute("SELECT * FROM updates ORDER BY round")
        ]

    # -- asynchronous runs ----------------------------------------------------------------------
    def save_strategy(self, round_: int, asked: int, strategy_state: Mapping[str, Any]) -> None:
        """Replace the saved strategy state (an async run: ``round_`` = results told,
        ``asked`` = architectures asked); inside the caller's transaction if there is one."""
        if not self.db.in_transaction:
            with self.transaction():
                self.save_strategy(round_, asked, strategy_state)
            return
        self.db.execute(
            "UPDATE strategy SET round = ?, asked = ?, state = ?, saved_at = ? WHERE id = 1",
            (round_, asked, self._state_blob(self.db, strategy_state), time.time()),
        )

    def record_tells(self, rows: Sequence[Staleness],
                     updates: Sequence[tuple[int, Mapping[str, Any]]] = ()) -> None:
        """Staleness of trials just told and the strategy updates they caused (an async run
        writes these at once; a resumed run that tells a trial again overwrites its row)."""
        now = time.time()
        with self.transaction() as db:
            db.execute(STALENESS_TABLE)
            db.executemany(
                "INSERT OR REPLACE INTO staleness VALUES (?, ?, ?, ?)",
                [(r.trial_id, r.told_update, r.staleness, int(r.learned)) for r in rows],
            )
            db.executemany(
                "INSERT OR REPLACE INTO updates VALUES (?, ?, ?)",
                [(u, now, json.dumps(dict(m), sort_keys=True)) for u, m in updates],
            )

    def commit_tells(self, trial_ids: Sequence[int], round_: int, asked: int,
                     strategy_state: Mapping[str, Any]) -> None:
        """An async checkpoint: mark trials told and save the strategy state that learned
        from them, atomically. After a crash a finished trial is either told and in the
        saved state, or untold (and told again on resume)."""
        with self.transaction() as db:
            db.executemany("UPDATE trials SET told = 1 WHERE id = ?", [(i,) for i in trial_ids])
            self.save_strategy(round_, asked, strategy_state)

    def staleness(self) -> dict[int, Staleness]:
        """Trial id -> its staleness, for the told trials of an async run (else empty)."""
        try:
            rows = self.db.execute("SELECT * FROM staleness").fetchall()
        except sqlite3.OperationalError:
            return {}  # not an async run
        return {r["trial_id"]: Staleness(r["trial_id"], r["told_update"], r["staleness"], bool(r["learned"]))
                for r in rows}

    # -- one-shot runs -----------------------------------------------------------------------
    def checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """(epochs done, the state saved at the end of the last one), or None."""
        try:
            row = self.db.execute("SELECT epoch, state FROM checkpoint WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return None  # a database from before one-shot runs
        if row is None:
            return None
        try:
            return row["epoch"], decode_state(row["state"])
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.path}: damaged one-shot checkpoint ({type(exc).__name__})") from None

    def commit_epoch(self, epoch: int, state: Mapping[str, Any], metrics: Mapping[str, float],
                     updates: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Save a one-shot run's state after ``epoch`` epochs, that epoch's metrics and its
        controller updates, atomically: a crash keeps all of them or none."""
        blob = encode_state(state)
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO checkpoint VALUES (1, ?, ?, ?)", (epoch, blob, now))
            if epoch > 0:
                db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?)",
                           (epoch, now, json.dumps(dict(metrics), sort_keys=True)))
            for round_, values in updates:
                db.execute("INSERT OR REPLACE INTO updates VALUES (?, ?, ?)",
                           (round_, now, json.dumps(dict(values), sort_keys=True)))

    def epochs(self) -> list[tuple[int, float, dict[str, Any]]]:
        try:
            rows = self.db.execute("SELECT * FROM epochs ORDER BY epoch").fetchall()
        except sqlite3.OperationalError:
            return []
        return [(r["epoch"], r["time"], json.loads(r["metrics"])) for r in rows]

    def save_derived(self, rows: Sequence[Derived], status: str) -> None:
        """Store the derived architectures and the run's new status in one transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM derived")
            for d in rows:
                db.execute("INSERT INTO derived VALUES (?, ?, ?, ?, ?)",
                           (d.rank, d.arch.to_json(), d.score, d.reward, json.dumps(d.metrics)))
            db.execute("UPDATE runs SET status = ? WHERE id = 1", (status,))

    def derived(self) -> list[Derived]:
        try:
            rows = self.db.execute("SELECT * FROM derived ORDER BY rank").fetchall()
        except sqlite3.OperationalError:
            return []
        return [Derived(r["rank"], Architecture.from_json(r["arch"]), r["score"], r["reward"],
                        json.loads(r["metrics"])) for r in rows]
