"""Study results in the results database: what ``evalkit study analyze`` writes back and the leaderboard reads.

Each study's rows are keyed by its study id and carry the protocol and run ids the study was built from, so two
studies with the same folder name never overwrite each other and a leaderboard shows only the studies built from
the runs it shows. (A study's own vote database is the study server's, :mod:`evalkit.study.db`.)
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class StudyResults:
    conn: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Cursor]:  # provided by ResultsStore
        raise NotImplementedError

    def _frame(self, query: str, args: Any = ()) -> pd.DataFrame:  # provided by ReadModels
        raise NotImplementedError

    def write_study_results(self, study: str, preferences: list[tuple], agreement: list[tuple]) -> None:
        """Replace a study's rows in ``preferences`` and ``metric_agreement``, which the leaderboard reads."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM preferences WHERE study_id=?", (study,))
            cur.execute("DELETE FROM metric_agreement WHERE study_id=?", (study,))
            cur.executemany(
                "INSERT INTO preferences VALUES (?,?,NULL,NULL,?,?,?,?,?,?)", [(p[0], *p) for p in preferences]
            )
            cur.executemany(
                "INSERT INTO metric_agreement VALUES (?,?,NULL,NULL,?,?,?)", [(a[0], *a) for a in agreement]
            )

    def preferences_frame(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        return self._frame("SELECT * FROM preferences ORDER BY study, rank")

    def agreement_frame(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        return self._frame("SELECT * FROM metric_agreement ORDER BY study, metric")


__all__ = ["StudyResults"]
