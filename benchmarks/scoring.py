"""How fast does the scoring core score a customer base? (the issue's goal: 1,000,000 customers,
features excluded, under a minute on a 2-core machine, using all cores).

    .venv/bin/python -m benchmarks.scoring --customers 1000000
    .venv/bin/python -m benchmarks.scoring --config churn.yaml  # after `churn demo`

With ``--config`` the champions of that project's MLflow store are used and the feature rows
are built from its data; without it a temporary store is trained on generated data (5,000
customers, a few tuning trials). The feature rows at the data end are replicated under new
customer ids up to ``--customers`` (feature building is not timed: see
``benchmarks/features.py``). Timed: ``serving.scoring.score_customers`` (three models, bands,
percentiles, values at risk, actions), once without explanations and once as batch scoring
runs it (explaining the top ``serving.batch_reason_rows`` rows), then ``risk_list_table``.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import trained_store


def _train_store(root: Path, n_customers: int, trials: int):
    """Generated data (five monthly cutoffs) and the three champions in ``root``; the config."""
    from pipelines.config import ProjectConfig

    history = trained_store.generate_history(root, n_customers=n_customers, seed=5, n_cutoffs=5)
    training = {
        "n_trials": trials,
        "time_budget_s": 120,
        "log_trial_runs": False,
        "mlflow": trained_store.mlflow_settings(root),
    }
    cfg = ProjectConfig.model_validate(
        trained_store.project_settings(history.paths, root / "output", training=training)
    )
    trained_store.train_tasks(cfg.training, history, global_stats=False)
    return cfg


def _replicate(features: pd.DataFrame, n_rows: int) -> pd.DataFrame:
    """``n_rows`` feature rows drawn (seeded) from ``features`` under new customer ids."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(features), size=n_rows)
    table = features.iloc[picks].reset_index(drop=True)
    table.index = pd.Index([f"B{i:08d}" for i in range(n_rows)], name="customer_id")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--train-customers", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="Keep the trained store here and reuse it on the next run (default: temporary).",
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

    from features.snapshots import build_features
    from pipelines.config import ProjectConfig, load_config
    from pipelines.data import load_validated_data
    from serving.scoring import load_champions, risk_list_table, score_customers

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp)
        saved = store / "project_config.json"
        if args.config is not None:
            cfg = load_config(args.config)
        elif saved.is_file():
            cfg = ProjectConfig.model_validate_json(saved.read_text())
        else:
            cfg = _train_store(store, args.train_customers, args.trials)
            saved.write_text(cfg.model_dump_json())
        data = load_validated_data(cfg)
        base, _ = build_features(
            data.events,
            data.data_end,
            customers=data.customers,
            subscriptions=data.subscriptions,
            params=cfg.features,
            label_params=cfg.labels,
        )
        features = _replicate(base, args.customers)
        models = load_champions(cfg)
        trees = {
            task: int(m.pyfunc.unwrap_python_model()._scorer.booster.num_boosted_rounds())
            for task, m in models.tasks.items()
        }

        started = time.perf_counter()
        plain = score_customers(features, models, cfg, explain=False)
        scores_s = time.perf_counter() - started

        reason_rows = cfg.serving.batch_reason_rows
        started = time.perf_counter()
        batch = score_customers(
            features, models, cfg, explain=True if reason_rows is None else reason_rows
        )
        batch_s = time.perf_counter() - started
        started = time.perf_counter()
        table = risk_list_table(batch, models)
        table_s = time.perf_counter() - started

    print(
        json.dumps(
            {
                "customers": len(features),
                "active": int(plain["is_active"].sum()),
                "cores": os.cpu_count(),
                "boosting_rounds": trees,
                "score_customers_no_reasons_s": round(scores_s, 2),
                "score_customers_batch_s": round(batch_s, 2),
                "explained_rows": int(batch["reasons_computed"].sum()),
                "risk_list_table_s": round(table_s, 2),
                "risk_list_rows": len(table),
                "customers_per_s": round(len(features) / batch_s),
            }
        )
    )


if __name__ == "__main__":
    main()
