"""``evalkit study analyze``: votes -> exclusions, pairwise tests, Bradley-Terry ranking, agreement.

Results go to the study folder (``analysis/summary.json``, ``analysis/pairwise.csv``, ``analysis/participants.csv``)
and into the results database the study was built from, as two tables the leaderboard reads (see
:mod:`evalkit.store.studies`)::

    preferences(study_id, study, protocol, run_ids, label, score, lower, upper, rank, votes)
    metric_agreement(study_id, study, protocol, run_ids, metric, agreement, n)

Rows are keyed by the study's id, so two studies with the same folder name never overwrite each other, and carry the
protocol and runs the study was built from, so a leaderboard shows only the studies of the runs it shows. Writing
takes the results root's lock (:mod:`evalkit.rootlock`) for the whole analysis: while an ``evalkit run`` writes the
root, ``analyze`` refuses with a one-line error naming it (or waits, ``wait=True``) before it writes anything.

Only regular trials count towards preferences: vigilance trials have a known answer and repeats duplicate a
regular trial (they measure consistency, and counting them would double-weight some comparisons).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.errors import EvalkitError
from evalkit.rootlock import RootLock
from evalkit.store import DB_NAME, ResultsStore
from evalkit.study import db as studydb
from evalkit.study import stats
from evalkit.study.config import Candidate, StudyConfig, load_study


@dataclass
class Exclusion:
    """Participants are excluded if they fail more vigilance trials than allowed, answer repeated trials less
    consistently than ``min_consistency`` (chance is 1/k for k options), are a second session of a Prolific ID
    that already had one (``keep_repeat_ids`` keeps those), or answer faster than the study's ``min_response_ms``
    at the median (``keep_fast`` keeps those). Sessions the researcher excluded (``evalkit study participant
    --exclude``) are always left out: that decision was made with knowledge no rule here has."""

    max_vigilance_failures: int = 0
    min_consistency: float = 0.5
    keep_repeat_ids: bool = False
    keep_fast: bool = False  # keep participants whose median response time is below the study's min_response_ms


@dataclass
class Analysis:
    study: str  # the study's name (its folder's)
    participants: int
    excluded: list[int]
    votes_used: int
    preferences: pd.DataFrame
    pairwise: pd.DataFrame
    alpha: float
    metric_agreement: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    study_id: str = ""


def participant_report(rows: list[dict[str, Any]], config: StudyConfig) -> dict[str, dict[str, Any]]:
    """Per participant: answers given, vigilance outcomes (True = passed), repeat consistency outcomes, response
    times, the speed flag (median response time below the study's ``min_response_ms``) and the researcher's
    exclusion reason (``excluded``, None if not excluded)."""
    items = {it.id: it for it in config.items}
    report: dict[str, dict[str, Any]] = {}
    chosen = {(r["pid"], r["idx"]): r["cand"] for r in rows}
    for r in rows:
        p = report.setdefault(
            r["pid"],
            {
                "n": r["n"],
                "answered": 0,
                "vigilance_results": [],
                "repeat_results": [],
                "repeat_id": bool(r.get("repeat_id")),
                "excluded": r.get("excluded"),  # the researcher's reason, or None
                "rt_ms": [],
            },
        )
        p["answered"] += 1
        if r.get("rt_ms") is not None:
            p["rt_ms"].append(int(r["rt_ms"]))
        if r["kind"] == "vigilance":
            p["vigilance_results"].append(r["cand"] in items[r["item"]].correct)
        elif r["kind"] == "repeat" and (r["pid"], r["repeat_of"]) in chosen:
            p["repeat_results"].append(chosen[(r["pid"], r["repeat_of"])] == r["cand"])
    minimum = config.min_response_ms
    for p in report.values():
        p["median_rt_ms"] = float(np.median(p["rt_ms"])) if p["rt_ms"] else None
        p["too_fast"] = bool(minimum and p["median_rt_ms"] is not None and p["median_rt_ms"] < minimum)
    return report


def excluded_participants(report: dict[str, dict[str, Any]], rule: Exclusion) -> set[str]:
    out = set()
    for pid, p in report.items():
        failures = len(p["vigilance_results"]) - sum(p["vigilance_results"])
        reps = p["repeat_results"]
        if failures > rule.max_vigilance_failures or (reps and sum(reps) / len(reps) < rule.min_consistency):
            out.add(pid)
        if p.get("repeat_id") and not rule.keep_repeat_ids:
            out.add(pid)
        if p.get("too_fast") and not rule.keep_fast:
            out.add(pid)
        if p.get("excluded"):
            out.add(pid)
    return out


def comparisons_of(rows: list[dict[str, Any]], config: StudyConfig, keep: set[str]) -> list[dict[str, Any]]:
    """Regular votes of kept participants as (winner candidate, loser candidates); a "no preference" answer has
    ``winner`` None and every option in ``tied``."""
    out = []
    for r in rows:
        if r["kind"] != "regular" or r["pid"] not in keep:
            continue
        options = [cid for _, cid in json.loads(r["options"])]
        if r["cand"] == studydb.TIE:
            out.append({"pid": r["pid"], "item": r["item"], "winner": None, "losers": [], "tied": options})
            continue
        out.append(
            {"pid": r["pid"], "item": r["item"], "winner": r["cand"], "losers": [c for c in options if c != r["cand"]]}
        )
    return out


def outcomes(comp: dict[str, Any], index: dict[str, int], cands: dict[str, Candidate]) -> list[tuple[int, int, float]]:
    """One vote's pairwise outcomes ``(winner, loser, weight)``: weight 1 per beaten option; a tie is half a win
    each way for every two options (the arena and BAPPS conventions)."""

    def of(cid: str) -> int:
        return index[str(cands[cid].label)]  # regular trials show method outputs only, which all have a label

    if comp["winner"] is None:
        labels = [of(c) for c in comp["tied"]]
        return [(a, b, 0.5) for a, b in itertools.permutations(labels, 2)]
    return [(of(comp["winner"]), of(loser), 1.0) for loser in comp["losers"]]


def metric_values(results: Path, job_keys: set[str]) -> pd.DataFrame:
    """job_key x metric table of ok metric values from the run database (lowest eval size if several)."""
    with ResultsStore.open_reader(results) as store:
        return store.metric_values(job_keys)


def metric_agreement(
    comparisons: list[dict[str, Any]], config: StudyConfig, values: pd.DataFrame, notes: list[str]
) -> pd.DataFrame:
    """BAPPS-style 2AFC agreement: per vote 1 if the metric prefers the chosen image, 0 if the other, 1/2 on a
    tie; averaged over the votes where the metric has both values. n-way votes count as (winner, loser) pairs."""
    from evalkit.metrics import metric_info

    cands = config.candidates
    rows = []
    for metric in values.columns:
        try:
            higher = metric_info(metric).higher_is_better
        except (ValueError, KeyError, AttributeError) as exc:
            notes.append(f"metric '{metric}' skipped: no metadata ({exc})")
            continue
        scores = []
        for comp in comparisons:
            if comp["winner"] is None:  # the person had no preference: whatever the metric says agrees half-way
                scores.extend([0.5] * (len(comp["tied"]) - 1))
                continue
            for loser in comp["losers"]:
                a, b = cands[comp["winner"]].job_key, cands[loser].job_key
                va, vb = values[metric].get(a, np.nan), values[metric].get(b, np.nan)
                if np.isnan(va) or np.isnan(vb):
                    continue
                scores.append(0.5 if va == vb else float((va > vb) == higher))
        if scores:
            rows.append({"metric": metric, "agreement": float(np.mean(scores)), "n": len(scores)})
    return pd.DataFrame(rows, columns=["metric", "agreement", "n"])


def analyze(
    folder: Path,
    rule: Exclusion | None = None,
    rounds: int = 1000,
    results: Path | None = None,
    write_db: bool = True,
    wait: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Analysis:
    """Analyse a study folder; see the module docstring for the outputs. With ``write_db`` and a results database at
    ``results`` (default: the root the study was built from) the root's lock is held from before anything is written
    until the rows are in: a root another process writes is a one-line :class:`~evalkit.rootlock.RootBusy` naming
    it, or with ``wait`` a wait for it (``notify`` is told once)."""
    rule = rule or Exclusion()
    config = load_study(folder)
    rows = studydb.vote_rows(folder)
    if not rows:
        raise EvalkitError(f"study {folder} has no votes yet: serve it with `evalkit study serve {folder}` first")
    root = Path(results or config.results)
    with ExitStack() as held:
        store: ResultsStore | None = None
        if write_db and (root / DB_NAME).is_file():
            lock = RootLock(root, f"evalkit study analyze {folder}").acquire(wait=wait, notify=notify)
            held.callback(lock.release)
            store = held.enter_context(ResultsStore(root))  # the root's writer, under its lock
        analysis, report, excluded = _analysis(folder, config, rows, rule, rounds, root, store)
        write_folder(folder, analysis, report, excluded)
        if store is not None:
            write_results(store, config, analysis)
    return analysis


def _analysis(
    folder: Path,
    config: StudyConfig,
    rows: list[dict[str, Any]],
    rule: Exclusion,
    rounds: int,
    root: Path,
    store: ResultsStore | None,
) -> tuple[Analysis, dict[str, dict[str, Any]], set[str]]:
    """The analysis itself (nothing written): exclusions, pairwise tests, ranking, agreement (metric values from
    ``store`` when the caller holds it, else read from ``root``)."""
    labels: list[str] = list(config.methods)
    index = {lab: i for i, lab in enumerate(labels)}
    report = participant_report(rows, config)
    excluded = excluded_participants(report, rule)
    keep = set(report) - excluded
    comps = comparisons_of(rows, config, keep)
    notes = [
        f"participant {p['n']} excluded by the researcher: {p['excluded']}"
        for p in sorted(report.values(), key=lambda p: p["n"])
        if p.get("excluded")
    ]
    if not comps:
        raise EvalkitError(
            f"study {folder}: no usable votes after excluding {len(excluded)} of {len(report)}"
            " participants: relax the exclusion rule (--max-vigilance-failures/--min-consistency)"
        )
    votes = [outcomes(c, index, config.candidates) for c in comps]
    wins = stats.win_matrix([pair for vote in votes for pair in vote], len(labels))

    # inter-rater agreement over the items (which candidate each rater chose)
    by_item: dict[str, list[str]] = {}
    for c in comps:
        by_item.setdefault(c["item"], []).append(c["winner"] if c["winner"] is not None else studydb.TIE)

    job_keys = {c.job_key for c in config.candidates.values() if c.job_key}
    agreement = pd.DataFrame(columns=["metric", "agreement", "n"])
    if store is not None or (root / DB_NAME).is_file():
        values = store.metric_values(job_keys) if store is not None else metric_values(root, job_keys)
        agreement = metric_agreement(comps, config, values, notes)
    else:
        notes.append(
            f"results database {root / DB_NAME} not found: metric agreement and the"
            " leaderboard tables were skipped (pass --results ROOT)"
        )
    agreement.insert(0, "study", config.name)
    analysis = Analysis(
        study=config.name,
        participants=len(report),
        excluded=sorted(report[p]["n"] for p in excluded),
        votes_used=len(comps),
        preferences=ranking(config, votes, wins, rounds),
        pairwise=pairwise_table(labels, wins),
        alpha=stats.krippendorff_alpha_nominal(list(by_item.values())),
        metric_agreement=agreement,
        notes=notes,
        study_id=config.study_id,
    )
    return analysis, report, excluded


def pairwise_table(labels: list[str], wins: np.ndarray) -> pd.DataFrame:
    """Pairwise win rates with Wilson intervals and Holm-corrected binomial p (a tie is half a win each; the exact
    tests round a half-integer count to even)."""
    pair_rows = []
    for i, j in itertools.combinations(range(len(labels)), 2):
        n = int(round(wins[i, j] + wins[j, i]))
        a_wins = float(wins[i, j])
        lo, hi = stats.wilson(round(a_wins), n)
        pair_rows.append(
            {
                "a": labels[i],
                "b": labels[j],
                "a_wins": a_wins,
                "n": n,
                "win_rate": a_wins / n if n else np.nan,
                "lower": lo,
                "upper": hi,
                "p": stats.binomial_p(round(a_wins), n),
            }
        )
    pairwise = pd.DataFrame(pair_rows)
    pairwise["p_holm"] = stats.holm(list(pairwise["p"]))
    return pairwise


def ranking(
    config: StudyConfig, votes: list[list[tuple[int, int, float]]], wins: np.ndarray, rounds: int
) -> pd.DataFrame:
    """Bradley-Terry scores (Elo scale) with bootstrap intervals and arena ranks, best first. Methods without a
    comparison yet (a small pilot) are listed without a score (NaN) and without a rank, never a crash: they cannot be
    scored, and the others are scored among themselves."""
    labels = list(config.methods)
    per_label_votes = (wins + wins.T).sum(axis=1)
    active = np.flatnonzero(per_label_votes > 0)
    score = np.full(len(labels), np.nan)
    lower, upper = score.copy(), score.copy()
    ranks: list[int | None] = [None] * len(labels)
    if len(active) >= 2:
        remap = {int(old): new for new, old in enumerate(active)}
        sub_votes = [[(remap[c[0]], remap[c[1]], *c[2:]) for c in vote] for vote in votes]
        score[active] = stats.to_elo(stats.bradley_terry(wins[np.ix_(active, active)]))
        boot = stats.to_elo(stats.bootstrap_bt(sub_votes, len(active), rounds=rounds, seed=config.seed))
        lower[active], upper[active] = np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)
        for index, rank in zip(active, stats.arena_ranks(list(lower[active]), list(upper[active])), strict=True):
            ranks[int(index)] = rank
    prefs = pd.DataFrame(
        {
            "study": config.name,
            "label": labels,
            "score": score,
            "lower": lower,
            "upper": upper,
            "rank": pd.array(ranks, dtype="Int64"),
            "votes": np.round(per_label_votes).astype(int),
        }
    )
    return prefs.sort_values(["rank", "score"], ascending=[True, False]).reset_index(drop=True)


def _num(value: Any) -> float | None:
    """A score for the database: ``None`` (NULL) for a method not scored yet."""
    return None if pd.isna(value) else float(value)


def write_folder(folder: Path, analysis: Analysis, report: dict[str, dict[str, Any]], excluded: set[str]) -> None:
    out = folder / "analysis"
    out.mkdir(exist_ok=True)
    analysis.pairwise.to_csv(out / "pairwise.csv", index=False)
    analysis.preferences.to_csv(out / "preferences.csv", index=False)
    analysis.metric_agreement.to_csv(out / "metric_agreement.csv", index=False)
    pd.DataFrame(
        [
            {
                "participant": p["n"],
                "answered": p["answered"],
                "vigilance_passed": sum(p["vigilance_results"]),
                "vigilance_total": len(p["vigilance_results"]),
                "repeats_consistent": sum(p["repeat_results"]),
                "repeats_total": len(p["repeat_results"]),
                "repeat_id": p.get("repeat_id", False),
                "median_rt_ms": p.get("median_rt_ms"),
                "too_fast": p.get("too_fast", False),
                "excluded_by_researcher": p.get("excluded") or "",
                "excluded": pid in excluded,
            }
            for pid, p in sorted(report.items(), key=lambda kv: kv[1]["n"])
        ]
    ).to_csv(out / "participants.csv", index=False)
    summary = {
        "study": analysis.study,
        "study_id": analysis.study_id,
        "participants": analysis.participants,
        "excluded": analysis.excluded,
        "votes_used": analysis.votes_used,
        "krippendorff_alpha": analysis.alpha,
        "notes": analysis.notes,
        "preferences": analysis.preferences.to_dict(orient="records"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))


def write_results(store: ResultsStore, config: StudyConfig, analysis: Analysis) -> None:
    """Replace this study's rows in the results database's ``preferences`` and ``metric_agreement`` tables (keyed by
    its study id, with the protocol and runs it was built from); call while holding the root's lock."""
    store.write_study_results(
        config.study_id,
        config.name,
        config.protocol,
        list(config.run_ids),
        [
            (
                r.label,
                _num(r.score),
                _num(r.lower),
                _num(r.upper),
                None if pd.isna(r.rank) else int(r.rank),
                int(r.votes),
            )
            for r in analysis.preferences.itertuples()
        ],
        [(r.metric, float(r.agreement), int(r.n)) for r in analysis.metric_agreement.itertuples()],
        replaces=config.legacy_key,
    )
