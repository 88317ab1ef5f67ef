"""Study results in the results database: what ``evalkit study analyze`` writes back and the leaderboard reads.

Each study's rows are keyed by its study id and carry the protocol and run ids the study was built from, so two
studies with the same folder name never overwrite each other and a leaderboard shows only the studies built from
the runs it shows. (A study's own vote database is the study server's, :mod:`evalkit.study.db`.)

Rows migrated from a database older than schema 3 are *legacy* rows: their study id is the study's name and their
protocol and run ids are unknown (NULL). A run filter cannot place them, so they are always shown, with the
``legacy`` column of the frames set; the leaderboard labels them "(legacy)". Analysing such a study again with this
evalkit writes rows with its id and runs, and replaces its legacy rows.
"""

from __future__ import annotations

import json
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

    def write_study_results(
        self,
        study_id: str,
        study: str,
        protocol: str,
        run_ids: list[str],
        preferences: list[tuple[str, float | None, float | None, float | None, int | None, int]],
        agreement: list[tuple[str, float, int]],
        replaces: str | None = None,
    ) -> None:
        """Replace a study's rows in ``preferences`` and ``metric_agreement``, which the leaderboard reads.

        ``study`` is its display name, ``protocol`` and ``run_ids`` the runs it was built from; ``preferences`` rows
        are ``(label, score, lower, upper, rank, votes)`` and ``agreement`` rows ``(metric, agreement, n)``.
        ``replaces``: the study id its results had as legacy rows (NULL run ids), which this write supersedes."""
        runs = json.dumps(list(run_ids))
        with self.transaction() as cur:
            for table in ("preferences", "metric_agreement"):
                cur.execute(f"DELETE FROM {table} WHERE study_id=?", (study_id,))
                if replaces is not None:
                    cur.execute(f"DELETE FROM {table} WHERE study_id=? AND run_ids IS NULL", (replaces,))
            cur.executemany(
                "INSERT INTO preferences(study_id, study, protocol, run_ids, label, score, lower, upper, rank, votes)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(study_id, study, protocol, runs, *row) for row in preferences],
            )
            cur.executemany(
                "INSERT INTO metric_agreement(study_id, study, protocol, run_ids, metric, agreement, n)"
                " VALUES (?,?,?,?,?,?,?)",
                [(study_id, study, protocol, runs, *row) for row in agreement],
            )

    @staticmethod
    def _study_filter(run_ids: list[str] | None) -> tuple[str, list[str]]:
        """SQL keeping the studies whose run ids are all among ``run_ids`` (``None``: every study), and legacy rows."""
        if run_ids is None:
            return "", []
        marks = ",".join("?" * len(run_ids))
        return (
            " WHERE t.run_ids IS NULL OR NOT EXISTS"
            f" (SELECT 1 FROM json_each(t.run_ids) r WHERE r.value NOT IN ({marks}))",
            list(run_ids),
        )

    def preferences_frame(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Human preference rows of the studies built from ``run_ids`` only (``None``: all), with a ``legacy`` column
        (rows whose runs are unknown; see the module docstring), by study then rank."""
        where, args = self._study_filter(run_ids)
        return self._frame(
            "SELECT t.*, t.run_ids IS NULL AS legacy FROM preferences t" + where + " ORDER BY t.study, t.study_id,"
            " t.rank, t.score DESC",
            args,
        )

    def agreement_frame(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Metric agreement rows of the studies built from ``run_ids`` only (``None``: all), with ``legacy``."""
        where, args = self._study_filter(run_ids)
        return self._frame(
            "SELECT t.*, t.run_ids IS NULL AS legacy FROM metric_agreement t" + where + " ORDER BY t.study,"
            " t.study_id, t.metric",
            args,
        )


__all__ = ["StudyResults"]
