"""A blind listening test anyone can host: build it, serve it, score it (docs/evaluation.md).

* :mod:`.make` builds a static survey folder (page, loudness-normalised audio under opaque names,
  and ``manifest.json``, the only file that says which clip is which condition).
* :mod:`.serve` serves that folder on localhost and saves submitted answer sheets.
* :mod:`.score` reads answer sheets, joins them with the manifest and writes the report
  (:mod:`.stats` for the statistics, :mod:`.chart` for the bar chart).
* :mod:`.loudness`, :mod:`.anchor` and :mod:`.order` are the small pieces those share.
"""
