"""What a service worker reads when it starts, and the command line that starts the service.

**Configuration.** The project YAML named by ``CHURN_CONFIG`` (else ``./churn.yaml`` when it
exists, else the defaults), with its environment overrides; its ``serving:`` section
(``serving.config.ServingConfig``) holds the model URIs, limits, reload interval and the NAME
of the environment variable with the API key. Worker processes: ``CHURN_SERVICE_WORKERS``
(default 1; each worker loads the models and checks the registry on its own).

**Connections.** ``bentoml serve`` closes idle keep-alive connections after 5 s (uvicorn's
default), exactly when clients still reuse them (httpx keeps them 5 s, aiohttp 15 s, load
balancers 60 s): a request sent on a connection the server is closing at that moment fails
with a reset (httpx ``ReadError``/``RemoteProtocolError``, aiohttp
``ServerDisconnectedError``). :func:`serve_command` (``churn serve``) keeps them 75 s.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import ProjectConfig, load_config

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "SERVICE_TARGET",
    "WORKERS_ENV",
    "ServiceSettings",
    "load_settings",
    "serve_command",
    "worker_count",
]

#: Environment variable naming the project config file the service reads.
CONFIG_ENV = "CHURN_CONFIG"
#: Environment variable with the number of worker processes (default 1).
WORKERS_ENV = "CHURN_SERVICE_WORKERS"
#: Config file used when ``CHURN_CONFIG`` is not set and the file exists in the working dir.
DEFAULT_CONFIG_FILE = "churn.yaml"
#: What ``bentoml serve`` serves (``bentofile.yaml`` names the same).
SERVICE_TARGET = "serving.service:ChurnService"


@dataclass(frozen=True)
class ServiceSettings:
    """What a worker reads at start: the project config and the API key (if any)."""

    config: ProjectConfig
    config_path: str | None
    api_key: str | None = field(default=None, repr=False)

    @property
    def max_request_bytes(self) -> int:
        return self.config.serving.max_request_bytes


def load_settings(environ: Mapping[str, str] | None = None) -> ServiceSettings:
    """The config named by ``CHURN_CONFIG`` (else ``./churn.yaml`` if present, else defaults)
    with its environment overrides, and the API key from ``serving.api_key_env``."""
    environ = dict(os.environ if environ is None else environ)
    path = environ.get(CONFIG_ENV) or None
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    config = load_config(Path(path) if path else None, environ=environ)
    api_key = environ.get(config.serving.api_key_env) or None
    return ServiceSettings(config=config, config_path=path, api_key=api_key)


def worker_count(environ: Mapping[str, str] | None = None) -> int:
    """``CHURN_SERVICE_WORKERS`` as a number of worker processes (1 when unset or invalid)."""
    environ = os.environ if environ is None else environ
    try:
        return max(1, int(environ.get(WORKERS_ENV, "1")))
    except ValueError:
        return 1


def serve_command(
    *,
    host: str,
    port: int,
    timeout_keep_alive_s: int = 75,
    development: bool = False,
) -> list[str]:
    """The ``bentoml serve`` command line of the service (``churn serve`` runs it).

    ``timeout_keep_alive_s``: uvicorn closes idle keep-alive connections after 5 s by
    default, the same age at which clients (httpx: 5 s, aiohttp: 15 s, browsers and load
    balancers: 60 s and more) still reuse them; a request sent on a connection the server is
    closing at that moment fails with a connection reset. An idle timeout longer than any
    client's closes that race.
    """
    executable = shutil.which("bentoml") or str(Path(sys.executable).with_name("bentoml"))
    command = [
        executable,
        "serve",
        SERVICE_TARGET,
        "--host",
        host,
        "--port",
        str(port),
        "--timeout-keep-alive",
        str(int(timeout_keep_alive_s)),
    ]
    if development:
        command.append("--development")
    return command
