"""``evalkit study export-prolific``: one row per session, for approving or rejecting Prolific submissions in bulk.

Columns: Prolific ID, study and session IDs, the participant number, the completion code this server issued, the
status and its reason, the number of votes, and the total and median response time. Statuses, first match wins:

- ``excluded``: the researcher excluded the session (``evalkit study participant --exclude N --reason ...``); the
  reason is theirs;
- ``repeat ID``: another session of the same Prolific ID is the counted one: the first one started, unless the
  researcher chose another (``evalkit study participant --count N``); its votes are excluded from analysis;
- ``incomplete``: did not answer every trial;
- ``screened out``: failed more attention (vigilance) checks than the study allows (``--screen-out``; they got the
  screened-out code), or answered faster than ``--min-response-ms`` at the median (the speed check);
- ``complete``: everything else.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.study import db as studydb

if TYPE_CHECKING:
    from evalkit.study.config import StudyConfig

COLUMNS = [
    "prolific_pid",
    "study_id",
    "session_id",
    "participant",
    "completion_code",
    "status",
    "reason",
    "votes",
    "total_time_s",
    "median_time_s",
]


def status_of(person: dict[str, Any], report: dict[str, Any], config: StudyConfig) -> tuple[str, str]:
    """``(status, reason)`` of one participant row (see the module docstring for the rules)."""
    if person.get("excluded"):
        return "excluded", str(person["excluded"])
    if person["repeat_id"]:
        return "repeat ID", "another session of this Prolific ID is the counted one"
    if not person["completed"]:
        return "incomplete", f"answered {person['answered']} of {person['total']} trials"
    vig = report.get("vigilance_results", [])
    failed = len(vig) - sum(vig)
    if person["code_kind"] == "screened":
        return "screened out", f"failed {failed} of {len(vig)} attention checks"
    if report.get("too_fast"):
        median = report["median_rt_ms"] / 1000
        return "screened out", f"too fast: median response {median:.2f} s < {config.min_response_ms / 1000:.2f} s"
    return "complete", ""


def prolific_rows(folder: Path, config: StudyConfig) -> list[dict[str, Any]]:
    from evalkit.study.analyze import participant_report

    report = participant_report(studydb.vote_rows(folder), config)
    rows = []
    for person in studydb.participant_rows(folder):
        mine = report.get(person["pid"], {})
        status, reason = status_of(person, mine, config)
        times = mine.get("rt_ms", [])
        rows.append(
            {
                "prolific_pid": person["prolific_pid"] or "",
                "study_id": person["study_id"] or "",
                "session_id": person["session_id"] or "",
                "participant": person["n"],
                "completion_code": person["completion_code"] or "",
                "status": status,
                "reason": reason,
                "votes": person["answered"],
                "total_time_s": round(sum(times) / 1000, 3) if times else "",
                "median_time_s": round(mine["median_rt_ms"] / 1000, 3) if mine.get("median_rt_ms") is not None else "",
            }
        )
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
