"""Benchmarks run as scripts (`tgsentinel bench ...`), not as timed tests."""
