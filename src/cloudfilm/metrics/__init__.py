"""Prometheus metrics of the archive (``GET /metrics``), with prometheus-client.

``cloudfilm serve`` is several processes (DICOM and HTTP workers) and a scrape reaches any one
HTTP process, so counters are kept in prometheus-client's multiprocess mode: each process
writes its values to files in ``<data dir>/metrics`` and the answering process sums them
(``multiproc.py``). Without that directory (tests, a lone process) values stay in memory.

- ``instruments.py``: the counters and histograms, and the one-line calls the doors make;
- ``multiproc.py``: the shared directory, which processes write to it, and their exit;
- ``collectors.py``: what is computed at scrape time (the index's figures, every process's
  standard process metrics);
- ``http.py``: the per-request counter and latency (ASGI middleware);
- ``web.py``: the ``/metrics`` endpoint and who may read it.

Nothing here imports the doors: they import ``instruments``.
"""
