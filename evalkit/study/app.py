"""The study server: a Starlette ASGI app (run by ``evalkit study serve`` on uvicorn).

Participants are identified by a random, HttpOnly, SameSite cookie, never by anything they type; everything they
send is validated before any state changes, and the pages they get carry only opaque option tokens and random image
names. The answer key (study.json), the database and every other file stay out of reach: the only file route
serves names matching ``[0-9a-f]{32}.png`` from ``static/images`` and nothing else.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import re
import secrets
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from evalkit.study import LETTERS
from evalkit.study import db as studydb
from evalkit.study.build import IMAGES_DIR, STATIC_DIR, load_study
from evalkit.study.design import Item
from evalkit.study.render import render

COOKIE = "evalkit_study"
IMAGE_NAME = re.compile(r"[0-9a-f]{32}\.png")
PROLIFIC_VALUE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOKEN_VALUE = re.compile(r"[A-Za-z0-9_-]{1,64}")
PROLIFIC_PARAMS = {"PROLIFIC_PID": "prolific_pid", "STUDY_ID": "study_id", "SESSION_ID": "session_id"}
MAX_BODY = 4096


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(folder: Path) -> Starlette:
    """Build the app for one study folder (its database is created if missing)."""
    folder = Path(folder)
    config = load_study(folder)
    items = [Item.from_dict(d) for d in config["items"]]
    images = (folder / STATIC_DIR / IMAGES_DIR).resolve()
    studydb.init(folder)
    local = threading.local()

    def conn():
        # one connection per worker thread: sqlite3 connections must not be shared across concurrent threads
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = studydb.connect(folder)
        return c

    def headers(nonce: str | None = None) -> dict[str, str]:
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        return {
            "Content-Security-Policy": f"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                                       f"script-src {script}; form-action 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(12)
        html = render(name, study=config["name"], nonce=nonce, **ctx)
        return HTMLResponse(html, status_code=status, headers=headers(nonce))

    def error(status: int, message: str, request: Request) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": message}, status_code=status, headers=headers())
        return PlainTextResponse(message, status_code=status, headers=headers())

    def current_pid(request: Request) -> str | None:
        pid = request.cookies.get(COOKIE)
        if not pid or not TOKEN_VALUE.fullmatch(pid):
            return None
        return pid if studydb.participant(conn(), pid) is not None else None

    async def read_form(request: Request) -> dict[str, str]:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > MAX_BODY:
            raise BadRequest(413 if length and length.isdigit() else 411, "request body missing or too large")
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                data = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(400, "body is not valid JSON") from exc
            if not isinstance(data, dict) or not all(isinstance(v, (str, int)) for v in data.values()):
                raise BadRequest(400, "body must be a flat JSON object")
            return {str(k): str(v) for k, v in data.items()}
        if not ctype.startswith("application/x-www-form-urlencoded"):
            raise BadRequest(415, "send application/x-www-form-urlencoded or application/json")
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def prolific_params(source: dict[str, str] | Any) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for param, column in PROLIFIC_PARAMS.items():
            value = source.get(param)
            if value in (None, ""):
                out[column] = None
            elif not PROLIFIC_VALUE.fullmatch(value):
                raise BadRequest(400, f"{param} must be 1-64 letters, digits, '-' or '_'")
            else:
                out[column] = value
        return out

    # -- participant pages ------------------------------------------------------------------------------------
    def index(request: Request) -> Response:
        try:
            params = prolific_params(request.query_params)
        except BadRequest as exc:
            return error(exc.status, str(exc), request)
        if current_pid(request):
            return RedirectResponse("/trial", status_code=303)
        return page("consent.html", prompt=config["prompt"], params=params,
                    total=config["trials_per_participant"] + config["vigilance"] + config["repeats"])

    async def start(request: Request) -> Response:
        try:
            form = await read_form(request)
            params = prolific_params(form)
            if form.get("consent") != "yes":
                raise BadRequest(400, "consent is required to take part")
        except BadRequest as exc:
            return error(exc.status, str(exc), request)
        pid = current_pid(request)
        if pid is None:
            pid = studydb.create_participant(conn(), config, items, params)
        response = RedirectResponse("/trial", status_code=303)
        response.set_cookie(COOKIE, pid, httponly=True, samesite="lax", max_age=7 * 86400)
        return response

    def trial_page(request: Request) -> Response:
        pid = current_pid(request)
        if pid is None:
            return RedirectResponse("/", status_code=303)
        state = studydb.progress(conn(), pid)
        if state.done:
            return RedirectResponse("/done", status_code=303)
        row = studydb.trial(conn(), pid, state.next_idx)
        options = [{"letter": LETTERS[i], "token": token,
                    "src": f"/img/{config['candidates'][cid]['image']}.png"}
                   for i, (token, cid) in enumerate(json.loads(row["options"]))]
        pair_id = next(it.pair_id for it in items if it.id == row["item"])
        refs = config["references"][pair_id]
        return page("trial.html", prompt=config["prompt"], fmt=config["format"], idx=state.next_idx,
                    total=state.total, options=options,
                    style=f"/img/{refs['style']}.png" if config["show_style"] else None,
                    content=f"/img/{refs['content']}.png" if config["show_content"] else None)

    async def vote(request: Request) -> Response:
        pid = current_pid(request)
        if pid is None:
            return error(403, "no participant session: start the study first", request)
        try:
            form = await read_form(request)
            idx_text, token, rt_text = form.get("trial", ""), form.get("choice", ""), form.get("rt", "")
            if not idx_text.isdigit() or len(idx_text) > 6:
                raise BadRequest(400, "trial must be a non-negative integer")
            if not TOKEN_VALUE.fullmatch(token):
                raise BadRequest(400, "choice is missing or malformed")
            if rt_text and (not rt_text.isdigit() or len(rt_text) > 9):
                raise BadRequest(400, "rt must be a non-negative integer (milliseconds)")
            outcome = studydb.record_vote(conn(), pid, int(idx_text), token, int(rt_text) if rt_text else None)
        except (BadRequest, studydb.VoteError) as exc:
            return error(exc.status, str(exc), request)
        state = studydb.progress(conn(), pid)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"status": outcome, "trial": int(idx_text), "next": state.next_idx,
                                 "total": state.total, "done": state.done}, headers=headers())
        return RedirectResponse("/done" if state.done else "/trial", status_code=303)

    def done(request: Request) -> Response:
        pid = current_pid(request)
        if pid is None:
            return RedirectResponse("/", status_code=303)
        if not studydb.progress(conn(), pid).done:
            return RedirectResponse("/trial", status_code=303)
        who = studydb.participant(conn(), pid)
        code = config["completion_code"]
        prolific = f"https://app.prolific.com/submissions/complete?cc={code}" if who["prolific_pid"] else None
        return page("done.html", code=code, prolific_url=prolific)

    def image(request: Request) -> Response:
        name = request.path_params["name"]
        if not IMAGE_NAME.fullmatch(name):
            return PlainTextResponse("not found", status_code=404)
        path = images / name
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, media_type="image/png",
                            headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})

    def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    # -- admin ------------------------------------------------------------------------------------------------
    def authorised(request: Request) -> bool:
        given = request.query_params.get("token") or request.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(given) and hmac.compare_digest(given.encode(), config["admin_token"].encode())

    def admin(request: Request) -> Response:
        if not authorised(request):
            return PlainTextResponse("admin token required", status_code=401, headers=headers())
        from evalkit.study.analyze import participant_report

        rows = studydb.vote_rows(folder)
        report = participant_report(rows, config)
        c = conn()
        started = c.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
        completed = c.execute("SELECT COUNT(*) FROM participants WHERE completed IS NOT NULL").fetchone()[0]
        totals = {r["pid"]: r["total"] for r in c.execute("SELECT pid, COUNT(*) AS total FROM trials GROUP BY pid")}
        people = [dict(r, total=totals.get(r["pid"], 0)) for r in
                  c.execute("SELECT pid, n, prolific_pid, created, completed FROM participants ORDER BY n")]
        for p in people:
            p.update(report.get(p["pid"], {}))
        vig = [v for p in report.values() for v in p.get("vigilance_results", [])]
        rep = [v for p in report.values() for v in p.get("repeat_results", [])]
        return page("admin.html", started=started, completed=completed, votes=len(rows), people=people,
                    vigilance_rate=(sum(vig) / len(vig)) if vig else None, vigilance_n=len(vig),
                    repeat_rate=(sum(rep) / len(rep)) if rep else None, repeat_n=len(rep),
                    token=request.query_params.get("token", ""))

    def admin_csv(request: Request) -> Response:
        if not authorised(request):
            return PlainTextResponse("admin token required", status_code=401, headers=headers())
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["participant", "prolific_pid", "study_id", "session_id", "trial", "item", "kind",
                         "repeat_of", "options", "chosen", "chosen_kind", "rt_ms", "created"])
        cands = config["candidates"]

        def name(cid: str) -> str:
            return cands[cid]["label"] or f"<{cands[cid]['kind']}>"

        for r in studydb.vote_rows(folder):
            opts = [cid for _, cid in json.loads(r["options"])]
            writer.writerow([r["n"], r["prolific_pid"], r["study_id"], r["session_id"], r["idx"], r["item"],
                             r["kind"], r["repeat_of"], "|".join(name(c) for c in opts), name(r["cand"]),
                             cands[r["cand"]]["kind"], r["rt_ms"], r["created"]])
        return Response(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{config["name"]}-votes.csv"', **headers()})

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/start", start, methods=["POST"]),
        Route("/trial", trial_page, methods=["GET"]),
        Route("/vote", vote, methods=["POST"]),
        Route("/done", done, methods=["GET"]),
        Route("/img/{name}", image, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/admin", admin, methods=["GET"]),
        Route("/admin/votes.csv", admin_csv, methods=["GET"]),
    ]
    return Starlette(routes=routes)
