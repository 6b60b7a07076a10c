"""Benchmarks of the churn service, each a module run from the checkout's root:

    .venv/bin/python -m benchmarks.features --customers 1000000

Each prints its figures, the last line one JSON object. A package, not loose scripts, so that
``benchmarks.features`` and ``benchmarks.serving`` never shadow the project's ``features`` and
``serving`` packages, and the tests import them like any module. Not part of the installed
wheel: it runs from the repository (``pythonpath = ["."]`` in pytest's settings for the tests).
"""
