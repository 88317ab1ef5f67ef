"""One run selection for every reading command (leaderboard, compare, export, speed, study build).

The default is every run of the latest run's protocol: ``evalkit run -m a`` then ``evalkit run -m b`` shows both
methods, and protocols, whose metrics are not comparable, are never mixed. ``--run ID`` (repeatable) picks runs,
``--protocol NAME`` picks every run of a protocol, ``--run all`` every run of the chosen protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from evalkit.store.reads import ReadModels

ALL = "all"


@dataclass(frozen=True)
class RunSelection:
    """The chosen runs (oldest first) of one protocol, with their rows (JSON columns decoded)."""

    protocol: str
    runs: tuple[dict[str, Any], ...]

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.runs]

    @property
    def newest(self) -> dict[str, Any]:
        return self.runs[-1]


def _decoded(run: dict[str, Any]) -> dict[str, Any]:
    out = dict(run)
    for key in ("environment", "methods", "resolutions"):
        try:
            out[key] = json.loads(out[key]) if out.get(key) else None
        except (TypeError, ValueError):
            pass
    return out


def select_runs(store: ReadModels, runs: list[str] | None = None, protocol: str | None = None) -> RunSelection:
    """The runs named by ``--run`` / ``--protocol`` (default: every run of the latest run's protocol); one-line
    errors for an empty root, an unknown run or protocol, and runs of different protocols."""
    rows = [dict(r) for r in store.runs()]
    if not rows:
        raise EvalkitError(f"no runs in {store.path}: run `evalkit run --results {store.root}` first")
    by_id = {r["run_id"]: r for r in rows}
    wanted = [r for r in (runs or []) if r != ALL]
    missing = [r for r in wanted if r not in by_id]
    if missing:
        raise EvalkitError(
            f"unknown run id(s) {', '.join(missing)} in {store.path}: known runs are {', '.join(by_id)} "
            f"(see `evalkit runs --results {store.root}`)"
        )
    if wanted:
        chosen = [by_id[r] for r in wanted]
        protocols = sorted({str(r["protocol"]) for r in chosen})
        if len(protocols) > 1:
            raise EvalkitError(
                f"the selected runs use different protocols ({', '.join(protocols)}): pass --run ids of one "
                f"protocol, since metrics of different protocols are not comparable"
            )
        if protocol is not None and protocols[0] != protocol:
            raise EvalkitError(f"--run {wanted[0]} is a run of protocol '{protocols[0]}', not of --protocol {protocol}")
        chosen.sort(key=rows.index)
        return RunSelection(protocols[0], tuple(_decoded(r) for r in chosen))
    if protocol is None:
        protocol = str(rows[-1]["protocol"])  # store.runs() is ordered oldest first
    chosen = [r for r in rows if r["protocol"] == protocol]
    if not chosen:
        known = sorted({str(r["protocol"]) for r in rows})
        raise EvalkitError(f"no runs of protocol '{protocol}' in {store.path}: its runs are of {', '.join(known)}")
    return RunSelection(protocol, tuple(_decoded(r) for r in chosen))
