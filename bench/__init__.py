"""Benchmarks of sessiond: each figure is printed as a ratio against a floor
measured in the same run, on the same disk.

Run them all with ``python -m bench.run_all`` (``--quick`` for a smoke run), or
one figure with ``python -m bench.<name>``. They are not tests: nothing here runs
under pytest.
"""
