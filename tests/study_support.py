"""Helpers for the study tests: a tiny synthetic results database and simulated participants.

The results database is written directly (no method runs), with one flat-coloured output per (method, pair), so
the tests take seconds; the protocol is ``quick``, whose content/style photographs ship inside scikit-image.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

from PIL import Image

from evalkit.store import ResultsStore
from evalkit.study import db as studydb
from evalkit.study.build import BuildResult, build_study, load_study

PAIRS = ("astronaut-hubble", "chelsea-ihc")
COLOURS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 200, 40), (160, 40, 200)]


def make_results(
    root: Path,
    labels: list[str],
    pairs: tuple[str, ...] = PAIRS,
    metrics: dict[str, dict[str, float]] | None = None,
    size: tuple[int, int] = (64, 48),
    protocol_name: str = "quick",
) -> Path:
    """A results root with one finished run: ``labels`` x ``pairs`` outputs, plus optional metric values
    (``metrics[metric][label]``, the same for every pair). Called again on the same root it adds another run.

    ``protocol_name`` other than ``quick`` is the quick protocol under another name, stored with the run (the way
    ``evalkit run`` stores a protocol), so one root can hold runs of two protocols."""
    protocol = {
        "astronaut-hubble": ("astronaut", "hubble_deep_field"),
        "chelsea-ihc": ("chelsea", "ihc"),
        "coffee-gravel": ("coffee", "gravel"),
        "rocket-brick": ("rocket", "brick"),
    }
    text, tag = None, ""
    if protocol_name != "quick":
        quick = Path(__file__).resolve().parents[1] / "protocols" / "quick.toml"
        text = quick.read_text().replace('name = "quick"', f'name = "{protocol_name}"', 1)
    with ResultsStore(root) as store:
        tag = f"r{len(store.runs())}" if store.runs() else ""  # a second run's jobs are other jobs
        sha = hashlib.sha256(text.encode()).hexdigest() if text else ""
        run_id = store.start_run(
            protocol_name, sha, "test", labels, ["64"], "cpu", "local", {}, protocol_text=text, protocol_source=None
        )
        with store.transaction() as cur:
            for li, label in enumerate(labels):
                for pair in pairs:
                    key = f"{tag}{li:02d}{pair}"[:32]
                    rel = Path("images") / protocol_name / f"{tag}{label}-{pair}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", size, COLOURS[li % len(COLOURS)]).save(root / rel)
                    content, style = protocol[pair]
                    cur.execute(
                        "INSERT INTO jobs(job_key, run_id, protocol, method, label, params, pair_id, content, style,"
                        " resolution, seed, status, output_path, spec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            key,
                            run_id,
                            protocol_name,
                            label.split("[")[0],
                            label,
                            "{}",
                            pair,
                            content,
                            style,
                            "64",
                            0,
                            "ok",
                            str(rel),
                            "{}",
                        ),
                    )
                    cur.execute("INSERT INTO run_jobs(run_id, job_key) VALUES (?,?)", (run_id, key))
                    for metric, values in (metrics or {}).items():
                        cur.execute(
                            "INSERT INTO metrics(job_key, metric, eval_size, value, status) VALUES (?,?,?,?,?)",
                            (key, metric, 64, values[label], "ok"),
                        )
        store.finish_run(run_id)
    return root


def make_study(
    tmp: Path,
    labels: list[str],
    question: str = "style",
    fmt: str = "ab",
    seed: int = 3,
    metrics: dict[str, dict[str, float]] | None = None,
    image_size: tuple[int, int] = (64, 48),
    **kwargs,
) -> tuple[Path, BuildResult]:
    results = make_results(tmp / "results", labels, metrics=metrics, size=image_size)
    folder = tmp / "studies" / f"{question}-{fmt}"
    return folder, build_study(results, "latest", question, labels, folder, fmt=fmt, seed=seed, **kwargs)


def simulate(folder: Path, participants: int, strengths: dict[str, float], seed: int = 0, careless: int = 0) -> None:
    """Participants answer every trial: regular trials by a Bradley-Terry (Luce choice) draw with the given
    log-strengths, vigilance trials correctly, repeats as they answered the original. The first ``careless``
    participants pick at random, except that they always fall for the vigilance trials' wrong answer."""
    config = load_study(folder)
    items = list(config.items)
    by_id = {it.id: it for it in items}
    cands = config.candidates
    rng = random.Random(seed)
    studydb.init(folder)
    conn = studydb.connect(folder)
    conn.execute("PRAGMA synchronous=OFF")  # simulation speed only; the server keeps FULL
    try:
        for p in range(participants):
            pid = studydb.create_participant(conn, config, items, {"prolific_pid": f"sim{p}"})
            total = studydb.progress(conn, pid).total
            for idx in range(total):
                row = studydb.trial(conn, pid, idx)
                options = json.loads(row["options"])
                correct = by_id[row["item"]].correct
                if p < careless:
                    wrong = [t for t, c in options if c not in correct]
                    token = rng.choice(wrong) if row["kind"] == "vigilance" else rng.choice(options)[0]
                elif row["kind"] == "vigilance":
                    token = next(t for t, c in options if c in correct)
                elif row["kind"] == "repeat":
                    first = conn.execute(
                        "SELECT cand FROM votes WHERE pid=? AND idx=?", (pid, row["repeat_of"])
                    ).fetchone()["cand"]
                    token = next(t for t, c in options if c == first)
                else:
                    weights = [math.exp(strengths[cands[c].label]) for _, c in options]
                    token = rng.choices(options, weights=weights)[0][0]
                assert studydb.record_vote(conn, pid, idx, token, 500) == "stored"
    finally:
        conn.close()
