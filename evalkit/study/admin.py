"""The study's admin routes: progress page, votes CSV, participants CSV (with each participant's completion code).

Authentication: the admin token (in study.json, printed by ``evalkit study serve``) is accepted once in the URL,
``/admin?token=...``, exchanged for an HttpOnly, SameSite=Strict cookie scoped to ``/admin`` and removed from the
address bar by a redirect, so it never stays in the browser history, the 15-second refresh or a Referer. Scripts may
send ``Authorization: Bearer TOKEN`` instead.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from evalkit.study import db as studydb
from evalkit.study.codes import admin_session
from evalkit.study.http import security_headers

if TYPE_CHECKING:
    from evalkit.study.app import StudyServer

ADMIN_COOKIE = "evalkit_admin"
PARTICIPANT_COLUMNS = [
    "participant",
    "session",
    "prolific_pid",
    "study_id",
    "session_id",
    "origin",
    "repeat_id",
    "excluded",  # the researcher's reason (`evalkit study participant --exclude`), empty if not excluded
    "created",
    "completed",
    "answered",
    "total",
    "completion_code",
    "code_kind",
]


class AdminRoutes:
    def __init__(self, server: StudyServer) -> None:
        self.server = server
        self.config = server.config
        self.session = admin_session(self.config.admin_token)

    # -- authentication -------------------------------------------------------------------------------------
    def _matches(self, given: str | None, expected: str) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())

    def authorised(self, request: Request) -> bool:
        bearer = request.headers.get("authorization", "")
        if bearer.startswith("Bearer ") and self._matches(bearer.removeprefix("Bearer "), self.config.admin_token):
            return True
        return self._matches(request.cookies.get(ADMIN_COOKIE), self.session)

    def guard(self, request: Request) -> Response | None:
        """``None`` when authorised; a login redirect when a valid token is in the URL; else 401."""
        given = request.query_params.get("token")
        if given is not None:
            if not self._matches(given, self.config.admin_token):
                return PlainTextResponse("admin token required", status_code=401, headers=security_headers())
            response = RedirectResponse(request.url.path, status_code=303)  # the token leaves the URL here
            self.server.set_cookie(response, ADMIN_COOKIE, self.session, path="/admin", samesite="strict")
            return response
        if not self.authorised(request):
            return PlainTextResponse(
                "admin token required: open /admin?token=... once", status_code=401, headers=security_headers()
            )
        return None

    # -- pages ------------------------------------------------------------------------------------------------
    def admin(self, request: Request) -> Response:
        refused = self.guard(request)
        if refused is not None:
            return refused
        from evalkit.study.analyze import participant_report

        rows = studydb.vote_rows(self.server.folder)
        report = participant_report(rows, self.config)
        people = studydb.participant_rows(self.server.folder)
        for p in people:
            p.update(report.get(p["pid"], {}))
        vig = [v for p in report.values() for v in p.get("vigilance_results", [])]
        rep = [v for p in report.values() for v in p.get("repeat_results", [])]
        return self.server.page(
            "admin.html",
            started=len(people),
            completed=sum(1 for p in people if p["completed"]),
            votes=len(rows),
            people=people,
            repeat_ids=sum(1 for p in people if p["repeat_id"]),
            excluded=sum(1 for p in people if p["excluded"]),
            too_fast=sum(1 for p in people if p.get("too_fast")),
            min_response_ms=self.config.min_response_ms,
            vigilance_rate=(sum(vig) / len(vig)) if vig else None,
            vigilance_n=len(vig),
            repeat_rate=(sum(rep) / len(rep)) if rep else None,
            repeat_n=len(rep),
        )

    def _csv(self, name: str, header: list[str], rows: list[list[Any]]) -> Response:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(rows)
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{self.config.name}-{name}.csv"',
                **security_headers(),
            },
        )

    def votes_csv(self, request: Request) -> Response:
        refused = self.guard(request)
        if refused is not None:
            return refused
        cands = self.config.candidates

        def name(cid: str) -> str:
            if cid == studydb.TIE:
                return "<no preference>"
            return cands[cid].label or f"<{cands[cid].kind}>"

        rows = []
        for r in studydb.vote_rows(self.server.folder):
            opts = [cid for _, cid in json.loads(r["options"])]
            rows.append(
                [
                    r["n"],
                    r["prolific_pid"],
                    r["study_id"],
                    r["session_id"],
                    r["idx"],
                    r["item"],
                    r["kind"],
                    r["repeat_of"],
                    "|".join(name(c) for c in opts),
                    name(r["cand"]),
                    "tie" if r["cand"] == studydb.TIE else cands[r["cand"]].kind,
                    r["rt_ms"],
                    r["created"],
                ]
            )
        return self._csv(
            "votes",
            [
                "participant",
                "prolific_pid",
                "study_id",
                "session_id",
                "trial",
                "item",
                "kind",
                "repeat_of",
                "options",
                "chosen",
                "chosen_kind",
                "rt_ms",
                "created",
            ],
            rows,
        )

    def participants_csv(self, request: Request) -> Response:
        """One row per session with its completion code: what a researcher matches Prolific submissions with."""
        refused = self.guard(request)
        if refused is not None:
            return refused
        rows = [
            [
                p["n"],
                p["pid"],
                p["prolific_pid"],
                p["study_id"],
                p["session_id"],
                p["origin"],
                p["repeat_id"],
                p["excluded"] or "",
                p["created"],
                p["completed"],
                p["answered"],
                p["total"],
                p["completion_code"],
                p["code_kind"],
            ]
            for p in studydb.participant_rows(self.server.folder)
        ]
        return self._csv("participants", PARTICIPANT_COLUMNS, rows)

    def preview(self, request: Request) -> Response:
        """Every item as a participant sees it, with the answer key (method labels; a catch trial's correct answer),
        for the researcher to check the study before launching it. Nothing is recorded."""
        refused = self.guard(request)
        if refused is not None:
            return refused
        cands = self.config.candidates
        shown = []
        for item in self.config.items:
            refs = self.config.references[item.pair_id]
            shown.append(
                {
                    "id": item.id,
                    "kind": item.kind,
                    "pair": item.pair_id,
                    "style": f"/img/{refs.style}.png",
                    "options": [
                        {
                            "src": f"/img/{cands[cid].image}.png",
                            "label": cands[cid].label or f"<{cands[cid].kind}>",
                            "correct": cid in item.correct,
                        }
                        for cid in item.cands
                    ],
                }
            )
        return self.server.page("preview.html", items=shown, prompt=self.config.prompt)

    def prolific_csv(self, request: Request) -> Response:
        refused = self.guard(request)
        if refused is not None:
            return refused
        from evalkit.study.prolific import COLUMNS, prolific_rows

        rows = prolific_rows(self.server.folder, self.config)
        return self._csv("prolific", COLUMNS, [[r[c] for c in COLUMNS] for r in rows])

    def routes(self) -> list[Route]:
        return [
            Route("/admin", self.admin, methods=["GET"]),
            Route("/admin/preview", self.preview, methods=["GET"]),
            Route("/admin/prolific.csv", self.prolific_csv, methods=["GET"]),
            Route("/admin/votes.csv", self.votes_csv, methods=["GET"]),
            Route("/admin/participants.csv", self.participants_csv, methods=["GET"]),
        ]
