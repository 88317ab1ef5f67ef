"""Human preference studies: build forced-choice trials from a run, serve them, analyse the votes.

The pieces are small on purpose: :mod:`~evalkit.study.design` decides what each participant sees (balanced,
seeded), :mod:`~evalkit.study.build` turns a run into a self-contained study folder, :mod:`~evalkit.study.db` is the
crash-safe vote store, :mod:`~evalkit.study.app` serves the study over HTTP, :mod:`~evalkit.study.stats` holds the
statistics and :mod:`~evalkit.study.analyze` turns votes into rankings written back into the run's database.
"""

from __future__ import annotations

# The wording follows the forced-choice studies of the style-transfer literature (e.g. Li et al. 2017,
# Huang & Belongie 2017, Luan et al. 2017); changing it changes what is measured, so it lives in one place.
QUESTIONS: dict[str, str] = {
    "style": "Which carries the style better?",
    "favorite": "Which is your favorite for this style?",
    "photoreal": "Which looks more like a real photo?",
}
FORMATS = ("ab", "nway")
MAX_OPTIONS = 5  # nway shows A-E
LETTERS = "ABCDE"
