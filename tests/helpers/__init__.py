"""Helpers the tests (and some benchmarks) share; no tests live here.

The tests import them as `helpers.<module>`: pytest puts tests/ on `sys.path` (rootdir
conftest, no package), and the benchmarks that reuse them put it there themselves.
"""
