"""The ``churn`` command line: thin commands that parse arguments and call the flows.

Every command takes ``--config FILE`` (the project YAML); flags override single settings.
Results are printed as one line of JSON at the end (for scripts), human-readable text before it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from features.contract import DataContractError
from pipelines.config import ProjectConfig, load_config

app = typer.Typer(
    name="churn",
    help="Churn prediction, win-back and cross-sell scoring for CRM teams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project config YAML (see churn.yaml).")
]
EventsOption = Annotated[
    Path | None, typer.Option(help="Events file (CSV/Parquet); overrides data.events.")
]
CustomersOption = Annotated[
    Path | None, typer.Option(help="Customers file; overrides data.customers.")
]
SubscriptionsOption = Annotated[
    Path | None, typer.Option(help="Subscriptions file; overrides data.subscriptions.")
]
#: ``--engine`` of the commands that build tables (``features``, ``snapshots``).
TableEngineOption = Annotated[
    str,
    typer.Option(
        help="local (pandas) or spark (PySpark; Parquet or Spark tables in, Parquet out)."
    ),
]
#: ``--engine`` of ``score``: the same choice, but the Spark engine writes Parquet only.
ScoreEngineOption = Annotated[
    str, typer.Option(help="local, or spark (PySpark; Parquet output only).")
]

#: The values of ``--engine``.
ENGINES = ("local", "spark")

#: A command's flow: the config and the command's arguments in, a JSON-able summary out.
Flow = Callable[..., dict[str, Any]]


def _parse_date(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form") from exc


def _source_override(cfg: ProjectConfig | None, table: str, path: Path | None) -> Any:
    """A file flag replaces the table's location but keeps its column mapping and formats."""
    if path is None:
        return None
    current = getattr(cfg.data, table) if cfg is not None else None
    kept = current.model_dump(exclude={"path", "url", "table", "query"}) if current else {}
    return {**kept, "path": str(path)}


def _config(
    config: Path | None,
    events: Path | None = None,
    customers: Path | None = None,
    subscriptions: Path | None = None,
    **overrides: Any,
) -> ProjectConfig:
    try:
        base = load_config(config, overrides)
        data_overrides = {
            "data.events": _source_override(base, "events", events),
            "data.customers": _source_override(base, "customers", customers),
            "data.subscriptions": _source_override(base, "subscriptions", subscriptions),
        }
        return load_config(config, {**overrides, **data_overrides})
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, default=str, sort_keys=True))


def _flow_for_engine(engine: str, *, local: Flow, spark: Flow) -> Flow:
    """The flow that runs a command on ``--engine``: ``local`` (pandas) or ``spark`` (PySpark).

    Both flows take the same arguments and return the same summary, so a command picks one here
    and calls it once. An unknown engine is a usage error (exit code 2), raised before the
    config is read so that nothing is loaded for a typo.
    """
    if engine not in ENGINES:
        raise typer.BadParameter(f"{engine!r} is not local or spark", param_hint="--engine")
    return spark if engine == "spark" else local


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Directory for events/customers/subscriptions.parquet")],
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 42,
    activity_scale: Annotated[float, typer.Option(min=0.01, help="Scales all event rates.")] = 1.0,
    start: Annotated[str | None, typer.Option(help="First day simulated, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last day simulated, YYYY-MM-DD.")] = None,
    drift_start: Annotated[
        str | None, typer.Option(help="Inject drift from this date (YYYY-MM-DD).")
    ] = None,
    price_increase: Annotated[
        float, typer.Option(help="With --drift-start: relative price rise, e.g. 0.2.")
    ] = 0.0,
    new_channel: Annotated[
        str | None, typer.Option(help="With --drift-start: a new channel appearing.")
    ] = None,
    with_truth: Annotated[
        bool, typer.Option(help="Also write truth.parquet (latent churn dates, for tests).")
    ] = False,
) -> None:
    """Generate a realistic synthetic CRM history (deterministic for a seed)."""
    from features.synthetic import DriftSpec, GeneratorParams, generate_crm_data, write_crm_data

    params: dict[str, Any] = {
        "n_customers": customers,
        "seed": seed,
        "activity_scale": activity_scale,
    }
    if start:
        params["start"] = _parse_date(start)
    if end:
        params["end"] = _parse_date(end)
    if drift_start:
        params["drift"] = DriftSpec(
            start=_parse_date(drift_start), price_increase=price_increase, new_channel=new_channel
        )
    elif price_increase or new_channel:
        raise typer.BadParameter("--price-increase/--new-channel need --drift-start")
    data = generate_crm_data(GeneratorParams(**params))
    paths = write_crm_data(data, out, include_truth=with_truth)
    typer.echo(
        f"wrote {len(data.events):,} events of {len(data.customers):,} customers to {out}",
        err=True,
    )
    _print_json({"files": {name: str(p) for name, p in paths.items()}, "events": len(data.events)})


@app.command()
def validate(
    config: ConfigOption = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
) -> None:
    """Check the data against the contract; quarantine unusable rows with reasons."""
    from pipelines.data import run_validate

    cfg = _config(config, events, customers, subscriptions)
    summary = run_validate(cfg)
    typer.echo(summary["validation_text"], err=True)
    _print_json({k: v for k, v in summary.items() if k not in ("validation", "validation_text")})


@app.command()
def check(
    config: ConfigOption = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
    horizon_days: Annotated[int | None, typer.Option(help="Label horizon in days.")] = None,
    training_horizon_days: Annotated[
        int | None, typer.Option(help="Shorter label window for training (default: horizon).")
    ] = None,
) -> None:
    """Is there enough data for a trustworthy model? A verdict with recommendations."""
    from pipelines.data import run_check

    cfg = _config(
        config,
        events,
        customers,
        subscriptions,
        **{
            "labels.horizon_days": horizon_days,
            "labels.training_horizon_days": training_horizon_days,
        },
    )
    report = run_check(cfg)
    typer.echo(report.render(), err=True)
    _print_json(report.to_dict())
    if report.verdict == "not usable":
        raise typer.Exit(code=3)


@app.command()
def features(
    as_of: Annotated[str, typer.Option("--as-of", help="Cutoff date YYYY-MM-DD (exclusive).")],
    out: Annotated[Path, typer.Option(help="Output table, .parquet or .csv")],
    config: ConfigOption = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
    engine: TableEngineOption = "local",
) -> None:
    """Point-in-time lifecycle features, one row per customer, from events before --as-of."""
    from pipelines.data import run_features
    from pipelines.spark_flows import run_features_spark

    run = _flow_for_engine(engine, local=run_features, spark=run_features_spark)
    cfg = _config(config, events, customers, subscriptions)
    _print_json(run(cfg, _parse_date(as_of), out))


@app.command()
def snapshots(
    out: Annotated[Path, typer.Option(help="Output table, .parquet or .csv")],
    config: ConfigOption = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
    horizon_days: Annotated[int | None, typer.Option(help="Label horizon in days.")] = None,
    lead_days: Annotated[int | None, typer.Option(help="Days between cutoff and window.")] = None,
    training_horizon_days: Annotated[
        int | None, typer.Option(help="Shorter label window for training (default: horizon).")
    ] = None,
    engine: TableEngineOption = "local",
) -> None:
    """Training table: features and churn/up-sell/win-back labels stacked over cutoffs."""
    from pipelines.data import run_snapshots
    from pipelines.spark_flows import run_snapshots_spark

    run = _flow_for_engine(engine, local=run_snapshots, spark=run_snapshots_spark)
    cfg = _config(
        config,
        events,
        customers,
        subscriptions,
        **{
            "labels.horizon_days": horizon_days,
            "labels.lead_days": lead_days,
            "labels.training_horizon_days": training_horizon_days,
        },
    )
    _print_json(run(cfg, out))


@app.command(name="train")
def train_command(
    task: Annotated[
        str, typer.Option(help="churn | upsell | winback", case_sensitive=False)
    ] = "churn",
    config: ConfigOption = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials.")] = None,
    time_budget: Annotated[
        float | None, typer.Option(min=1, help="Tuning wall-clock budget in seconds.")
    ] = None,
    snapshots: Annotated[
        Path | None, typer.Option(help="Training table from `churn snapshots` (else built).")
    ] = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
    progress: Annotated[bool, typer.Option(help="Show the tuning progress bar.")] = True,
) -> None:
    """Tune, calibrate, evaluate, log and register a model; prints a one-line JSON summary."""
    from pipelines.data import run_train
    from training.config import TASK_NAMES

    if task not in TASK_NAMES:
        raise typer.BadParameter(
            f"{task!r} is not one of {', '.join(TASK_NAMES)}", param_hint="--task"
        )
    cfg = _config(
        config,
        events,
        customers,
        subscriptions,
        **{"training.n_trials": trials, "training.time_budget_s": time_budget},
    )
    result = run_train(cfg, task, snapshots_path=snapshots, progress=progress)
    typer.echo(result.model_dump_json())


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for everything the demo writes: data, outputs and the MLflow store "
            "(default: ./churn-demo; with --config, that file's locations)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Project config for the settings (default: built-in)."),
    ] = None,
    customers: Annotated[int, typer.Option(min=500, help="Customers to generate.")] = 5000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 42,
    trials: Annotated[int, typer.Option(min=1, help="Optuna trials per model.")] = 15,
    time_budget: Annotated[float, typer.Option(min=1, help="Tuning seconds per model.")] = 60,
    regenerate: Annotated[bool, typer.Option(help="Generate fresh data even if present.")] = False,
) -> None:
    """The main job end to end on generated data, from any folder: writes under ./churn-demo/.

    Generate, validate, check, features, train and register three models, score, monitor,
    report. A folder that cannot be written is a one-line error (exit code 2).
    """
    from pipelines.demo import DEFAULT_DEMO_DIR, demo_locations, prepare_demo_dir, run_demo

    settings: dict[str, Any] = {"training.n_trials": trials, "training.time_budget_s": time_budget}
    if out is None and config is None:
        out = DEFAULT_DEMO_DIR
    if out is not None:
        settings.update(demo_locations(prepare_demo_dir(out)))
    try:
        cfg = load_config(config, settings)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    summary = run_demo(
        cfg,
        n_customers=customers,
        seed=seed,
        regenerate=regenerate,
        say=lambda text: typer.echo(text, err=True),
    )
    uri = summary["mlflow_tracking_uri"]
    mlflow = Path(sys.executable).with_name("mlflow")
    typer.echo(f"\nMLflow UI: {mlflow} ui --backend-store-uri {uri}", err=True)
    _print_json(summary)


@app.command()
def score(
    config: ConfigOption = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Score as of this date YYYY-MM-DD (default: data end)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the risk list here (.parquet or .csv).")
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            envvar="CHURN_SCORE_DB_URL",
            help="SQLAlchemy URL of a database for the risk list (env CHURN_SCORE_DB_URL).",
        ),
    ] = None,
    db_table: Annotated[
        str | None, typer.Option(help="Table (\\[schema.]name) of the risk list in --db-url.")
    ] = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
    engine: ScoreEngineOption = "local",
) -> None:
    """Score every customer with the champion models; write the ranked risk list.

    Re-running a date replaces that date's rows (files atomically, the database table in one
    transaction). The latest list is also kept for the service (serving.risk_list_path).
    Exits 2 without writing when no champion is found or nobody is in the churn population
    at the date (no active customer, or no active subscription under subscription churn).
    """
    from pipelines.scoring import NobodyToScoreError, run_score
    from pipelines.spark_flows import run_score_spark
    from serving.scoring import ChampionMissingError

    run = _flow_for_engine(engine, local=run_score, spark=run_score_spark)
    cfg = _config(config, events, customers, subscriptions)
    try:
        summary = run(
            cfg,
            _parse_date(as_of) if as_of else None,
            out,
            db_url,
            db_table,
        )
    except (ChampionMissingError, NobodyToScoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    for warning in summary["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    _print_json(summary)


TaskOption = Annotated[
    str | None,
    typer.Option(help="churn | upsell | winback (default: monitoring.task)", case_sensitive=False),
]


def _compact_monitor_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The monitor's one-line JSON: verdict, lists and paths (details are in the JSON file)."""
    keep = (
        "task", "model", "reference_cutoff", "current_cutoff", "n_reference", "n_current",
        "alarm", "alarm_reasons", "drift_detected", "performance_decay", "exit_code", "html",
        "json", "mlflow_run_id", "performance_note",
    )  # fmt: skip
    compact = {k: summary.get(k) for k in keep}
    for key in ("feature_drift", "prediction_drift", "event_drift"):
        if summary.get(key):
            compact[f"{key}_alarms"] = summary[key]["alarms"]
    if summary.get("performance"):
        compact["performance"] = {
            k: summary["performance"].get(k) for k in ("cutoff", "decayed", "reasons", "realised")
        }
    if summary.get("retrain"):
        compact["retrain"] = summary["retrain"]
    return compact


@app.command()
def monitor(
    config: ConfigOption = None,
    task: TaskOption = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Cutoff of the current batch (default: latest day on the reference weekday).",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="Directory for the HTML report and JSON summary.")
    ] = None,
    retrain_on_drift: Annotated[
        bool | None,
        typer.Option(
            "--retrain-on-drift/--no-retrain-on-drift",
            help="Retrain when the alarm is raised (default: monitoring.retrain_on_alarm).",
        ),
    ] = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
) -> None:
    """Drift and realised performance of the champion; exit code 4 when the alarm is raised."""
    from pipelines.monitoring import run_monitor

    cfg = _config(config, events, customers, subscriptions)
    summary = run_monitor(
        cfg,
        task=task,
        as_of=_parse_date(as_of) if as_of else None,
        out_dir=out_dir,
        retrain_on_drift=retrain_on_drift,
        say=lambda text: typer.echo(text, err=True),
    )
    typer.echo(f"report: {summary['html']}", err=True)
    _print_json(_compact_monitor_summary(summary))
    if summary["alarm"]:
        raise typer.Exit(code=summary["exit_code"])


@app.command()
def retrain(
    config: ConfigOption = None,
    task: TaskOption = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials.")] = None,
    time_budget: Annotated[
        float | None, typer.Option(min=1, help="Tuning wall-clock budget in seconds.")
    ] = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
) -> None:
    """Refresh features, train a challenger, promote it only if it beats the champion.

    A failure leaves the registry aliases as they were (exit code 5).
    """
    from pipelines.monitoring import RETRAIN_FAILED_EXIT_CODE, run_retrain

    cfg = _config(
        config,
        events,
        customers,
        subscriptions,
        **{"training.n_trials": trials, "training.time_budget_s": time_budget},
    )
    summary = run_retrain(cfg, task=task, say=lambda text: typer.echo(text, err=True))
    _print_json(summary)
    if summary["status"] == "failed":
        raise typer.Exit(code=RETRAIN_FAILED_EXIT_CODE)


@app.command()
def report(
    config: ConfigOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="HTML file to write (default: <output_dir>/retention_report.html)."),
    ] = None,
    risk_list: Annotated[
        Path | None,
        typer.Option(help="Risk list from `churn score` (default: serving.risk_list_path)."),
    ] = None,
    events: EventsOption = None,
    customers: CustomersOption = None,
    subscriptions: SubscriptionsOption = None,
) -> None:
    """The retention report: one self-contained HTML page for retention teams."""
    from pipelines.report import run_report

    cfg = _config(config, events, customers, subscriptions)
    path = run_report(cfg, out, risk_list_path=risk_list, say=lambda t: typer.echo(t, err=True))
    _print_json({"report": str(path)})


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Interface (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes; each loads the models.")
    ] = 1,
    check: Annotated[
        bool, typer.Option("--check", help="Only check that the models are there; do not serve.")
    ] = False,
) -> None:
    """Serve the champion models over HTTP (BentoML): /score, /risk_list, /model_info."""
    import subprocess

    from serving.scoring import champion_versions
    from serving.settings import CONFIG_ENV, WORKERS_ENV, serve_command

    if config is None and Path("churn.yaml").is_file():
        config = Path("churn.yaml")
    cfg = _config(config)
    versions = champion_versions(cfg)
    uris = cfg.serving.model_uris_for(
        {t: cfg.training.task(t).registered_model_name for t in versions}
    )
    if versions.get("churn") is None:
        typer.echo(
            f"refusing to start: no churn model at {uris['churn']} in "
            f"{cfg.training.mlflow.registry_uri or cfg.training.mlflow.tracking_uri}: train one "
            "(`churn train --task churn`) or set serving.model_uris.churn",
            err=True,
        )
        raise typer.Exit(code=2)
    for task, version in versions.items():
        if version is None:
            typer.echo(f"warning: no {task} model at {uris[task]}: left empty", err=True)
    host = host or cfg.serving.host
    port = port or cfg.serving.port
    command = serve_command(host=host, port=port)
    env = {**os.environ, WORKERS_ENV: str(workers)}
    if config is not None:
        env[CONFIG_ENV] = str(Path(config).resolve())
    typer.echo(f"models {versions}; serving on http://{host}:{port}", err=True)
    if check:
        _print_json({"models": versions, "url": f"http://{host}:{port}", "command": command})
        return
    raise typer.Exit(code=subprocess.call(command, env=env))


@app.command()
def bento(
    config: ConfigOption = None,
    build: Annotated[bool, typer.Option(help="Run `bentoml build` after the export.")] = True,
) -> None:
    """Package the service: the champions into the BentoML model store, then `bentoml build`."""
    import shutil
    import subprocess

    from serving.bento_models import export_champions

    if config is None and Path("churn.yaml").is_file():
        config = Path("churn.yaml")
    if build and not Path("bentofile.yaml").is_file():
        raise typer.BadParameter("run it in the project directory: bentofile.yaml not found")
    tags = export_champions(_config(config))
    typer.echo(f"exported the champions to the BentoML model store: {tags}", err=True)
    summary: dict[str, Any] = {"models": tags}
    if build:
        bentoml = shutil.which("bentoml") or str(Path(sys.executable).with_name("bentoml"))
        completed = subprocess.run(
            [bentoml, "build", ".", "--output", "tag"], capture_output=True, text=True
        )
        if completed.returncode != 0:
            typer.echo(completed.stdout + completed.stderr, err=True)
            raise typer.Exit(code=completed.returncode)
        tag = completed.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
        typer.echo(f"built {tag}: `bentoml serve {tag}`, `bentoml containerize {tag}`", err=True)
        summary["bento"] = tag
    _print_json(summary)


#: Errors that mean "your input or setup is wrong", shown as one readable line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (DataContractError, FileNotFoundError, ValueError)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: input problems become a one-line message, not a traceback."""
    try:
        app(args=argv, prog_name="churn")  # usage errors: typer prints them, exits 2
    except KeyboardInterrupt:
        sys.exit(130)
    except USER_ERRORS as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
