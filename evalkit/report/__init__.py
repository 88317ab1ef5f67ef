"""Reports derived from the results database: the HTML leaderboard and paper-ready Markdown / LaTeX tables.

Everything here reads the SQLite store (never the other way round), so a page can be rebuilt at any time from the
database and the output images alone. ``data`` loads, ``quality`` aggregates, ``plots`` lays out SVG, ``thumbs``
makes thumbnails, ``html`` and ``text`` render.
"""
