"""The benchmark harness of the pipeline: ``scripts/bench`` (or ``python -m bench.run``).

See ``docs/benchmarks.md`` for what is measured and how; results land in ``bench/results/``.
"""
