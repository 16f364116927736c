"""Tracking URIs without their secrets: redaction for anything shown or stored, credentials moved to MLflow's
environment variables, and the MLflow settings every Ray worker must see.

A tracking URI may carry credentials (``https://user:token@host``). Written into a run's params, a
sweep's ``sweep.json``, a log line or Ray Train's ``train_loop_config`` (which Ray exports to its
dashboard), they would reach everyone who can read those. So the URI is split once on the driver: the
user name and password go to ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (MLflow's own
basic-auth settings, which it reads on every request), and every other place sees the URI without them.
MLflow and the config only; no Ray.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, MutableMapping
from urllib.parse import unquote, urlsplit, urlunsplit

from imascl_ray.config import Config

#: MLflow's authentication and TLS settings (a worker without them cannot reach a secured server).
CREDENTIAL_ENVIRONMENT = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)
#: MLflow's HTTP retry settings: the user's choice should hold on the workers as on the driver.
RETRY_ENVIRONMENT = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)
#: What a redacted URI shows in place of its credentials.
HIDDEN = "***"

# ``scheme://userinfo@`` anywhere in a text; userinfo is everything up to the last ``@`` before the host.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"]+)@")


def redact_uri(uri: str | None) -> str | None:
    """``uri`` with its user name and password replaced by ``***`` (``https://***@host/``); else as is."""
    if uri is None:
        return None
    return redact_text(uri)


def redact_text(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` (a log line, an override, a param) as ``scheme://***@``."""
    return _USERINFO.sub(lambda match: f"{match['scheme']}{HIDDEN}@", text)


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """``(uri without credentials, {"MLFLOW_TRACKING_USERNAME": ..., "MLFLOW_TRACKING_PASSWORD": ...})``.

    Only http(s) URIs carry credentials MLflow can use; a redacted one (``***``) yields none, so that a
    URI read back from ``sweep.json`` relies on the environment instead.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, {}
    userinfo, _, host = parts.netloc.rpartition("@")
    clean = urlunsplit(parts._replace(netloc=host))
    user, has_password, password = userinfo.partition(":")
    if user == HIDDEN or not user:
        return clean, {}
    found = {"MLFLOW_TRACKING_USERNAME": unquote(user)}
    if has_password:
        found["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return clean, found


def adopt_credentials(uri: str | None, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Move the credentials of ``uri`` into MLflow's environment variables; return the URI without them.

    Idempotent. Credentials written in the URI win over ones already in the environment (the URI is
    the more specific choice).
    """
    if uri is None:
        return None
    environ = os.environ if environ is None else environ
    clean, credentials = split_credentials(uri)
    environ.update(credentials)
    return clean


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The MLflow credential and retry variables set in ``environ`` (default: this process's)."""
    environ = os.environ if environ is None else environ
    return {key: environ[key] for key in CREDENTIAL_ENVIRONMENT + RETRY_ENVIRONMENT if key in environ}


def without_credentials(config: Config) -> Config:
    """``config`` with ``tracking.mlflow_uri`` cleared of credentials, which :func:`adopt_credentials`
    moves into the environment: what goes into params, Ray Train's ``train_loop_config`` or a pickled
    Tune trainable from then on has none."""
    clean = adopt_credentials(config.tracking.mlflow_uri)
    if clean == config.tracking.mlflow_uri:
        return config
    return dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, mlflow_uri=clean))
