"""Serving benchmark: our ``POST /score`` against the framework's floor, over real HTTP.

    python -m benchmarks.serving                  # ~1 minute on 2 cores (+20 s fixture)
    python -m benchmarks.serving --smoke          # tiny request counts (the smoke test)

In ONE run, on the same tiny trained models (built once into ``--root``, see
:func:`prepare_fixture`):

1. in-process: prediction time per row of the service's fast path (``serving.rows.
   RowScorer``: calibrated scores of three models, reasons, segments, action) for
   single-customer calls and for 100-customer calls, next to the raw ``inplace_predict`` of
   the churn booster;
2. the floor: ``benchmarks/floor_service.py``, a minimal BentoML service returning the raw
   XGBoost probability of the same churn booster for one encoded row (an ``async`` API like
   ours, the same number of workers);
3. our service (``serving.service:ChurnService``, started like ``churn serve`` does) with
   single-customer and 100-customer ``/score`` requests (reasons, segments, actions).

Each scenario runs at concurrency 1, 10 and 50 over loopback, bounded by a request count and a
time limit, and reports p50/p95/p99 latency, requests/s, customers/s and errors (exceptions
and non-2xx answers). Floor and service scenarios alternate so that background load on the
machine hits both alike. The load generator is aiohttp on one asyncio loop: it needs less CPU
per request than httpx's async pool, which on 2 shared cores became the bottleneck itself at
concurrency 50.

The last line is JSON with at least ``errors_c50`` (errors of our service at concurrency 50,
single and batch), ``score_vs_floor_c10`` (our single-customer requests/s at concurrency 10 /
the floor's), ``batch_speedup`` (customers/s with 100-customer requests / with single-customer
requests, at concurrency 10), the same two ratios at every concurrency, and the per-scenario
figures.

The module also holds the harness the service tests use: :func:`prepare_fixture`,
:func:`running_server` (``bentoml serve`` on a free port, wait for ``/readyz``, always
terminate) and :func:`free_port`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import trained_store

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 10, 50)
BATCH_SIZE = 100
FLOOR_TARGET = "benchmarks.floor_service:FloorService"
SERVICE_TARGET = "serving.service:ChurnService"


# --------------------------------------------------------------------------------------------
# the fixture: data, three trained champions, a batch risk list
# --------------------------------------------------------------------------------------------


def prepare_fixture(root: Path, *, n_customers: int = 600, seed: int = 7) -> dict[str, Any]:
    """A complete serving set-up in ``root``, built once (later calls read ``fixture.json``).

    Synthetic CRM data (``features.synthetic``), snapshots over four monthly cutoffs
    (``features.snapshots``), churn, up-sell and win-back models trained with
    ``training.train.train`` (one Optuna trial, tiny boosting budget) into an MLflow store in
    ``root`` (all three become champions), all three by ``benchmarks/trained_store.py``; the
    batch risk list of ``churn score`` at the end of the data, the feature table at that date
    (request rows), and the project config ``churn.yaml`` pointing at all of it. Returns the
    paths as a dict.
    """
    import yaml

    root = Path(root)
    marker = root / "fixture.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))
    from features.snapshots import build_features
    from pipelines.config import load_config
    from pipelines.scoring import run_score

    root.mkdir(parents=True, exist_ok=True)
    history = trained_store.generate_history(root, n_customers=n_customers, seed=seed)
    training = {
        **trained_store.TINY_TRAINING,
        "n_jobs": 1,
        "mlflow": trained_store.mlflow_settings(root, "serving"),
    }
    config = trained_store.project_settings(
        history.paths, root / "output", training=training, serving={"reload_interval_s": 0}
    )
    config_path = root / "churn.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    cfg = load_config(config_path, environ={})
    trained_store.train_tasks(cfg.training, history)
    run_score(cfg, history.data_end.date())
    data = history.data
    features, _ = build_features(
        data.events,
        history.data_end,
        customers=data.customers,
        subscriptions=data.subscriptions,
        params=cfg.features,
        stats=history.test_stats,
        label_params=cfg.labels,
    )
    features_path = root / "features.parquet"
    features.reset_index().to_parquet(features_path, index=False)
    payload = {
        "root": str(root),
        "config": str(config_path),
        "features": str(features_path),
        **{name: str(history.paths[name]) for name in ("events", "customers", "subscriptions")},
        "data_end": str(history.data_end.date()),
        "tracking_uri": cfg.training.mlflow.tracking_uri,
    }
    marker.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return payload


def feature_rows(features_path: str | Path, model_features: Sequence[str]) -> list[dict]:
    """The feature table as ``CustomerFeatures`` payloads (model features, segments,
    ``is_active`` and the value column; NaN as null)."""
    from serving.scoring import SEGMENT_COLUMNS

    table = pd.read_parquet(features_path)
    wanted = {*model_features, "is_active", "value_365d", *SEGMENT_COLUMNS} - {"customer_id"}
    keep = [c for c in table.columns if c in wanted]
    rows = []
    for record in table[["customer_id", *keep]].to_dict(orient="records"):
        customer_id = str(record.pop("customer_id"))
        features = {}
        for name, value in record.items():
            if isinstance(value, np.generic):
                value = value.item()
            if value is None or (isinstance(value, float) and not np.isfinite(value)):
                value = None
            elif isinstance(value, bool):
                value = float(value)
            features[name] = value
        rows.append({"customer_id": customer_id, "features": features})
    return rows


# --------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with code {process.returncode} before it was ready:\n"
                + _log_tail(log_path)
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s:\n" + _log_tail(log_path))


def stop_process_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group (supervisor and workers), SIGKILL after grace."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass(frozen=True)
class ServerSpec:
    """A ``bentoml serve`` command line listening on ``port``, its extra environment, its log."""

    command: Sequence[str]
    port: int
    log_path: Path
    env: Mapping[str, str] | None = None


@contextlib.contextmanager
def running_servers(specs: Sequence[ServerSpec], ready_timeout_s: float = 120.0) -> Iterator:
    """Start every server in its own process group at once, wait until each ``/readyz``
    answers 200 and yield their base URLs; always stop them all.

    Output goes to the log files, never to a pipe: an unread pipe fills up and blocks the
    server's logging, which stalls every request.
    """
    processes: list[tuple[subprocess.Popen, ServerSpec]] = []
    with contextlib.ExitStack() as stack:
        try:
            for spec in specs:
                spec.log_path.parent.mkdir(parents=True, exist_ok=True)
                log = stack.enter_context(open(spec.log_path, "wb"))
                process = subprocess.Popen(
                    list(spec.command),
                    cwd=REPO,
                    env={**os.environ, **(spec.env or {})},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                processes.append((process, spec))
            urls = []
            for process, spec in processes:
                url = f"http://127.0.0.1:{spec.port}"
                _wait_ready(url, process, spec.log_path, ready_timeout_s)
                urls.append(url)
            yield urls
        finally:
            for process, _ in processes:
                stop_process_group(process)


@contextlib.contextmanager
def running_server(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    log_path: Path,
    ready_timeout_s: float = 120.0,
) -> Iterator[str]:
    """One server (see :func:`running_servers`); yields its base URL."""
    spec = ServerSpec(command=command, port=port, log_path=log_path, env=env)
    with running_servers([spec], ready_timeout_s) as urls:
        yield urls[0]


def service_command(port: int) -> list[str]:
    """Our service, started exactly as ``churn serve`` starts it."""
    from serving.settings import serve_command

    return serve_command(host="127.0.0.1", port=port)


def floor_command(port: int) -> list[str]:
    from serving.settings import serve_command

    command = serve_command(host="127.0.0.1", port=port)
    command[command.index("serving.service:ChurnService")] = FLOOR_TARGET
    return command


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """One scenario: latencies of the completed requests, errors, wall time."""

    name: str
    concurrency: int
    customers_per_request: int
    latencies_ms: np.ndarray
    errors: int
    error_kinds: dict[str, int]
    seconds: float

    def summary(self) -> dict[str, Any]:
        done = self.latencies_ms.size
        requests_per_s = done / self.seconds if self.seconds > 0 else 0.0

        def q(p: float) -> float | None:
            return round(float(np.percentile(self.latencies_ms, p)), 2) if done else None

        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "customers_per_request": self.customers_per_request,
            "requests": int(done),
            "errors": int(self.errors),
            "error_kinds": self.error_kinds,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(requests_per_s, 1),
            "customers_per_s": round(requests_per_s * self.customers_per_request, 1),
            "p50_ms": q(50),
            "p95_ms": q(95),
            "p99_ms": q(99),
        }


async def _load(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    requests: int,
    max_seconds: float,
    headers: Mapping[str, str],
) -> tuple[list[float], int, dict[str, int], float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=60)
    latencies: list[float] = []
    error_kinds: dict[str, int] = {}
    issued = 0
    all_headers = {"Content-Type": "application/json", **headers}
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def one(body: bytes) -> None:
            started = time.perf_counter()
            try:
                async with session.post(path, data=body, headers=all_headers) as response:
                    await response.read()
                    if response.status >= 300:
                        key = f"HTTP {response.status}"
                        error_kinds[key] = error_kinds.get(key, 0) + 1
                        return
            except Exception as exc:  # every failure is counted, none stops the run
                key = type(exc).__name__
                error_kinds[key] = error_kinds.get(key, 0) + 1
                return
            latencies.append((time.perf_counter() - started) * 1000.0)

        for body in bodies[: min(len(bodies), concurrency, 5)]:  # warm connections
            await one(body)
        latencies.clear()
        error_kinds.clear()
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                body = bodies[issued % len(bodies)]
                issued += 1
                await one(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, sum(error_kinds.values()), error_kinds, elapsed


def run_load(
    name: str,
    url: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    customers_per_request: int,
    concurrency: int,
    requests: int,
    max_seconds: float,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    latencies, errors, kinds, seconds = asyncio.run(
        _load(
            url,
            path,
            bodies,
            concurrency=concurrency,
            requests=requests,
            max_seconds=max_seconds,
            headers=headers or {},
        )
    )
    return LoadResult(
        name=name,
        concurrency=concurrency,
        customers_per_request=customers_per_request,
        latencies_ms=np.asarray(latencies, dtype=np.float64),
        errors=errors,
        error_kinds=kinds,
        seconds=seconds,
    )


# --------------------------------------------------------------------------------------------
# in-process timings
# --------------------------------------------------------------------------------------------


def _per_call_ms(func, repeat: int) -> float:
    func()
    started = time.perf_counter()
    for _ in range(repeat):
        func()
    return (time.perf_counter() - started) / repeat * 1000.0


def in_process_timings(state, rows: Sequence[dict], repeat: int) -> dict[str, float]:
    """Fast-path time per row for single-customer and 100-customer calls, raw booster time."""
    from serving.schemas import CustomerFeatures

    if state.rows is None:
        raise RuntimeError("the fast path is off for these models")
    customers = [CustomerFeatures(**r) for r in rows]
    single = customers[:1]
    batch = (customers * (BATCH_SIZE // len(customers) + 1))[:BATCH_SIZE]
    batch = [
        c.model_copy(update={"customer_id": f"{c.customer_id}-{i}"}) for i, c in enumerate(batch)
    ]
    churn = state.rows.tasks["churn"]
    checked = state.rows.check(single)
    matrix = churn.matrix(checked.numeric, checked.strings, np.array([0]))
    single_ms = _per_call_ms(lambda: state.rows.score(single), repeat)
    batch_ms = _per_call_ms(lambda: state.rows.score(batch), max(3, repeat // 20))
    raw_ms = _per_call_ms(lambda: churn.booster.inplace_predict(matrix), repeat)
    return {
        "fast_path_single_ms_per_row": round(single_ms, 3),
        "fast_path_batch100_ms_per_row": round(batch_ms / BATCH_SIZE, 3),
        "raw_inplace_predict_ms_per_row": round(raw_ms, 3),
    }


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------


def _booster_path(cfg) -> str:
    """The churn champion's booster file (the floor serves the very same booster)."""
    import mlflow

    from training.config import configure_mlflow

    configure_mlflow(cfg.training.mlflow)
    name = cfg.training.task("churn").registered_model_name
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    found = sorted(local.rglob("booster.*"))
    if not found:
        raise FileNotFoundError(f"no booster file in the churn champion at {local}")
    return str(found[0])


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.config import load_config

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="serving-bench-"))
    started = time.perf_counter()
    fixture = prepare_fixture(root, n_customers=args.customers)
    _print(f"fixture ready in {time.perf_counter() - started:.1f} s: {root}")
    cfg = load_config(Path(fixture["config"]), environ={})

    from serving.state import load_state

    state = load_state(cfg)
    model_features = sorted({f for m in state.models.tasks.values() for f in m.features})
    rows = feature_rows(fixture["features"], model_features)
    timings = in_process_timings(state, rows, args.inprocess_repeat)
    _print(f"in-process: {json.dumps(timings)}")

    # request bodies: the same customers for both services
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    picked = [rows[i] for i in order[: min(len(rows), 200)]]
    single_bodies = [json.dumps({"customers": [r]}).encode() for r in picked]
    batch_bodies = []
    for _ in range(8):
        chosen = [rows[i] for i in rng.choice(len(rows), size=BATCH_SIZE, replace=False)]
        batch_bodies.append(json.dumps({"customers": chosen}).encode())
    from serving.schemas import CustomerFeatures

    churn = state.rows.tasks["churn"]
    checked = state.rows.check([CustomerFeatures(**r) for r in picked])
    encoded = churn.matrix(checked.numeric, checked.strings, np.arange(len(picked)))
    floor_bodies = [
        json.dumps({"x": [None if not np.isfinite(v) else float(v) for v in row]}).encode()
        for row in encoded
    ]

    logs = root / "logs"
    floor_port, service_port = free_port(), free_port()
    floor_env = {
        "CHURN_FLOOR_BOOSTER": _booster_path(cfg),
        "CHURN_SERVICE_WORKERS": str(args.workers),
    }
    service_env = {
        "CHURN_CONFIG": fixture["config"],
        "CHURN_SERVICE_WORKERS": str(args.workers),
    }
    results: list[dict[str, Any]] = []
    servers = [
        ServerSpec(floor_command(floor_port), floor_port, logs / "floor.log", floor_env),
        ServerSpec(service_command(service_port), service_port, logs / "service.log", service_env),
    ]
    with running_servers(servers) as (floor_url, service_url):
        _print(f"floor at {floor_url}, service at {service_url}")
        for concurrency in args.concurrency:
            scale = {1: args.requests_c1, 10: args.requests_c10}.get(concurrency, args.requests)
            plans = [
                ("floor_single", floor_url, "/predict", floor_bodies, 1, scale),
                ("score_single", service_url, "/score", single_bodies, 1, scale),
                (
                    "score_batch100",
                    service_url,
                    "/score",
                    batch_bodies,
                    BATCH_SIZE,
                    max(concurrency * 2, scale // args.batch_divisor),
                ),
            ]
            for name, url, path, bodies, per_request, requests in plans:
                result = run_load(
                    name,
                    url,
                    path,
                    bodies,
                    customers_per_request=per_request,
                    concurrency=concurrency,
                    requests=requests,
                    max_seconds=args.max_seconds,
                ).summary()
                results.append(result)
                _print(
                    f"{name:>15} c={concurrency:<3} {result['requests']:>6} req "
                    f"{result['requests_per_s']:>8.1f} req/s {result['customers_per_s']:>9.1f} "
                    f"cust/s  p50 {result['p50_ms']} p95 {result['p95_ms']} p99 "
                    f"{result['p99_ms']} ms  errors {result['errors']} {result['error_kinds']}"
                )

    def find(name: str, concurrency: int) -> dict[str, Any] | None:
        return next(
            (r for r in results if r["name"] == name and r["concurrency"] == concurrency), None
        )

    def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
        if not a or not b or not b[key]:
            return None
        return round(a[key] / b[key], 3)

    c_mid = 10 if 10 in args.concurrency else args.concurrency[0]
    c_high = 50 if 50 in args.concurrency else args.concurrency[-1]
    errors_high = sum(
        r["errors"]
        for r in results
        if r["concurrency"] == c_high and r["name"] in ("score_single", "score_batch100")
    )

    def by_concurrency(a: str, b: str, key: str) -> dict[str, float | None]:
        return {str(c): ratio(find(a, c), find(b, c), key) for c in args.concurrency}

    return {
        "errors_c50": errors_high,
        "score_vs_floor_c10": ratio(
            find("score_single", c_mid), find("floor_single", c_mid), "requests_per_s"
        ),
        "batch_speedup": ratio(
            find("score_batch100", c_mid), find("score_single", c_mid), "customers_per_s"
        ),
        "score_vs_floor": by_concurrency("score_single", "floor_single", "requests_per_s"),
        "batch_speedups": by_concurrency("score_batch100", "score_single", "customers_per_s"),
        "floor_errors": sum(r["errors"] for r in results if r["name"] == "floor_single"),
        "workers": args.workers,
        **timings,
        "scenarios": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="Fixture directory (reused when it holds one).")
    parser.add_argument("--customers", type=int, default=600, help="Customers of the fixture.")
    parser.add_argument("--workers", type=int, default=1, help="Worker processes of /score.")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=list(CONCURRENCY)
    )
    parser.add_argument("--requests-c1", type=int, default=400)
    parser.add_argument("--requests-c10", type=int, default=1500)
    parser.add_argument("--requests", type=int, default=2500, help="Requests at concurrency 50.")
    parser.add_argument(
        "--batch-divisor", type=int, default=10, help="100-customer requests = requests / this."
    )
    parser.add_argument("--max-seconds", type=float, default=20.0, help="Cap per scenario.")
    parser.add_argument("--inprocess-repeat", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="Tiny request counts.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests_c1, args.requests_c10, args.requests = 10, 30, 60
        args.batch_divisor, args.max_seconds, args.inprocess_repeat = 10, 5.0, 10
        args.customers = min(args.customers, 600)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the summary as the last line (JSON) and return it."""
    summary = run_benchmark(parse_args(argv))
    print(json.dumps(summary, default=str), flush=True)
    return summary


if __name__ == "__main__":
    main()
