"""The flow of `churn demo`: the main job end to end on generated data, in one folder.

``churn demo`` is a complete first run after ``pip install``, from any working directory: it
generates a CRM history and runs every stage on it, writing everything (data, quarantine,
tables, risk list, monitoring and retention reports, the MLflow store) under one folder,
``./churn-demo/`` unless told otherwise (:func:`demo_locations`). The settings are the built-in
defaults or a ``--config`` file's; only the locations are the demo's own.

With ``--config FILE`` and no ``--out`` the demo writes where the config says instead (the
repository's ``make demo`` runs it on ``churn.yaml``: ``data/demo/`` and ``mlruns/``, the
locations the other commands read with that config).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipelines.config import ProjectConfig
from pipelines.data import (
    load_validated_data,
    run_check,
    run_features,
    run_snapshots,
    run_train,
    run_validate,
)

__all__ = ["DEFAULT_DEMO_DIR", "DEMO_TASKS", "demo_locations", "prepare_demo_dir", "run_demo"]

#: Where ``churn demo`` writes without ``--out`` or ``--config``, relative to the working
#: directory.
DEFAULT_DEMO_DIR = Path("churn-demo")


def prepare_demo_dir(out: Path) -> Path:
    """Create the demo's folder and check a file can be written in it; its absolute path.

    Done before anything is generated, so a folder the demo cannot use is a one-line
    ``ValueError`` (exit code 2 from the CLI) rather than a traceback minutes later.
    """
    root = Path(out).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ValueError(f"cannot write the demo under {out}: it is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write the demo under {out}: {exc.strerror or exc}") from exc
    return root


def demo_locations(root: Path) -> dict[str, Any]:
    """Config overrides (dotted keys) that put everything the demo writes under ``root``.

    ``root/data``: the generated tables and the quarantine; ``root/output``: snapshots,
    features, the risk list, monitoring and the retention report; ``root/mlruns``: the MLflow
    tracking store and registry (SQLite) and the artifacts. The registry is pinned to the same
    store, so a ``CHURN_MLFLOW_*`` variable set for real work is not written to by the demo.
    """
    from serving.config import DEFAULT_RISK_LIST_NAME

    root = Path(root)
    data, output, mlruns = root / "data", root / "output", root / "mlruns"
    store = f"sqlite:///{mlruns / 'mlflow.db'}"
    return {
        **{
            f"data.{table}": {"path": str(data / f"{table}.parquet")}
            for table in ("events", "customers", "subscriptions")
        },
        "data.quarantine_dir": str(data / "quarantine"),
        "output_dir": str(output),
        "serving.risk_list_path": str(output / DEFAULT_RISK_LIST_NAME),
        "monitoring.report_dir": str(output / "monitoring"),
        "training.mlflow.tracking_uri": store,
        "training.mlflow.registry_uri": store,
        "training.mlflow.artifact_location": str(mlruns / "artifacts"),
    }


DEMO_TASKS: tuple[str, ...] = ("churn", "upsell", "winback")


def run_demo(
    cfg: ProjectConfig,
    *,
    n_customers: int = 5000,
    seed: int = 42,
    regenerate: bool = False,
    tasks: tuple[str, ...] = DEMO_TASKS,
    progress: bool = True,
    say=print,
) -> dict[str, Any]:
    """The main job end to end on generated data: local files and a SQLite MLflow store.

    Generates a CRM history (unless one is already there), validates it, checks it is usable,
    builds the snapshot table and today's feature table, trains, evaluates and registers one
    model per task, batch-scores every customer into the risk list, checks drift against the
    champion's reference and writes the retention report. Each step prints where its output is.
    """
    from features.synthetic import GeneratorParams, generate_crm_data, write_crm_data

    if cfg.data.events is None or cfg.data.events.path is None:
        raise ValueError("the demo writes generated files: data.events must be a file path")
    data_dir = Path(cfg.data.events.path).parent
    output_dir = Path(cfg.output_dir)
    summary: dict[str, Any] = {"data_dir": str(data_dir), "output_dir": str(output_dir)}

    if regenerate or not Path(cfg.data.events.path).exists():
        say(f"[1/9] generating {n_customers:,} customers (seed {seed}) into {data_dir}")
        data = generate_crm_data(GeneratorParams(n_customers=n_customers, seed=seed))
        write_crm_data(data, data_dir)
    else:
        say(f"[1/9] using the data already in {data_dir} (--regenerate to replace it)")

    say("[2/9] validating against the data contract")
    data = load_validated_data(cfg)
    validation = run_validate(cfg, data=data)
    say(validation["validation_text"])
    summary["validation_report"] = validation["report"]

    say("[3/9] checking the data is usable for modelling")
    usability = run_check(cfg, data=data)
    say(usability.render())
    if usability.verdict == "not usable":
        raise RuntimeError("the data is not usable for modelling; see the findings above")

    say("[4/9] building point-in-time features and labels over the snapshot cutoffs")
    snapshots_path = output_dir / "snapshots.parquet"
    snapshots = run_snapshots(cfg, snapshots_path, data=data)
    summary["snapshots"] = {k: snapshots[k] for k in ("out", "rows", "cutoffs")}
    say(f"      {snapshots['rows']:,} rows over cutoffs {', '.join(snapshots['cutoffs'])}")

    as_of = data.data_end
    features_path = output_dir / f"features_{as_of.date()}.parquet"
    say(f"[5/9] today's features (as of {as_of.date()}) for scoring")
    summary["features"] = run_features(cfg, as_of.date(), features_path, data=data)

    summary["models"] = {}
    say(f"[6/9] tuning, calibrating, evaluating and registering: {', '.join(tasks)}")
    for task in tasks:
        result = run_train(cfg, task, snapshots_path=snapshots_path, progress=progress)
        metrics = result.metrics
        say(
            f"      {result.model_name} v{result.model_version} -> {result.alias}: "
            f"test ROC AUC {metrics['roc_auc']:.3f}, PR AUC {metrics['pr_auc']:.3f} "
            f"(naive baseline ROC AUC {metrics.get('baseline_roc_auc', float('nan')):.3f}), "
            f"lift@10% {metrics['lift_at_10']:.2f}"
        )
        summary["models"][task] = {
            "run_id": result.run_id,
            "model_name": result.model_name,
            "model_version": result.model_version,
            "alias": result.alias,
            "roc_auc": metrics["roc_auc"],
            "pr_auc": metrics["pr_auc"],
            "baseline_roc_auc": metrics.get("baseline_roc_auc"),
        }

    from pipelines.monitoring import run_monitor
    from pipelines.report import run_report
    from pipelines.scoring import run_score

    say(f"[7/9] batch scoring every customer as of {as_of.date()} with the champions")
    scored = run_score(cfg, as_of.date(), data=data)
    summary["risk_list"] = scored
    say(f"      risk list: {scored.get('out') or scored['service_risk_list']['path']}")

    say("[8/9] drift and performance monitoring against the churn champion's reference")
    monitor = run_monitor(cfg, data=data, say=lambda text: say(f"      {text}"))
    summary["monitoring"] = {
        k: monitor.get(k) for k in ("verdict", "alarm", "html", "json") if k in monitor
    }

    say("[9/9] retention report for the retention team")
    report_path = run_report(cfg, data=data, say=lambda text: say(f"      {text}"))
    summary["retention_report"] = str(report_path)
    say(f"      open {report_path} in a browser")

    summary["mlflow_tracking_uri"] = cfg.training.mlflow.tracking_uri
    return summary
