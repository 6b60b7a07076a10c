"""Reporting: the retention report, one self-contained HTML page a retention team reads.

What the page answers, in the CRM vocabulary of the background reading (``../shared/seeds``:
value tiers A-D with the 20/30/30/20 split, lifecycle stages exploration -> formation ->
stability -> decline, IBM's value-growth groups, win-back):

1. How many customers do we lose, and is it getting worse? Churn rate by month.
2. How long do customers stay? Retention curves of signup-month cohorts.
3. Who carries the business? The Pareto curve of value: the share of revenue the top 20% bring.
4. Where is the value at risk? RFM segments, value tiers, lifecycle stages and value-growth
   groups with their churn rate and value at risk.
5. Which behaviours go with churn? Churn rate by decile of each key metric.
6. Would the model's earlier risk lists have worked? A backtest: the champion scores the earlier
   matured snapshot cutoffs and its top decile is compared with what happened.
7. Whom to call this week, why, and what to offer: the top at-risk customers with reasons and
   suggested actions, and cross-sell candidates (from the risk list ``churn score`` writes).

Pure functions over DataFrames, in three modules: ``analyses`` (the numbers), ``charts`` (a
matplotlib figure per analysis) and ``page`` (:class:`~reporting.page.RetentionReportData` and
the HTML page). The exploration notebook (``notebooks/02_exploration.ipynb``) calls the same
analyses and charts, so it shows exactly what the report shows. Nothing here reads a file, a
database or the model registry: ``pipelines.report`` loads the data, the risk list and the
champion, and writes the page. Imports only ``features`` and ``training``.
"""
