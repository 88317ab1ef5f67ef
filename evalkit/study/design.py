"""Which trials a participant sees, in which order, with options in which positions.

Balance is achieved by construction rather than by chance: the comparison items are dealt out round-robin from one
seeded permutation (participant ``n`` takes the next ``T`` items after participant ``n-1``), so every item is
shown equally often; each time the deal wraps around, the option order of every item is rotated by one position, so
over ``k`` passes each option sits in each of the ``k`` positions equally often (a Latin square; for A/B this is a
left/right swap). Within a participant the trial order is shuffled with a seed derived from the study seed and the
participant number, so a sequence can always be regenerated and audited.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """One comparison: candidate ids in their base (already randomised) order. Never sent to a participant."""

    id: str
    pair_id: str
    cands: tuple[str, ...]
    kind: str = "regular"  # regular | vigilance
    correct: tuple[str, ...] = ()  # vigilance only: the acceptable answers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        return cls(
            id=data["id"],
            pair_id=data["pair_id"],
            cands=tuple(data["cands"]),
            kind=data.get("kind", "regular"),
            correct=tuple(data.get("correct", ())),
        )


@dataclass
class Trial:
    """One screen of a participant's sequence: the item and its options in display order."""

    item: str
    kind: str  # regular | vigilance | repeat
    order: list[str]
    repeat_of: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def rotate(seq: tuple[str, ...] | list[str], by: int) -> list[str]:
    """Cyclic rotation: rotating ``k`` options by 0..k-1 puts each option in each position exactly once."""
    seq = list(seq)
    if not seq:
        return seq
    by %= len(seq)
    return seq[by:] + seq[:by]


def deal(items: list[Item], n: int, count: int, seed: int, salt: str) -> list[tuple[Item, int]]:
    """Participant ``n``'s share of ``items``: ``count`` consecutive items of one seeded permutation, round-robin.

    Returns (item, pass number); the pass number drives the rotation of the option order.
    """
    if not items or count <= 0:
        return []
    perm = list(items)
    random.Random(f"{seed}:{salt}:perm").shuffle(perm)
    start = n * count
    return [(perm[g % len(perm)], g // len(perm)) for g in range(start, start + count)]


def participant_sequence(
    items: list[Item], n: int, seed: int, trials: int, vigilance: int, repeats: int
) -> list[Trial]:
    """The whole sequence for participant number ``n`` (0-based arrival order).

    ``trials`` regular comparisons (capped at the number of distinct items, so nobody judges the same comparison
    twice except as a deliberate repeat), ``vigilance`` catch trials with a known answer, and ``repeats`` earlier
    trials shown again with the option order reversed to measure consistency. Catch trials look like any other.
    """
    regular = [it for it in items if it.kind == "regular"]
    catches = [it for it in items if it.kind == "vigilance"]
    rng = random.Random(f"{seed}:participant:{n}")
    seq = [
        Trial(item=it.id, kind="regular", order=rotate(it.cands, p))
        for it, p in deal(regular, n, min(trials, len(regular)), seed, "regular")
    ]
    rng.shuffle(seq)
    for it, p in deal(catches, n, min(vigilance, len(catches)), seed, "vigilance"):
        seq.insert(rng.randint(1, max(1, len(seq))), Trial(item=it.id, kind="vigilance", order=rotate(it.cands, p)))
    originals = [i for i, t in enumerate(seq) if t.kind == "regular"]
    chosen = sorted(rng.sample(originals, min(repeats, len(originals))), reverse=True)
    for pos in chosen:  # insert from the back so earlier positions stay valid
        src = seq[pos]
        at = rng.randint(min(pos + 3, len(seq)), len(seq))
        seq.insert(at, Trial(item=src.item, kind="repeat", order=list(reversed(src.order)), meta={"of": id(src)}))
    # resolve repeat_of to final positions
    where = {id(t): i for i, t in enumerate(seq)}
    for t in seq:
        if t.kind == "repeat":
            t.repeat_of = where[t.meta.pop("of")]
    return seq
