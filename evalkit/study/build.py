"""``evalkit study build``: turn finished runs into a self-contained, blinded study folder.

Layout of ``studies/NAME``::

    study.json          private: configuration, answer key (candidate -> method/job), items, admin token, seed
    static/             public: what a participant's browser may see
      images/<32 hex>.png   every stimulus, re-encoded (metadata stripped) under a random name
      manifest.json     pre-generated trial sequences (opaque tokens only, no answer key, no catch flags)
      index.html        a dependency-free page that runs the study from the manifest (for hosting elsewhere)
    study.sqlite        created by ``serve``: participants, their sequences and votes

Method names never reach the public side: images are copied under random names and options are referenced by
per-trial random tokens, so neither a file name nor a URL nor the page source tells which method made an image.

A build runs four steps: :func:`validate` the options, :func:`select` the runs and their outputs (the shared run
selection of every reading command: by default every run of the latest run's protocol), copy the stimuli
(:mod:`evalkit.study.stimuli`) and :func:`write` the folder. The results database is only read.
"""

from __future__ import annotations

import json
import math
import random
import re
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError
from evalkit.study import FORMATS, MAX_OPTIONS, QUESTIONS
from evalkit.study import texts as study_texts
from evalkit.study.codes import new_secret
from evalkit.study.config import (
    IMAGES_DIR,
    STATIC_DIR,
    STUDY_FILE,
    StudyConfig,
    load_study,
    new_study_id,
    write_study,
)
from evalkit.study.design import Item, participant_sequence
from evalkit.study.render import render
from evalkit.study.stimuli import copy_stimuli, design_items

if TYPE_CHECKING:
    from evalkit.protocol import Protocol
    from evalkit.store import ResultsStore

__all__ = [
    "IMAGES_DIR",
    "STATIC_DIR",
    "STUDY_FILE",
    "BuildOptions",
    "BuildResult",
    "build_study",
    "load_study",
    "static_manifest",
]

LATEST = "latest"  # --run latest: the newest run id
DEFAULT_MIN_RESPONSE_MS = 500  # a median answer faster than this is not looking at the images (configurable)
SECONDS_PER_SCREEN = {"ab": 6, "nway": 10}  # an estimate for the duration the consent page states
CODE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
URL = re.compile(r"https?://[^\s\"'<>]+")


@dataclass
class BuildResult:
    folder: Path
    items: int
    vigilance_items: int
    candidates: int
    static_sequences: int
    admin_token: str
    notes: list[str] = field(default_factory=list)  # e.g. the protocol file changed since the run
    study_id: str = ""
    protocol: str = ""
    run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuildOptions:
    """What ``evalkit study build`` asks for, besides where the runs are and where the study goes."""

    question: str
    methods: list[str]
    pairs: list[str] | None = None
    fmt: str = "ab"
    trials_per_participant: int | None = None
    vigilance: int | None = None
    repeats: int = 2
    seed: int | None = None
    resolution: str | None = None
    static_participants: int | None = None
    completion_code: str | None = None
    screened_code: str | None = None
    screen_out_after: int | None = None
    max_participants: int | None = None
    submit_url: str | None = None
    texts: Path | None = None
    allow_tie: bool = False
    min_response_ms: int = DEFAULT_MIN_RESPONSE_MS


@dataclass
class Selection:
    """The select step's outcome: the runs, and one output per (label, pair) at one resolution."""

    protocol_name: str
    run_ids: list[str]
    labels: list[str]
    resolution: str
    pairs: list[str]
    outputs: dict[tuple[str, str], dict[str, Any]]
    protocol: Protocol
    notes: list[str]


def build_study(
    results: Path,
    run: str | list[str] | None,
    question: str,
    methods: list[str],
    out: Path,
    *,
    protocol: str | None = None,
    assets: AssetStore | None = None,
    **options: Any,
) -> BuildResult:
    """Build the study folder (see the module docstring) from the runs ``run`` names (a run id, ``latest``, ``all``
    or a list of them; ``None``: every run of the latest run's protocol) and ``protocol``; a failed build leaves no
    half-made folder behind. ``options`` are the fields of :class:`BuildOptions`."""
    opts = BuildOptions(question=question, methods=list(methods), **options)
    existed = out.exists()
    try:
        return _build(Path(results), run, protocol, opts, out, assets)
    except BaseException:
        if not existed and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build(
    results: Path,
    run: str | list[str] | None,
    protocol: str | None,
    opts: BuildOptions,
    out: Path,
    assets: AssetStore | None,
) -> BuildResult:
    own_texts = validate(opts, out)
    chosen = select(results, run, protocol, opts)
    seed = secrets.randbelow(2**31) if opts.seed is None else opts.seed
    images = out / STATIC_DIR / IMAGES_DIR
    store = assets if assets is not None else AssetStore.from_env()
    stimuli = copy_stimuli(
        results, chosen.outputs, chosen.labels, chosen.pairs, chosen.protocol, store, opts.question, images
    )
    items, vig_items = design_items(stimuli, chosen.labels, chosen.pairs, opts.fmt, opts.question, random.Random(seed))
    n_regular = len(items) - vig_items
    tpp = min(opts.trials_per_participant or min(n_regular, 20), n_regular)
    config = StudyConfig(
        study_id=new_study_id(),
        name=out.name,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        question=opts.question,
        prompt=own_texts.get("question") or QUESTIONS[opts.question],
        format=opts.fmt,
        trials_per_participant=tpp,
        vigilance=(2 if vig_items else 0) if opts.vigilance is None else min(opts.vigilance, vig_items),
        repeats=opts.repeats,
        show_style=opts.question != "photoreal" or opts.fmt == "nway",
        show_content=opts.fmt == "nway",
        seed=seed,
        admin_token=secrets.token_urlsafe(24),
        code_secret=new_secret(),
        results=str(results.resolve()),
        protocol=chosen.protocol_name,
        run_ids=chosen.run_ids,
        resolution=chosen.resolution,
        methods=chosen.labels,
        pairs=chosen.pairs,
        candidates=stimuli.candidates,
        references=stimuli.references,
        items=items,
        texts=own_texts,
        allow_tie=opts.allow_tie,
        min_response_ms=opts.min_response_ms,
        seconds_per_screen=SECONDS_PER_SCREEN[opts.fmt],
        completion_code=opts.completion_code,
        screened_code=opts.screened_code,
        screen_out_after=opts.screen_out_after,
        max_participants=opts.max_participants,
    )
    n_static = opts.static_participants or max(1, min(200, math.ceil(2 * n_regular / max(tpp, 1))))
    write(out, config, n_static, opts.submit_url)
    return BuildResult(
        folder=out,
        items=n_regular,
        vigilance_items=vig_items,
        candidates=len(stimuli.candidates),
        static_sequences=n_static,
        admin_token=config.admin_token,
        notes=chosen.notes,
        study_id=config.study_id,
        protocol=config.protocol,
        run_ids=list(config.run_ids),
    )


# -- validate ---------------------------------------------------------------------------------------------------
def validate(opts: BuildOptions, out: Path) -> dict[str, str]:
    """One-line errors for every option that cannot work, before anything is read or written; returns the
    researcher's texts (``--texts``) prepared for the pages ({} when none)."""
    if opts.question not in QUESTIONS:
        raise EvalkitError(f"unknown question '{opts.question}': use one of {', '.join(QUESTIONS)}")
    if opts.fmt not in FORMATS:
        raise EvalkitError(f"unknown format '{opts.fmt}': use ab or nway")
    for option, value in (("--completion-code", opts.completion_code), ("--screened-code", opts.screened_code)):
        if value is not None and not CODE.fullmatch(value):
            raise EvalkitError(
                f"{option} '{value}' must be 1-64 letters, digits, '-' or '_' (Prolific's code as shown "
                f"in its study settings)"
            )
    if opts.screened_code and opts.screen_out_after is None:
        raise EvalkitError(
            "--screened-code needs --screen-out N (how many failed vigilance trials screen a participant out)"
        )
    if opts.screen_out_after is not None and opts.screen_out_after < 0:
        raise EvalkitError("--screen-out must not be negative")
    if opts.max_participants is not None and opts.max_participants < 1:
        raise EvalkitError("--max-participants must be at least 1")
    if opts.submit_url is not None and not URL.fullmatch(opts.submit_url):
        raise EvalkitError(
            f"--submit-url '{opts.submit_url}' must be an http(s) URL, e.g. https://study.example.org/static-submit"
        )
    if out.exists() and any(out.iterdir()):
        raise EvalkitError(f"study folder {out} already exists and is not empty: choose a new --out or delete it")
    if not 0 <= opts.min_response_ms <= 60_000:
        raise EvalkitError("--min-response-ms must lie in 0..60000 (milliseconds; 0 turns the speed check off)")
    return study_texts.prepare(study_texts.load_texts(opts.texts)) if opts.texts is not None else {}


# -- select -----------------------------------------------------------------------------------------------------
def select(results: Path, run: str | list[str] | None, protocol: str | None, opts: BuildOptions) -> Selection:
    """The runs (:func:`evalkit.store.selection.select_runs`; ``latest`` is the newest run id), the chosen methods'
    outputs at one resolution for the pairs every method finished, and the protocol as the newest run stored it.
    Only reads the results database."""
    from evalkit.store import ResultsStore
    from evalkit.store.selection import select_runs

    with ResultsStore.open_reader(results, "evalkit run") as store:
        runs = select_runs(store, _run_ids(store, run), protocol)
        rows = _outputs(store, runs.run_ids)
        where = f"run {runs.run_ids[0]}" if len(runs.run_ids) == 1 else f"runs {', '.join(runs.run_ids)}"
        labels = list(dict.fromkeys(_select_method(rows, m, where) for m in opts.methods))
        _check_labels(labels, opts.fmt)
        res = _resolution(rows, labels, opts.resolution, where)
        outputs: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:  # lowest seed wins (then the newest run): one image per (method, pair)
            if r["label"] in labels and r["resolution"] == res:
                outputs.setdefault((r["label"], r["pair_id"]), r)
        pairs = _pairs(rows, labels, outputs, opts.pairs, where)
        spec, note = store.stored_protocol(runs.newest["run_id"])  # as the run recorded it, not by name
    return Selection(runs.protocol, runs.run_ids, labels, res, pairs, outputs, spec, [note] if note else [])


def _run_ids(store: ResultsStore, run: str | list[str] | None) -> list[str] | None:
    """``--run`` values for :func:`select_runs`, with ``latest`` as the newest run id (``None``: the default)."""
    names = [run] if isinstance(run, str) else list(run or [])
    latest = store.latest_run()
    ids = [latest if name == LATEST and latest is not None else name for name in names]
    return ids or None


def _outputs(store: ResultsStore, run_ids: list[str]) -> list[dict[str, Any]]:
    """The runs' successful jobs with an output image, each once, ordered by label, pair, resolution and seed (the
    newest run's first among equals)."""
    seen: dict[str, dict[str, Any]] = {}
    for run_id in reversed(run_ids):
        for row in store.run_outputs(run_id):
            seen.setdefault(row["job_key"], row)
    return sorted(seen.values(), key=lambda r: (r["label"], r["pair_id"], r["resolution"], r["seed"]))


def _select_method(rows: list[dict[str, Any]], name: str, where: str) -> str:
    labels = sorted({r["label"] for r in rows})
    if name in labels:
        return name
    by_method = sorted({r["label"] for r in rows if r["method"] == name})
    if len(by_method) == 1:
        return by_method[0]
    if by_method:
        raise EvalkitError(f"method '{name}' is ambiguous in {where} ({', '.join(by_method)}): name one label")
    raise EvalkitError(f"method '{name}' has no finished outputs in {where}: choose from {', '.join(labels) or 'none'}")


def _check_labels(labels: list[str], fmt: str) -> None:
    if len(labels) < 2:
        raise EvalkitError("a study needs at least two different methods: pass --methods a,b[,c...]")
    if fmt == "nway" and len(labels) > MAX_OPTIONS:
        raise EvalkitError(
            f"--format nway shows at most {MAX_OPTIONS} options (A-E) but {len(labels)} methods were given:"
            " pass at most five or use --format ab"
        )


def _resolution(rows: list[dict[str, Any]], labels: list[str], wanted: str | None, where: str) -> str:
    resolutions = sorted({r["resolution"] for r in rows if r["label"] in labels})
    res = wanted or (resolutions[0] if resolutions else None)
    if res is None or res not in resolutions:
        raise EvalkitError(
            f"resolution '{wanted}' not in {where} for these methods: choose from {', '.join(resolutions)}"
        )
    return res


def _pairs(
    rows: list[dict[str, Any]],
    labels: list[str],
    outputs: dict[tuple[str, str], dict[str, Any]],
    wanted: list[str] | None,
    where: str,
) -> list[str]:
    complete = [p for p in dict.fromkeys(r["pair_id"] for r in rows) if all((lab, p) in outputs for lab in labels)]
    if wanted:
        missing = [p for p in wanted if p not in complete]
        if missing:
            raise EvalkitError(
                f"pairs {', '.join(missing)} lack an output from every chosen method in {where}:"
                f" choose from {', '.join(complete) or 'none'}"
            )
        complete = list(dict.fromkeys(wanted))
    if not complete:
        raise EvalkitError(f"no content/style pair has outputs from all of {', '.join(labels)} in {where}")
    return complete


# -- write ------------------------------------------------------------------------------------------------------
def write(out: Path, config: StudyConfig, n_static: int, submit_url: str | None) -> None:
    """``study.json`` (0600), the static export's manifest and its page; the images are already in place."""
    manifest, config.static_tokens = static_manifest(config, n_static, submit_url)
    config.submit_url = submit_url
    write_study(out, config)
    static = out / STATIC_DIR
    (static / "manifest.json").write_text(json.dumps(manifest, indent=1))
    texts = config.texts
    (static / "index.html").write_text(
        render(
            "static_index.html",
            prompt=config.prompt,
            fmt=config.format,
            page_title=texts.get("title") or "Image comparison study",
            submit_origin=_origin(submit_url),
            contact=study_texts.html(texts, "contact"),
            information=study_texts.html(texts, "information"),
            consent_text=study_texts.html(texts, "consent"),
        )
    )


def _origin(url: str | None) -> str | None:
    """``https://host:port`` of an http(s) URL (the only place a static export may send answers)."""
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def static_manifest(
    config: StudyConfig, n: int, submit_url: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Pre-generated sequences for static hosting: option tokens and image names only; the token->candidate key
    stays in study.json so that exported responses can be scored later. No completion code is in it: a static page
    shows one only when the server at ``submit_url`` accepted the answers (see docs/studies.md)."""
    key: dict[str, str] = {}
    sequences = []
    by_id: dict[str, Item] = {it.id: it for it in config.items}
    for p in range(n):
        seq = participant_sequence(
            config.items, p, config.seed, config.trials_per_participant, config.vigilance, config.repeats
        )
        trials = []
        for t in seq:
            options = []
            for cid in t.order:
                token = secrets.token_urlsafe(9)
                key[token] = cid
                options.append({"token": token, "image": f"images/{config.candidates[cid].image}.png"})
            refs = config.references[by_id[t.item].pair_id]
            trials.append(
                {
                    "options": options,
                    "style": f"images/{refs.style}.png" if config.show_style else None,
                    "content": f"images/{refs.content}.png" if config.show_content else None,
                }
            )
        sequences.append(trials)
    manifest = {
        "study": config.name,
        "prompt": config.prompt,
        "format": config.format,
        "submit_url": submit_url,
        "sequences": sequences,
    }
    return manifest, key
