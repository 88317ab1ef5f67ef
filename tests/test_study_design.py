"""Trial sequences: balanced coverage, balanced option positions, catch trials placed as documented."""

from __future__ import annotations

from collections import Counter

from evalkit.study.design import Item, participant_sequence


def _ab_items(n: int) -> list[Item]:
    return [Item(id=f"i{k}", pair_id="p", cands=(f"x{k}", f"y{k}")) for k in range(n)]


def test_items_and_left_right_are_balanced_across_participants():
    items = _ab_items(30)
    shown, left = Counter(), Counter()
    for n in range(6):  # 6 participants x 10 trials = two full passes over 30 items
        for t in participant_sequence(items, n, seed=5, trials=10, vigilance=0, repeats=0):
            shown[t.item] += 1
            left[(t.item, t.order[0])] += 1
    assert set(shown.values()) == {2}
    # each item once with x on the left and once with y on the left
    assert all(left[(f"i{k}", f"x{k}")] == 1 and left[(f"i{k}", f"y{k}")] == 1 for k in range(30))


def test_nway_positions_form_a_latin_square():
    items = [Item(id="i0", pair_id="p", cands=("a", "b", "c", "d"))]
    positions = Counter()
    for n in range(4):
        (t,) = participant_sequence(items, n, seed=1, trials=1, vigilance=0, repeats=0)
        positions.update((cand, pos) for pos, cand in enumerate(t.order))
    assert positions == Counter({(c, p): 1 for c in "abcd" for p in range(4)})


def test_catch_trials_and_repeats():
    items = _ab_items(12) + [
        Item(id=f"v{k}", pair_id="p", cands=("photo", f"out{k}"), kind="vigilance", correct=(f"out{k}",))
        for k in range(3)
    ]
    seq = participant_sequence(items, 0, seed=9, trials=8, vigilance=2, repeats=2)
    kinds = Counter(t.kind for t in seq)
    assert kinds == {"regular": 8, "vigilance": 2, "repeat": 2}
    for pos, t in enumerate(seq):
        if t.kind == "repeat":
            original = seq[t.repeat_of]
            assert original.kind == "regular" and original.item == t.item
            assert t.order == list(reversed(original.order))  # shown the other way round
            assert pos > t.repeat_of
    assert seq[0].kind == "regular"  # never open with a catch trial
    # seeded: the same participant number gets the same sequence; another number a different one
    again = participant_sequence(items, 0, seed=9, trials=8, vigilance=2, repeats=2)
    assert [(t.item, t.order) for t in again] == [(t.item, t.order) for t in seq]
    other = participant_sequence(items, 1, seed=9, trials=8, vigilance=2, repeats=2)
    assert [t.item for t in other] != [t.item for t in seq]
