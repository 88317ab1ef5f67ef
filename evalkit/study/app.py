"""The study server: a Starlette ASGI app (run by ``evalkit study serve`` on uvicorn).

Participants are identified by a random, HttpOnly, SameSite cookie, never by anything they type; everything they
send is validated (:mod:`evalkit.study.http`) before any state changes, and the pages they get carry only opaque
option tokens and random image names. The answer key (study.json), the database and every other file stay out of
reach: the only file route serves names matching ``[0-9a-f]{32}.png`` from ``static/images`` and nothing else.
Each route is one small handler method of :class:`StudyServer`; the admin routes live in :mod:`evalkit.study.admin`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from evalkit.study import LETTERS
from evalkit.study import db as studydb
from evalkit.study import texts as study_texts
from evalkit.study.config import IMAGES_DIR, STATIC_DIR, load_study
from evalkit.study.design import Item, participant_sequence
from evalkit.study.http import (
    BadRequest,
    ascii_int,
    prolific_params,
    read_form,
    read_json,
    security_headers,
    token,
)
from evalkit.study.limits import DEFAULT_NEW_PER_ADDRESS, DEFAULT_WINDOW_S, RateLimiter, client_address
from evalkit.study.render import render

COOKIE = "evalkit_study"
IMAGE_NAME = re.compile(r"[0-9a-f]{32}\.png", re.ASCII)
PROLIFIC_RETURN = "https://app.prolific.com/submissions/complete?cc={code}"
STATIC_BODY_LIMIT = 65536


@dataclass
class ServeOptions:
    """How a study is served (``evalkit study serve`` options); the study's own settings are in study.json."""

    secure_cookies: bool = False  # set Secure on every cookie (behind TLS; see docs/studies.md)
    max_participants: int | None = None  # None: the cap stored with the study (none if it has none)
    new_per_address: int = DEFAULT_NEW_PER_ADDRESS  # new sessions per client address per window; 0 = unlimited
    window_s: float = DEFAULT_WINDOW_S
    trust_proxy: bool = False  # take the client address from X-Forwarded-For (only behind your own proxy)
    static_origins: tuple[str, ...] = ()  # origins whose static export may post answers to /static-submit


class StudyServer:
    """State shared by the handlers of one study folder: configuration, items, per-thread connections, limits."""

    def __init__(self, folder: Path, options: ServeOptions) -> None:
        self.folder = Path(folder)
        self.options = options
        self.config = load_study(self.folder)
        self.items: list[Item] = list(self.config.items)
        self.items_by_id = {it.id: it for it in self.items}
        self.images = (self.folder / STATIC_DIR / IMAGES_DIR).resolve()
        self.codes = studydb.CodeIssuer.from_config(self.config)
        self.limiter = RateLimiter(options.new_per_address, options.window_s)
        cap = options.max_participants if options.max_participants is not None else self.config.max_participants
        self.max_participants: int | None = int(cap) if cap else None
        studydb.init(self.folder)
        self._local = threading.local()

    # -- plumbing ---------------------------------------------------------------------------------------------
    def conn(self) -> studydb.Connection:
        """One connection per worker thread: sqlite3 connections must not be shared across concurrent threads."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = studydb.connect(self.folder)
        return c

    def page(self, name: str, status: int = 200, headers: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(12)
        texts = self.config.texts
        page_texts = {
            "page_title": texts.get("title") or "Image comparison study",
            "contact": study_texts.html(texts, "contact"),
        }
        html = render(name, study=self.config.name, nonce=nonce, **page_texts, **ctx)
        return HTMLResponse(html, status_code=status, headers={**security_headers(nonce), **(headers or {})})

    def notice(self, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return self.page("notice.html", status=status, headers=headers, title=title, message=message)

    @staticmethod
    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    def error(self, request: Request, status: int, message: str) -> Response:
        if self.wants_json(request):
            return JSONResponse({"error": message}, status_code=status, headers=security_headers())
        return PlainTextResponse(message, status_code=status, headers=security_headers())

    def current_pid(self, request: Request) -> str | None:
        pid = request.cookies.get(COOKIE)
        if not pid or len(pid) > 64 or not re.fullmatch(r"[A-Za-z0-9_-]+", pid, re.ASCII):
            return None
        return pid if studydb.participant(self.conn(), pid) is not None else None

    def set_cookie(
        self, response: Response, name: str, value: str, path: str = "/", samesite: Literal["lax", "strict"] = "lax"
    ) -> None:
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite=samesite,
            max_age=7 * 86400,
            path=path,
            secure=self.options.secure_cookies,
        )

    def admit(self, request: Request) -> Response | None:
        """``None`` when a new session may start now; else the polite page that says why not."""
        if self.max_participants is not None:
            if studydb.participant_count(self.conn()) >= self.max_participants:
                return self.study_full()
        address = client_address(request, self.options.trust_proxy)
        if not self.limiter.allow(address):
            wait = self.limiter.retry_after(address)
            return self.notice(
                429,
                "Please try again later",
                f"Too many new sessions were started from your network just now. Please try again in "
                f"about {max(1, wait // 60)} minute(s).",
                headers={"Retry-After": str(wait)},
            )
        return None

    def study_full(self) -> Response:
        return self.notice(
            403,
            "This study is full",
            "Thank you for your interest: all places in this study have been taken. "
            "Please return it on Prolific (or close this page) without starting.",
        )

    # -- participant pages --------------------------------------------------------------------------------------
    def index(self, request: Request) -> Response:
        params = prolific_params(request.query_params)
        if self.current_pid(request):
            return RedirectResponse("/trial", status_code=303)
        config = self.config
        total = config.total_trials
        texts = config.texts
        seconds = total * config.seconds_per_screen
        return self.page(
            "consent.html",
            prompt=config.prompt,
            params=params,
            total=total,
            minutes=max(1, round(seconds / 60)),
            fmt=config.format,
            n_options=2 if config.format == "ab" else len(config.methods),
            allow_tie=config.allow_tie,
            information=study_texts.html(texts, "information"),
            instructions=study_texts.html(texts, "instructions"),
            consent_text=study_texts.html(texts, "consent"),
        )

    async def start(self, request: Request) -> Response:
        form = await read_form(request)
        params = prolific_params(form)
        if form.get("consent") != "yes":
            raise BadRequest(400, "consent is required to take part")
        pid = self.current_pid(request)
        if pid is None:
            refused = self.admit(request)
            if refused is not None:
                return refused
            try:
                pid = studydb.create_participant(self.conn(), self.config, self.items, params, self.max_participants)
            except studydb.StudyFull:
                return self.study_full()
        response = RedirectResponse("/trial", status_code=303)
        self.set_cookie(response, COOKIE, pid)
        return response

    def trial_page(self, request: Request) -> Response:
        pid = self.current_pid(request)
        if pid is None:
            return RedirectResponse("/", status_code=303)
        state = studydb.progress(self.conn(), pid)
        if state.done:
            return RedirectResponse("/done", status_code=303)
        row = studydb.trial(self.conn(), pid, state.next_idx)
        assert row is not None  # progress() only points at stored trials
        config = self.config
        options = [
            {"letter": LETTERS[i], "token": tok, "src": f"/img/{config.candidates[cid].image}.png"}
            for i, (tok, cid) in enumerate(json.loads(row["options"]))
        ]
        refs = config.references[self.items_by_id[row["item"]].pair_id]
        return self.page(
            "trial.html",
            prompt=config.prompt,
            fmt=config.format,
            idx=state.next_idx,
            total=state.total,
            options=options,
            style=f"/img/{refs.style}.png" if config.show_style else None,
            content=f"/img/{refs.content}.png" if config.show_content else None,
            tie_token=studydb.TIE_TOKEN if config.allow_tie and row["kind"] == "regular" else None,
        )

    async def vote(self, request: Request) -> Response:
        pid = self.current_pid(request)
        if pid is None:
            return self.error(request, 403, "no participant session: start the study first")
        form = await read_form(request)
        idx = ascii_int(form.get("trial"), "trial")
        choice = token(form.get("choice"), "choice")
        rt = ascii_int(form.get("rt"), "rt", max_digits=9, required=False)
        assert idx is not None
        outcome = studydb.record_vote(self.conn(), pid, idx, choice, rt, self.codes, self.config.allow_tie)
        state = studydb.progress(self.conn(), pid)
        if self.wants_json(request):
            return JSONResponse(
                {"status": outcome, "trial": idx, "next": state.next_idx, "total": state.total, "done": state.done},
                headers=security_headers(),
            )
        return RedirectResponse("/done" if state.done else "/trial", status_code=303)

    def return_url(self, kind: str | None) -> str | None:
        """Prolific's return link for a finished participant: the study's own completion code for that outcome."""
        code = self.config.screened_code if kind == "screened" else self.config.completion_code
        return PROLIFIC_RETURN.format(code=code) if code else None

    def done(self, request: Request) -> Response:
        pid = self.current_pid(request)
        if pid is None:
            return RedirectResponse("/", status_code=303)
        if not studydb.progress(self.conn(), pid).done:
            return RedirectResponse("/trial", status_code=303)
        who = studydb.participant(self.conn(), pid)
        assert who is not None
        code, kind = who["completion_code"], who["code_kind"]
        if code is None:  # finished before this server issued codes (an older study database)
            code, kind = studydb.issue_code(self.conn(), pid, self.codes)
        prolific = self.return_url(kind) if who["prolific_pid"] else None
        thanks = study_texts.html(self.config.texts, "thank_you")
        return self.page("done.html", code=code, screened=kind == "screened", prolific_url=prolific, thank_you=thanks)

    def image(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not IMAGE_NAME.fullmatch(name):
            return PlainTextResponse("not found", status_code=404)
        path = self.images / name
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(
            path,
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    # -- answers posted by the static export --------------------------------------------------------------------
    def cors(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin and (origin in self.options.static_origins or "*" in self.options.static_origins):
            return {
                "Access-Control-Allow-Origin": origin,
                "Vary": "Origin",
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type",
            }
        return {}

    def static_preflight(self, request: Request) -> Response:
        return Response(status_code=204 if self.cors(request) else 403, headers=self.cors(request))

    async def static_submit(self, request: Request) -> Response:
        """A whole sequence answered in the static export: validated against the manifest, stored as one
        participant, answered with that participant's completion code."""
        headers = self.cors(request)
        if not self.config.submit_url:
            return JSONResponse(
                {"error": "this study was built without --submit-url: its static export cannot submit answers"},
                status_code=404,
                headers=headers,
            )
        if request.headers.get("origin") and not headers and request.headers.get("origin") != _own_origin(request):
            return JSONResponse(
                {"error": "this origin may not submit answers: start the server with --static-origin ORIGIN"},
                status_code=403,
            )
        try:
            data = await read_json(request, STATIC_BODY_LIMIT)
            submission, prolific, trials, answers = self._parse_static(data)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)
        refused = None
        if not studydb.submission_exists(self.conn(), submission):
            refused = self.admit(request)
        if refused is not None:
            return JSONResponse(
                {"error": "study full or too many submissions: try later"},
                status_code=refused.status_code,
                headers=headers,
            )
        try:
            code, kind = studydb.record_static(
                self.conn(), submission, prolific, trials, answers, self.codes, self.max_participants
            )
        except studydb.StudyFull:
            return JSONResponse({"error": "the study is full"}, status_code=403, headers=headers)
        return JSONResponse(
            {
                "status": "stored",
                "completion_code": code,
                "code_kind": kind,
                "prolific_url": self.return_url(kind) if prolific.get("prolific_pid") else None,
            },
            headers=headers,
        )

    def _parse_static(
        self, data: Any
    ) -> tuple[str, dict[str, str | None], list[dict[str, Any]], list[tuple[str, int | None]]]:
        if not isinstance(data, dict):
            raise BadRequest(400, "body must be a JSON object")
        submission = token(data.get("submission"), "submission")
        prolific = prolific_params({k: data.get(k) for k in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")})
        index = ascii_int(
            str(data.get("sequence"))
            if isinstance(data.get("sequence"), int) and not isinstance(data.get("sequence"), bool)
            else data.get("sequence"),
            "sequence",
        )
        trials = self.static_trials(index)  # type: ignore[arg-type]
        answers = data.get("answers")
        if not isinstance(answers, list) or len(answers) != len(trials):
            raise BadRequest(400, f"answers must be a list of {len(trials)} answers, one per trial")
        parsed: list[tuple[str, int | None]] = []
        for i, (answer, trial) in enumerate(zip(answers, trials, strict=True)):
            if not isinstance(answer, dict):
                raise BadRequest(400, f"answer {i} must be an object")
            values = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in answer.items()}
            if ascii_int(values.get("trial"), f"answers[{i}].trial") != i:
                raise BadRequest(400, f"answers[{i}].trial must be {i}")
            choice = token(values.get("choice"), f"answers[{i}].choice")
            if choice not in dict(trial["options"]):
                raise BadRequest(400, f"answers[{i}].choice is not one of that trial's options")
            parsed.append((choice, ascii_int(values.get("rt"), f"answers[{i}].rt", 9, required=False)))
        return submission, prolific, trials, parsed

    def static_trials(self, index: int) -> list[dict[str, Any]]:
        """Static sequence ``index`` as stored trials: the design's items and kinds, the manifest's tokens."""
        manifest = self.static_manifest()
        if index >= len(manifest["sequences"]):
            raise BadRequest(400, f"sequence must be below {len(manifest['sequences'])}")
        key = self.config.static_tokens
        seq = participant_sequence(
            self.items,
            index,
            self.config.seed,
            self.config.trials_per_participant,
            self.config.vigilance,
            self.config.repeats,
        )
        out = []
        for design, shown in zip(seq, manifest["sequences"][index], strict=True):
            options = [[o["token"], key[o["token"]]] for o in shown["options"]]
            if [cid for _, cid in options] != design.order:
                raise BadRequest(409, "the manifest does not match this study's design: rebuild the static export")
            out.append({"item": design.item, "kind": design.kind, "repeat_of": design.repeat_of, "options": options})
        return out

    def static_manifest(self) -> dict[str, Any]:
        cached = getattr(self, "_manifest", None)
        if cached is None:
            cached = self._manifest = json.loads((self.folder / STATIC_DIR / "manifest.json").read_text())
        return cached

    # -- the app --------------------------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/start", self.start, methods=["POST"]),
            Route("/trial", self.trial_page, methods=["GET"]),
            Route("/vote", self.vote, methods=["POST"]),
            Route("/done", self.done, methods=["GET"]),
            Route("/img/{name}", self.image, methods=["GET"]),
            Route("/healthz", self.health, methods=["GET"]),
            Route("/static-submit", self.static_submit, methods=["POST"]),
            Route("/static-submit", self.static_preflight, methods=["OPTIONS"]),
        ]


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def create_app(folder: Path, options: ServeOptions | None = None) -> Starlette:
    """Build the app for one study folder (its database is created, or migrated, if needed)."""
    from evalkit.study.admin import AdminRoutes

    server = StudyServer(Path(folder), options or ServeOptions())

    async def bad_request(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", 400)
        return server.error(request, status, str(exc))

    return Starlette(
        routes=server.routes() + AdminRoutes(server).routes(),
        exception_handlers={BadRequest: bad_request, studydb.VoteError: bad_request},
    )
