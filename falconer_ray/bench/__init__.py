"""Benchmarks that print numbers: `falconer bench throughput|memory`.

Every figure in one report is measured in the same process on the same machine,
so ratios (proxy vs teacher, pipeline vs bare forward, two actors vs one) stay
meaningful on shared, noisy hardware where absolute numbers do not.
"""
