"""Where a profiling matrix runs. Executors move cells and rows; they never measure (every
measurement is the runner's own code, :mod:`profiler.runner`).

- ``local`` (default): :class:`profiler.runner.Runner` in this process, rows in ``RUN_DIR/results.jsonl``.
- ``ray``: one hardware target per Ray node label, rows in ``RUN_DIR/targets/<target>/results.jsonl``
  (:mod:`profiler.executors.ray_driver` on the driver, :mod:`profiler.executors.ray_node` on the nodes).
"""

EXECUTORS = ("local", "ray")
