"""Statistics for forced-choice studies, each written from its published definition.

* Wilson score interval and exact binomial test: :func:`scipy.stats.binomtest`.
* Holm (1979) step-down correction for the family of pairwise tests.
* Bradley-Terry strengths: the maximum-likelihood fit of ``choix`` (``ilsr_pairwise_dense``, iterative Luce spectral
  ranking, which converges to the same MLE as Hunter's (2004) MM algorithm evalkit used before), reported on the
  Elo scale the LMSYS arena uses (400 log10 odds), with percentile-bootstrap intervals and the arena's rank rule.
* Krippendorff's alpha for nominal data through the ``krippendorff`` package (Krippendorff 2011), which, unlike
  Fleiss' kappa, allows a different number of raters per item - the normal case in a balanced online study.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np
from scipy.stats import binomtest

ELO_SCALE = 400.0 / np.log(10.0)  # natural-log strength -> Elo points
ELO_BASE = 1000.0


def wilson(wins: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a win rate (scipy's implementation; (nan, nan) when there are no votes)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(wins, n, 0.5).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def binomial_p(wins: int, n: int) -> float:
    """Two-sided exact binomial test of 'no preference' (p = 0.5)."""
    return float(binomtest(wins, n, 0.5).pvalue) if n else float("nan")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: p_(i) * (m - i + 1), made monotone and capped at 1 (nan stays nan, not counted)."""
    idx = [i for i, p in enumerate(pvalues) if not np.isnan(p)]
    m = len(idx)
    order = sorted(idx, key=lambda i: pvalues[i])
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def win_matrix(comparisons: Sequence[tuple[int, int] | tuple[int, int, float]], k: int) -> np.ndarray:
    """``W[i, j]`` = (weighted) number of times ``i`` beat ``j``; an outcome is ``(winner, loser)`` or
    ``(winner, loser, weight)`` (a tie is two outcomes of weight 1/2)."""
    w = np.zeros((k, k))
    for outcome in comparisons:
        w[outcome[0], outcome[1]] += outcome[2] if len(outcome) > 2 else 1.0
    return w


def bradley_terry(
    wins: np.ndarray, prior: float = 0.1, tol: float = 1e-10, max_iter: int = 10_000, support: np.ndarray | None = None
) -> np.ndarray:
    """Log-strengths (mean zero) maximising the Bradley-Terry likelihood (``choix.ilsr_pairwise_dense``).

    ``prior`` adds that many virtual wins in both directions to every compared pair: it keeps a method that never
    won finite (MLE would be -inf) and is negligible once there are more than a handful of votes. ``support``
    (default: the pairs compared in ``wins``) says which pairs get the prior.
    """
    import choix

    support = (wins + wins.T) > 0 if support is None else support
    w = np.asarray(wins, dtype=float) + prior * support
    if len(w) and ((w + w.T).sum(axis=1) == 0).any():
        raise ValueError("every method needs at least one comparison to be scored")
    logp = np.asarray(choix.ilsr_pairwise_dense(w, alpha=0.0, max_iter=max_iter, tol=tol), dtype=float)
    return logp - logp.mean()


def bootstrap_bt(
    comparisons: Sequence[Sequence[tuple[int, int] | tuple[int, int, float]]],
    k: int,
    rounds: int = 1000,
    seed: int = 0,
    prior: float = 0.1,
) -> np.ndarray:
    """Bootstrap distribution of the log-strengths, resampling whole votes (a vote may hold several pairwise
    outcomes, as an n-way choice does). Shape (rounds, k)."""
    rng = np.random.default_rng(seed)
    votes = list(comparisons)
    vote_of = np.array([v for v, vote in enumerate(votes) for _ in vote], dtype=int)
    winners = np.array([wl[0] for vote in votes for wl in vote], dtype=int)
    losers = np.array([wl[1] for vote in votes for wl in vote], dtype=int)
    weights = np.array([wl[2] if len(wl) > 2 else 1.0 for vote in votes for wl in vote], dtype=float)
    full = np.zeros((k, k))
    np.add.at(full, (winners, losers), weights)
    support = (full + full.T) > 0
    out = np.empty((rounds, k))
    for r in range(rounds):
        counts = np.bincount(rng.integers(0, len(votes), len(votes)), minlength=len(votes))
        w = np.zeros((k, k))
        np.add.at(w, (winners, losers), counts[vote_of] * weights)
        out[r] = bradley_terry(w, prior=prior, tol=1e-8, support=support)
    return out


def to_elo(logp: np.ndarray) -> np.ndarray:
    return ELO_BASE + ELO_SCALE * np.asarray(logp)


def arena_ranks(lower: Sequence[float], upper: Sequence[float]) -> list[int]:
    """LMSYS arena rule: rank = 1 + number of methods whose lower bound is above this method's upper bound."""
    return [1 + sum(1 for lo in lower if lo > up) for up in upper]


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float:
    """Krippendorff's alpha for nominal values (``krippendorff.alpha`` on the units x values count matrix); each
    unit is the list of values the raters gave it. Units with fewer than two values are not pairable and do not
    count; ``nan`` when no unit is pairable or there is no variation at all."""
    import krippendorff

    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u}, key=repr)
    if not pairable or len(values) < 2:
        return float("nan")
    index = {v: i for i, v in enumerate(values)}
    counts = np.zeros((len(pairable), len(values)))
    for row, unit in enumerate(pairable):
        for value, n in Counter(unit).items():
            counts[row, index[value]] = n
    return float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))
