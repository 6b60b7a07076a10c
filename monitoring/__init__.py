"""Monitoring: is the deployed champion still looking at the world it was trained on?

Pure functions over DataFrames, one module per reason to change: ``config`` (the thresholds),
``scores`` (drift scores and their noise floors), ``drift`` (per-column drift verdicts),
``batches`` (which rows and events are compared), ``performance`` (realised against promised
metrics on matured labels), ``evidently_report`` (the Evidently reports), ``checks`` (the
monitor's checks combined into the alarm and the retrain decision) and ``page`` (the HTML
page). ``pipelines.monitoring`` loads the champion and the data, scores, writes and logs.
"""
