"""What a run leaves in MLflow besides numbers: where artifacts go, its dataset, figures, model, registry.

- :func:`experiment_id`: an experiment created by this package keeps its artifacts under the run's
  ``tracking.output_dir`` (``<output_dir>/mlartifacts``) when the store is local (sqlite or a folder),
  instead of MLflow's default ``./mlruns`` of whatever folder the command ran from. A tracking server
  (``http://``) decides for itself.
- :func:`log_training_corpus`: the training split as the run's dataset input (``context=training``),
  so the runs table's *Dataset* column names it.
- :func:`log_sentence_transformer`: the best model through MLflow's sentence-transformers flavour, with
  an input example and a signature, so that ``mlflow.sentence_transformers.load_model`` and
  ``mlflow.pyfunc.load_model(...).predict([...])`` give the folder's embeddings. It is the run's only
  copy of the weights in the store (one ``LoggedModel`` named ``model``, linked to the run).
- :func:`register_model`: a new version of a registered model from a run's logged model, tagged and
  described by the caller (a sweep: sweep, trial and the trial's metrics).
- :func:`log_figure`: a matplotlib figure as a run artifact (the before/after comparison).
- :func:`runs_view_url`: the UI page of an experiment's training runs (MLflow 3 opens an experiment on
  its GenAI traces view otherwise).

MLflow only: no Ray.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from imascl_ray.errors import InputError
from imascl_ray.tracking.client import client as _client

logger = logging.getLogger(__name__)

ARTIFACTS_FOLDER = "mlartifacts"
"""Under ``tracking.output_dir``: the artifact root of experiments in a local store."""
MODEL_NAME = "model"
"""The name of a run's logged model (``runs:/<run id>/model`` resolves to it)."""
INPUT_EXAMPLE = ["Open the file", "Ouvrir le fichier", "ファイルを開く", "파일 열기", "Открыть файл"]
"""What the logged model records as its input example (and infers its signature from)."""


@dataclass(frozen=True)
class LoggedModelRef:
    """A logged model: its id and the URI that loads it (``models:/<model id>``)."""

    model_id: str
    model_uri: str


def is_local_store(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine (sqlite, a folder), whose default artifact root would be
    ``./mlruns`` of the current folder."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file", "sqlite") or (len(scheme) == 1 and os.name == "nt")


def artifact_location(uri: str, output_dir: str | Path | None = None) -> str | None:
    """Where a new experiment's artifacts go in a local store: ``<output_dir>/mlartifacts``, or without an
    output folder ``mlartifacts`` next to the sqlite file; None (the server's or MLflow's own choice)
    otherwise."""
    if not is_local_store(uri):
        return None
    if output_dir is not None:
        return str(Path(output_dir).resolve() / ARTIFACTS_FOLDER)
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).resolve().parent / ARTIFACTS_FOLDER)
    return None


def experiment_id(uri: str, name: str, output_dir: str | Path | None = None) -> str:
    """The id of experiment ``name``, created (with :func:`artifact_location`) if it does not exist."""
    client = _client(uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        location = found.artifact_location or ""
        if output_dir is not None and is_local_store(uri) and ARTIFACTS_FOLDER not in location:
            logger.warning(
                "[mlflow] experiment %r keeps its artifacts in %s (it was made before this version); "
                "a new experiment name puts them under %s",
                name,
                location,
                Path(output_dir).resolve(),
            )
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri, output_dir))


def log_training_corpus(uri: str, run_id: str, path: str | Path, name: str) -> None:
    """Log the training split (a corpus Parquet file) as the run's dataset input, context ``training``."""
    import mlflow.data
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    frame = pd.read_parquet(path)
    with warnings.catch_warnings():  # MLflow 3.17 warns that its local source is registered twice, and
        warnings.simplefilter("ignore")  # pandas about an argument MLflow's digest passes: noise for users
        dataset = mlflow.data.from_pandas(frame, source=str(Path(path).resolve()), name=name)
    # What mlflow.log_input(dataset, context="training") logs, for a run that is not the active one.
    entry = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])
    _client(uri).log_inputs(run_id, datasets=[entry])


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's ``log_model`` reads the global tracking URI: set it for the call, then put it back (and
    the ``MLFLOW_TRACKING_URI`` variable, which ``set_tracking_uri`` also changes)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def log_sentence_transformer(uri: str, run_id: str, model_dir: str | Path) -> LoggedModelRef:
    """Log the sentence-transformers folder ``model_dir`` as the run's MLflow model ``model``.

    The model is loaded on CPU (no remote code), its signature inferred from :data:`INPUT_EXAMPLE`, and
    the pip requirements are MLflow's defaults for the flavour (pinned to the installed versions)
    rather than inferred in a subprocess. The folder's ``README.md`` (the model card) goes with it.
    """
    import mlflow
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    client = _client(uri)
    run = client.get_run(run_id)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    signature = mlflow.models.infer_signature(INPUT_EXAMPLE, model.encode(INPUT_EXAMPLE))
    # The LoggedModel is made here, in the run's experiment: log_model alone would put it in the
    # active experiment (MLflow's Default one), i.e. in ./mlruns of the current folder.
    logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id)
    with _fluent_tracking_uri(uri):
        info = mlflow.sentence_transformers.log_model(
            model,
            name=MODEL_NAME,
            run_id=run_id,
            model_id=logged.model_id,
            signature=signature,
            input_example=INPUT_EXAMPLE,
            pip_requirements=mlflow.sentence_transformers.get_default_pip_requirements(),
        )
    return LoggedModelRef(info.model_id, f"models:/{info.model_id}")


def logged_model_of(uri: str, run_id: str, name: str = MODEL_NAME) -> LoggedModelRef | None:
    """The run's logged model called ``name`` (the latest, if it logged several), or None."""
    client = _client(uri)
    outputs = client.get_run(run_id).outputs
    found = None
    for output in (outputs.model_outputs if outputs else []) or []:
        model = client.get_logged_model(output.model_id)
        if model.name == name:
            found = LoggedModelRef(model.model_id, f"models:/{model.model_id}")
    return found


def register_model(
    uri: str,
    name: str,
    *,
    run_id: str,
    model_dir: str | Path | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
):
    """A new version of registered model ``name`` (created if needed) from the run's logged model.

    A run that has no logged model yet (a sweep's trial stopped before it finished) gets one from
    ``model_dir`` first. Returns the ``ModelVersion``.
    """
    from mlflow.exceptions import MlflowException

    if not name or not name.strip():
        raise InputError("tracking.register_as: a registered model needs a name")
    client = _client(uri)
    logged = logged_model_of(uri, run_id)
    if logged is None:
        if model_dir is None:
            raise InputError(f"MLflow run {run_id} has no logged model to register")
        logged = log_sentence_transformer(uri, run_id, model_dir)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # The version's source is the logged model's own location: given ``models:/<id>``, MLflow's sqlite
    # registry looks the model up through the global tracking URI, not this client's (so, set it too).
    with _fluent_tracking_uri(uri):
        version = client.create_model_version(
            name,
            source=client.get_logged_model(logged.model_id).artifact_location,
            run_id=run_id,
            tags={key: str(value) for key, value in (tags or {}).items()},
            description=description,
            model_id=logged.model_id,
        )
    logger.info(
        "[mlflow] registered %s version %s (models:/%s/%s)", name, version.version, name, version.version
    )
    return version


def log_figure(uri: str | None, run_id: str, figure: object, artifact: str) -> None:
    """Save ``figure`` (a matplotlib ``Figure``) as the run's artifact ``artifact`` (``figures/x.png``)."""
    _client(uri).log_figure(run_id, figure, artifact)


def metrics_description(metrics: Mapping[str, float], title: str) -> str:
    """A model version's description: ``title`` then one ``key: value`` line per metric, sorted."""
    lines = [title] + [f"{key}: {value:.4f}" for key, value in sorted(metrics.items())]
    return "\n".join(lines)


def runs_view_url(experiment: str, base_url: str = "http://127.0.0.1:5000") -> str:
    """The UI page of experiment ``experiment`` (an id) that lists its training runs and compares them."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment}/runs"
