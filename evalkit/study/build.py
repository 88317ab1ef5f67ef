"""``evalkit study build``: turn a finished run into a self-contained, blinded study folder.

Layout of ``studies/NAME``::

    study.json          private: configuration, answer key (candidate -> method/job), items, admin token, seed
    static/             public: what a participant's browser may see
      images/<32 hex>.png   every stimulus, re-encoded (metadata stripped) under a random name
      manifest.json     pre-generated trial sequences (opaque tokens only, no answer key, no catch flags)
      index.html        a dependency-free page that runs the study from the manifest (for hosting elsewhere)
    study.sqlite        created by ``serve``: participants, their sequences and votes

Method names never reach the public side: images are copied under random names and options are referenced by
per-trial random tokens, so neither a file name nor a URL nor the page source tells which method made an image.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError
from evalkit.study import FORMATS, MAX_OPTIONS, QUESTIONS
from evalkit.study import texts as study_texts
from evalkit.study.codes import new_secret, write_private
from evalkit.study.design import Item, participant_sequence
from evalkit.study.render import render

STUDY_FILE = "study.json"
STATIC_DIR = "static"
IMAGES_DIR = "images"
REFERENCE_MAX_SIDE = 512
CATCH_MIN_DIFFERENCE = 10.0  # grey levels (0-255), mean absolute difference from the photo


@dataclass
class BuildResult:
    folder: Path
    items: int
    vigilance_items: int
    candidates: int
    static_sequences: int
    admin_token: str
    notes: list[str] = field(default_factory=list)  # e.g. the protocol file changed since the run


def _fail(msg: str) -> EvalkitError:
    return EvalkitError(msg)


def load_run_jobs(results: Path, run: str) -> tuple[str, list[dict[str, Any]]]:
    """The run id (``latest`` resolved) and its successful jobs with an output image."""
    from evalkit.store import ResultsStore

    with ResultsStore.open_reader(results, "evalkit run") as store:
        run_id = store.resolve_run(run)
        return run_id, store.run_outputs(run_id)


def _select_method(rows: list[dict[str, Any]], name: str) -> str:
    labels = sorted({r["label"] for r in rows})
    if name in labels:
        return name
    by_method = sorted({r["label"] for r in rows if r["method"] == name})
    if len(by_method) == 1:
        return by_method[0]
    if by_method:
        raise _fail(f"method '{name}' is ambiguous in this run ({', '.join(by_method)}): name one label")
    raise _fail(f"method '{name}' has no finished outputs in this run: choose from {', '.join(labels) or 'none'}")


def _save_png(
    src: Path, dst: Path, size: tuple[int, int] | None = None, max_side: int | None = None
) -> tuple[int, int]:
    """Re-encode as plain RGB PNG: strips text chunks/EXIF that could name the method that made the image."""
    try:
        with Image.open(src) as opened:
            im = opened.convert("RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            elif max_side is not None and max(im.size) > max_side:
                scale = max_side / max(im.size)
                im = im.resize(
                    (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS
                )
            im.save(dst, "PNG")
            return im.size
    except OSError as exc:
        raise _fail(f"cannot read image {src} ({exc}): rerun the job or remove it from the run") from exc


def _difference(folder: Path, a: str, b: str) -> float:
    """Mean absolute difference in grey levels between two stimuli (inf if their sizes differ)."""
    import numpy as np

    with Image.open(folder / f"{a}.png") as ia, Image.open(folder / f"{b}.png") as ib:
        if ia.size != ib.size:
            return float("inf")
        return float(np.abs(np.asarray(ia, dtype=np.float32) - np.asarray(ib, dtype=np.float32)).mean())


DEFAULT_MIN_RESPONSE_MS = 500  # a median answer faster than this is not looking at the images (configurable)
SECONDS_PER_SCREEN = {"ab": 6, "nway": 10}  # an estimate for the duration the consent page states


def build_study(results: Path, run: str, question: str, methods: list[str], out: Path, **options: Any) -> BuildResult:
    """Build the study folder (see the module docstring); a failed build leaves no half-made folder behind."""
    existed = out.exists()
    try:
        return _build(results, run, question, methods, out, **options)
    except BaseException:
        if not existed and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build(
    results: Path,
    run: str,
    question: str,
    methods: list[str],
    out: Path,
    pairs: list[str] | None = None,
    fmt: str = "ab",
    trials_per_participant: int | None = None,
    vigilance: int | None = None,
    repeats: int = 2,
    seed: int | None = None,
    resolution: str | None = None,
    static_participants: int | None = None,
    completion_code: str | None = None,
    screened_code: str | None = None,
    screen_out_after: int | None = None,
    max_participants: int | None = None,
    submit_url: str | None = None,
    assets: AssetStore | None = None,
    texts: Path | None = None,
    allow_tie: bool = False,
    min_response_ms: int = DEFAULT_MIN_RESPONSE_MS,
) -> BuildResult:
    if question not in QUESTIONS:
        raise _fail(f"unknown question '{question}': use one of {', '.join(QUESTIONS)}")
    if fmt not in FORMATS:
        raise _fail(f"unknown format '{fmt}': use ab or nway")
    for option, value in (("--completion-code", completion_code), ("--screened-code", screened_code)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value, re.ASCII):
            raise _fail(
                f"{option} '{value}' must be 1-64 letters, digits, '-' or '_' (Prolific's code as shown "
                f"in its study settings)"
            )
    if screened_code and screen_out_after is None:
        raise _fail("--screened-code needs --screen-out N (how many failed vigilance trials screen a participant out)")
    if screen_out_after is not None and screen_out_after < 0:
        raise _fail("--screen-out must not be negative")
    if max_participants is not None and max_participants < 1:
        raise _fail("--max-participants must be at least 1")
    if submit_url is not None and not re.fullmatch(r"https?://[^\s\"'<>]+", submit_url):
        raise _fail(f"--submit-url '{submit_url}' must be an http(s) URL, e.g. https://study.example.org/static-submit")
    if out.exists() and any(out.iterdir()):
        raise _fail(f"study folder {out} already exists and is not empty: choose a new --out or delete it")
    if not 0 <= min_response_ms <= 60_000:
        raise _fail("--min-response-ms must lie in 0..60000 (milliseconds; 0 turns the speed check off)")
    own_texts = study_texts.prepare(study_texts.load_texts(texts)) if texts is not None else {}
    prompt = own_texts.get("question") or QUESTIONS[question]
    run_id, rows = load_run_jobs(results, run)
    labels = list(dict.fromkeys(_select_method(rows, m) for m in methods))
    if len(labels) < 2:
        raise _fail("a study needs at least two different methods: pass --methods a,b[,c...]")
    if fmt == "nway" and len(labels) > MAX_OPTIONS:
        raise _fail(
            f"--format nway shows at most {MAX_OPTIONS} options (A-E) but {len(labels)} methods were given:"
            " pass at most five or use --format ab"
        )
    resolutions = sorted({r["resolution"] for r in rows if r["label"] in labels})
    res = resolution or (resolutions[0] if resolutions else None)
    if res not in resolutions:
        raise _fail(
            f"resolution '{resolution}' not in this run for these methods: choose from {', '.join(resolutions)}"
        )
    outputs: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:  # lowest seed wins: one image per (method, pair)
        if r["label"] in labels and r["resolution"] == res:
            outputs.setdefault((r["label"], r["pair_id"]), r)
    complete = [p for p in dict.fromkeys(r["pair_id"] for r in rows) if all((lab, p) in outputs for lab in labels)]
    if pairs:
        missing = [p for p in pairs if p not in complete]
        if missing:
            raise _fail(
                f"pairs {', '.join(missing)} lack an output from every chosen method in run {run_id}:"
                f" choose from {', '.join(complete) or 'none'}"
            )
        complete = list(dict.fromkeys(pairs))
    if not complete:
        raise _fail(f"no content/style pair has outputs from all of {', '.join(labels)} in run {run_id}")
    protocol_name = outputs[(labels[0], complete[0])]["protocol"]
    notes: list[str] = []

    from evalkit.store import ResultsStore

    with ResultsStore.open_reader(results) as results_store:  # the protocol as the run recorded it, not by name
        protocol, protocol_note = results_store.stored_protocol(run_id)
    if protocol_note:
        notes.append(protocol_note)
    store = assets if assets is not None else AssetStore.from_env()
    seed = secrets.randbelow(2**31) if seed is None else seed
    rng = random.Random(seed)

    static = out / STATIC_DIR
    images = static / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()

    def new_name() -> str:
        while True:
            name = secrets.token_hex(16)
            if name not in used:
                used.add(name)
                return name

    candidates: dict[str, dict[str, Any]] = {}
    references: dict[str, dict[str, str]] = {}
    items: list[Item] = []
    out_size: dict[str, tuple[int, int]] = {}
    cand_ids = (f"c{i:04d}" for i in itertools.count())
    by_pair: dict[str, dict[str, str]] = {}
    for pair_id in complete:
        by_pair[pair_id] = {}
        for lab in labels:
            job = outputs[(lab, pair_id)]
            name = new_name()
            out_size[pair_id] = _save_png(results / job["output_path"], images / f"{name}.png")
            cid = next(cand_ids)
            candidates[cid] = {
                "label": lab,
                "job_key": job["job_key"],
                "pair_id": pair_id,
                "kind": "output",
                "image": name,
            }
            by_pair[pair_id][lab] = cid
        pair = protocol.pair(pair_id)
        refs = {}
        for role, image_id in (("content", pair.content), ("style", pair.style)):
            path = store.fetch(protocol.images[image_id], progress=False)
            name = new_name()
            _save_png(path, images / f"{name}.png", max_side=REFERENCE_MAX_SIDE)
            refs[role] = name
        references[pair_id] = refs
        if question in ("style", "photoreal"):  # vigilance: the unstylized photo among real stylizations
            name = new_name()
            _save_png(
                store.fetch(protocol.images[pair.content], progress=False),
                images / f"{name}.png",
                size=out_size[pair_id],
            )
            cid = next(cand_ids)
            candidates[cid] = {"label": None, "job_key": None, "pair_id": pair_id, "kind": "content", "image": name}
            by_pair[pair_id]["__content__"] = cid

    n_items = 0

    def item_id() -> str:
        nonlocal n_items
        n_items += 1
        return f"i{n_items:04d}"

    for pair_id in complete:
        cids = [by_pair[pair_id][lab] for lab in labels]
        groups = [list(c) for c in itertools.combinations(cids, 2)] if fmt == "ab" else [cids]
        for group in groups:
            rng.shuffle(group)
            items.append(Item(id=item_id(), pair_id=pair_id, cands=tuple(group)))
    vig_items = 0
    for k, pair_id in enumerate(complete):
        if "__content__" not in by_pair[pair_id]:
            break
        content = by_pair[pair_id]["__content__"]
        # only a clearly stylized output can be the catch's foil: an identity baseline or a barely-optimised one
        # looks like the photo, and a catch whose answer is ambiguous would exclude honest participants
        outs = [
            by_pair[pair_id][lab]
            for lab in labels
            if _difference(images, candidates[content]["image"], candidates[by_pair[pair_id][lab]]["image"])
            >= CATCH_MIN_DIFFERENCE
        ]
        if not outs:
            continue
        shown = [outs[k % len(outs)]] if fmt == "ab" else outs[: MAX_OPTIONS - 1]
        group = [content, *shown]
        rng.shuffle(group)
        correct = tuple(shown) if question == "style" else (content,)
        items.append(Item(id=item_id(), pair_id=pair_id, cands=tuple(group), kind="vigilance", correct=correct))
        vig_items += 1

    n_regular = len(items) - vig_items
    tpp = min(trials_per_participant or min(n_regular, 20), n_regular)
    vig = (2 if vig_items else 0) if vigilance is None else min(vigilance, vig_items)
    n_static = static_participants or max(1, min(200, math.ceil(2 * n_regular / max(tpp, 1))))
    admin_token = secrets.token_urlsafe(24)

    config = {
        "name": out.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "question": question,
        "prompt": prompt,
        "texts": own_texts,  # the researcher's texts (--texts), Markdown rendered safely; {} = built-in wording
        "allow_tie": allow_tie,  # a "no preference" answer (counts as half a win each)
        "min_response_ms": min_response_ms,  # median response time below this flags a participant as too fast
        "seconds_per_screen": SECONDS_PER_SCREEN[fmt],
        "format": fmt,
        "trials_per_participant": tpp,
        "vigilance": vig,
        "repeats": repeats,
        "show_style": question != "photoreal" or fmt == "nway",
        "show_content": fmt == "nway",
        # ---- private from here on: never served ----
        "seed": seed,
        "admin_token": admin_token,
        "code_secret": new_secret(),  # key of the per-participant completion codes (evalkit.study.codes)
        "completion_code": completion_code,  # Prolific's own study code, for the return link (may be None)
        "screened_code": screened_code,  # Prolific's code for screened-out participants (may be None)
        "screen_out_after": screen_out_after,  # vigilance failures tolerated before the screened-out code
        "max_participants": max_participants,
        "results": str(results.resolve()),
        "run_id": run_id,
        "protocol": protocol_name,
        "resolution": res,
        "methods": labels,
        "pairs": complete,
        "candidates": candidates,
        "references": references,
        "items": [it.to_dict() for it in items],
    }
    manifest, static_key = static_manifest(config, items, n_static, submit_url)
    config["static_tokens"] = static_key
    write_private(out / STUDY_FILE, json.dumps(config, indent=1))
    (static / "manifest.json").write_text(json.dumps(manifest, indent=1))
    title = own_texts.get("title") or "Image comparison study"
    contact = study_texts.html(own_texts, "contact")
    (static / "index.html").write_text(
        render(
            "static_index.html",
            prompt=prompt,
            fmt=fmt,
            page_title=title,
            contact=contact,
            information=study_texts.html(own_texts, "information"),
            consent_text=study_texts.html(own_texts, "consent"),
        )
    )
    return BuildResult(
        folder=out,
        items=n_regular,
        vigilance_items=vig_items,
        candidates=len(candidates),
        static_sequences=n_static,
        admin_token=admin_token,
        notes=notes,
    )


def static_manifest(
    config: dict[str, Any], items: list[Item], n: int, submit_url: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Pre-generated sequences for static hosting: option tokens and image names only; the token->candidate key
    stays in study.json so that exported responses can be scored later. No completion code is in it: a static page
    shows one only when the server at ``submit_url`` accepted the answers (see docs/studies.md)."""
    key: dict[str, str] = {}
    sequences = []
    for p in range(n):
        seq = participant_sequence(
            items, p, config["seed"], config["trials_per_participant"], config["vigilance"], config["repeats"]
        )
        trials = []
        by_id = {it.id: it for it in items}
        for t in seq:
            options = []
            for cid in t.order:
                token = secrets.token_urlsafe(9)
                key[token] = cid
                options.append({"token": token, "image": f"images/{config['candidates'][cid]['image']}.png"})
            refs = config["references"][by_id[t.item].pair_id]
            trials.append(
                {
                    "options": options,
                    "style": f"images/{refs['style']}.png" if config["show_style"] else None,
                    "content": f"images/{refs['content']}.png" if config["show_content"] else None,
                }
            )
        sequences.append(trials)
    manifest = {
        "study": config["name"],
        "prompt": config["prompt"],
        "format": config["format"],
        "submit_url": submit_url,
        "sequences": sequences,
    }
    return manifest, key


def load_study(folder: Path) -> dict[str, Any]:
    """Read a study folder's private configuration, with a one-line error if it is not a study."""
    path = folder / STUDY_FILE
    if not path.is_file():
        raise _fail(f"{folder} is not a study folder (no {STUDY_FILE}): build one with `evalkit study build`")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise _fail(f"{path} is not valid JSON ({exc}): rebuild the study") from exc
    if "code_secret" not in config:  # built before per-participant codes: give it a key, keep everything else
        config["code_secret"] = new_secret()
        write_private(path, json.dumps(config, indent=1))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # an older build left the answer key and admin token readable by everyone
    return config
