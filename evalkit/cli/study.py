"""``evalkit study build|serve|analyze|export-prolific|participant``: human preference studies (docs/studies.md)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import PROTOCOL_HELP, RUN_HELP, DataMirror, Home, Results, WeightsMirror, asset_store
from evalkit.errors import EvalkitError
from evalkit.study.limits import DEFAULT_NEW_PER_ADDRESS, DEFAULT_WINDOW_S

study_app = typer.Typer(
    help="Human preference studies: build blinded forced-choice studies, serve, analyse.", no_args_is_help=True
)
app.add_typer(study_app, name="study")


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@study_app.command("build")
def build(
    run: list[str] = typer.Option([], "--run", help=RUN_HELP + " 'latest': the newest run."),
    protocol: str = typer.Option(None, "--protocol", help=PROTOCOL_HELP),
    question: str = typer.Option(..., "--question", "-q", help="style | favorite | photoreal."),
    methods: str = typer.Option(..., "--methods", "-m", help="Comma list of method labels (2 or more)."),
    out: Path = typer.Option(..., "--out", "-o", help="New study folder, e.g. studies/NAME."),
    pairs: str = typer.Option(None, "--pairs", help="Comma list of pair ids (default: all with every method)."),
    fmt: str = typer.Option("ab", "--format", help="ab (two options) or nway (up to five, A-E, with references)."),
    trials: int = typer.Option(None, "--trials-per-participant", "-n", help="Regular trials each (default <= 20)."),
    vigilance: int = typer.Option(None, "--vigilance", help="Vigilance catch trials each (default 2 if possible)."),
    repeats: int = typer.Option(2, "--repeats", help="Repeated trials each, for consistency."),
    results: Path = Results,
    resolution: str = typer.Option(None, "--resolution", help="Which resolution's outputs (default: smallest)."),
    seed: int = typer.Option(None, "--seed", help="Study seed (default: random, recorded in study.json)."),
    completion_code: str = typer.Option(
        None,
        "--completion-code",
        help="Prolific's completion code of the study, used in the return link "
        "(each participant also gets their own code).",
    ),
    screen_out: int = typer.Option(
        None,
        "--screen-out",
        help="Participants failing more than N vigilance trials get the screened-out code (default: nobody).",
    ),
    screened_code: str = typer.Option(None, "--screened-code", help="Prolific's code for screened-out participants."),
    max_participants: int = typer.Option(None, "--max-participants", help="Cap on sessions (default: none)."),
    submit_url: str = typer.Option(
        None,
        "--submit-url",
        help="Where the static export posts its answers, e.g. https://HOST/static-submit (default: nowhere).",
    ),
    texts: Path = typer.Option(
        None, "--texts", help="TOML with your title, information, consent, instructions, question, thank_you, contact."
    ),
    allow_tie: bool = typer.Option(False, "--allow-tie", help="Offer a 'no preference' answer (half a win each)."),
    min_response_ms: int = typer.Option(
        500, "--min-response-ms", help="Median response time below this flags a participant as too fast (0: off)."
    ),
    home: Path = Home,
    weights_mirror: Path = WeightsMirror,
    data_mirror: Path = DataMirror,
) -> None:
    """Build a blinded study folder from runs' outputs (images copied under random names)."""
    from evalkit.study.build import build_study

    if trials is not None and trials < 1:
        raise EvalkitError("--trials-per-participant must be at least 1")
    if repeats < 0 or (vigilance is not None and vigilance < 0):
        raise EvalkitError("--repeats and --vigilance must not be negative")
    res = build_study(
        results,
        run or None,
        question,
        _split(methods),
        out,
        protocol=protocol,
        pairs=_split(pairs) or None,
        fmt=fmt,
        trials_per_participant=trials,
        vigilance=vigilance,
        repeats=repeats,
        seed=seed,
        resolution=resolution,
        completion_code=completion_code,
        screened_code=screened_code,
        screen_out_after=screen_out,
        max_participants=max_participants,
        submit_url=submit_url,
        assets=asset_store(home, weights_mirror, data_mirror),
        texts=texts,
        allow_tie=allow_tie,
        min_response_ms=min_response_ms,
    )
    typer.echo(
        f"study: {res.folder} ({res.items} comparisons, {res.vigilance_items} vigilance items,"
        f" {res.static_sequences} static sequences)"
    )
    typer.echo(f"built from: protocol {res.protocol}, run(s) {', '.join(res.run_ids)} (study id {res.study_id})")
    for note in res.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"serve: evalkit study serve {res.folder}")
    typer.echo(f"static export: {res.folder / 'static'} (index.html + manifest.json)")


@study_app.command("export-prolific")
def export_prolific(
    folder: Path = typer.Argument(..., help="Study folder (made by `evalkit study build`)."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV file to write (default: <folder>/prolific.csv)."),
) -> None:
    """One row per session for approving/rejecting Prolific submissions: code, status with reason, votes, times."""
    from evalkit.study.build import load_study
    from evalkit.study.prolific import prolific_rows, to_csv

    config = load_study(folder)
    rows = prolific_rows(folder, config)
    target = out or folder / "prolific.csv"
    # participant IDs and valid completion codes: readable by the owner only, like the study's database
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(to_csv(rows))
    os.chmod(target, 0o600)  # an existing file keeps its old mode on open
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no sessions yet"
    typer.echo(f"prolific export: {target} ({summary})")


@study_app.command("participant")
def participant(
    folder: Path = typer.Argument(..., help="Study folder (made by `evalkit study build`)."),
    exclude: int = typer.Option(
        None,
        "--exclude",
        metavar="N",
        help="Exclude participant N (needs --reason): left out of `study analyze`, 'excluded' in the Prolific export.",
    ),
    reason: str = typer.Option(
        None, "--reason", help="Why (with --exclude): one line, kept with the session and shown in the Prolific export."
    ),
    include: int = typer.Option(None, "--include", metavar="N", help="Undo --exclude for participant N."),
    count: int = typer.Option(
        None,
        "--count",
        metavar="N",
        help="Make participant N the counted session of its Prolific ID (its other sessions become repeat IDs).",
    ),
) -> None:
    """Decide a contested session: exclude or re-include it, or make it the one counted for its Prolific ID.

    N is the participant number: '#' in the admin page, 'participant' in the CSVs. One action per call; each is
    recorded in the database's admin_actions table. Safe while `study serve` runs.
    """
    from evalkit.study import db as studydb
    from evalkit.study.build import load_study

    given = [
        name
        for name, value in (("--exclude", exclude), ("--include", include), ("--count", count))
        if value is not None
    ]
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        raise EvalkitError(f"give exactly one of --exclude N --reason TEXT, --include N, --count N{got}")
    if exclude is not None and reason is None:
        raise EvalkitError(
            f'--exclude needs --reason "why": e.g. --exclude {exclude} --reason "not the real participant"'
        )
    if exclude is None and reason is not None:
        raise EvalkitError("--reason goes with --exclude only")
    load_study(folder)  # a one-line error unless FOLDER is a study
    if exclude is not None and reason is not None:
        previous = studydb.exclude(folder, exclude, reason)
        was = f" (replacing the earlier reason: {previous})" if previous is not None else ""
        typer.echo(f"participant {exclude} excluded: {reason.strip()}{was}")
    elif include is not None:
        removed = studydb.include(folder, include)
        if removed is None:
            typer.echo(f"participant {include} was not excluded: nothing changed")
        else:
            typer.echo(f"participant {include} included again (was excluded: {removed})")
    elif count is not None:
        res = studydb.count_session(folder, count)
        if res.was_counted:
            line = (
                f"participant {count} already is the counted session of Prolific ID {res.prolific_pid}: nothing changed"
            )
        else:
            marked = ", ".join(str(n) for n in res.marked) or "none"
            line = (
                f"participant {count} is now the counted session of Prolific ID {res.prolific_pid}"
                f" (marked repeat ID: {marked})"
            )
        if res.excluded is not None:
            line += f"; it is still excluded ({res.excluded}): --include {count} to use its votes"
        typer.echo(line)


@study_app.command("serve")
def serve(
    folder: Path = typer.Argument(..., help="Study folder made by `evalkit study build`."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    secure_cookies: bool = typer.Option(
        False, "--secure-cookies", help="Mark cookies Secure (serving behind TLS; see docs/studies.md)."
    ),
    max_participants: int = typer.Option(
        None, "--max-participants", help="Cap on sessions (default: the study's own, else none)."
    ),
    new_per_address: int = typer.Option(
        DEFAULT_NEW_PER_ADDRESS,
        "--new-per-address",
        help="New sessions one client address may start per --rate-window (0: no limit).",
    ),
    rate_window: float = typer.Option(DEFAULT_WINDOW_S, "--rate-window", help="Seconds of the rate-limit window."),
    trust_proxy: bool = typer.Option(
        False, "--trust-proxy", help="Client address from X-Forwarded-For (only behind your own reverse proxy)."
    ),
    static_origin: list[str] = typer.Option(
        [], "--static-origin", help="Origin whose static export may post answers (repeatable)."
    ),
) -> None:
    """Serve the study over HTTP (Starlette on uvicorn); votes go to <folder>/study.sqlite."""
    import uvicorn

    from evalkit.study.app import ServeOptions, create_app
    from evalkit.study.build import load_study

    if new_per_address < 0 or rate_window <= 0:
        raise EvalkitError("--new-per-address must be >= 0 and --rate-window > 0")
    if max_participants is not None and max_participants < 1:
        raise EvalkitError("--max-participants must be at least 1")
    config = load_study(folder)
    application = create_app(
        folder,
        ServeOptions(
            secure_cookies=secure_cookies,
            max_participants=max_participants,
            new_per_address=new_per_address,
            window_s=rate_window,
            trust_proxy=trust_proxy,
            static_origins=tuple(static_origin),
        ),
    )
    scheme = "https" if secure_cookies else "http"
    typer.echo(
        f"participants: {scheme}://{host}:{port}/  (Prolific: append "
        "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}})"
    )
    typer.echo(
        f"admin:        {scheme}://{host}:{port}/admin?token={config.admin_token}  (open once: the token "
        "becomes a cookie and leaves the address bar)"
    )
    # proxy headers are read by the app itself (--trust-proxy), never by uvicorn's default loopback trust
    uvicorn.run(application, host=host, port=port, log_level="warning", proxy_headers=False)


@study_app.command("analyze")
def analyze(
    folder: Path = typer.Argument(..., help="Study folder with votes."),
    results: Path = typer.Option(
        None, "--results", "-r", help="Results root (default: the one the study was built from)."
    ),
    rounds: int = typer.Option(1000, "--bootstrap", help="Bootstrap rounds for the 95% intervals."),
    max_vigilance_failures: int = typer.Option(0, "--max-vigilance-failures"),
    min_consistency: float = typer.Option(0.5, "--min-consistency", help="Minimum share of repeats answered alike."),
    keep_repeat_ids: bool = typer.Option(
        False, "--keep-repeat-ids", help="Keep second sessions of a Prolific ID (excluded by default)."
    ),
    keep_fast: bool = typer.Option(
        False, "--keep-fast", help="Keep participants faster than the study's --min-response-ms (excluded by default)."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="If a run is writing the results root, wait for it instead of refusing."
    ),
) -> None:
    """Rank methods from the votes; write preferences/metric_agreement into the results database (under its lock)."""
    from evalkit.study.analyze import Exclusion
    from evalkit.study.analyze import analyze as run_analysis

    if rounds < 10:
        raise EvalkitError("--bootstrap needs at least 10 rounds")
    rule = Exclusion(max_vigilance_failures, min_consistency, keep_repeat_ids, keep_fast)
    console = Console()
    a = run_analysis(
        folder, rule, rounds=rounds, results=results, wait=wait, notify=lambda line: console.print(escape(line))
    )
    console.print(
        f"participants: {a.participants}, excluded: {len(a.excluded)}, "
        f"votes used: {a.votes_used}, Krippendorff's alpha: {a.alpha:.3f}"
    )
    table = Table(title=f"human preference: {escape(a.study)}")
    for col in ("rank", "method", "score", "95% CI", "votes"):
        table.add_column(col)
    for r in a.preferences.itertuples():
        table.add_row(str(r.rank), escape(r.label), f"{r.score:.0f}", f"{r.lower:.0f} - {r.upper:.0f}", str(r.votes))
    console.print(table)
    pairs = Table(title="pairwise win rates (Wilson 95%, Holm-corrected binomial p)")
    for col in ("A", "B", "A wins", "rate", "95% CI", "p (Holm)"):
        pairs.add_column(col)
    for r in a.pairwise.itertuples():
        pairs.add_row(
            escape(r.a),
            escape(r.b),
            f"{r.a_wins}/{r.n}",
            f"{r.win_rate:.2f}",
            f"{r.lower:.2f} - {r.upper:.2f}",
            f"{r.p_holm:.3g}",
        )
    console.print(pairs)
    for r in a.metric_agreement.itertuples():
        console.print(f"metric agreement {escape(r.metric)}: {r.agreement:.3f} (n={r.n})")
    for note in a.notes:
        console.print(f"note: {escape(note)}")
    console.print(f"written: {folder / 'analysis'}")
