"""Durable run state: the SQLite trial store and the run directory."""

from nasrl.store.sqlite import STATES, StoreError, Trial, TrialState, TrialStore

__all__ = ["STATES", "StoreError", "Trial", "TrialState", "TrialStore"]
