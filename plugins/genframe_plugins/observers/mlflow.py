"""MLflow tracking for a run (``pip install 'genframe[mlflow]'``): parameters, losses, metrics, protocols, images.

On when the spec lists it (``trackers: [mlflow]``) or ``MLFLOW_TRACKING_URI`` is set, which also
says where to log (a server, ``sqlite:///mlflow.db``, a folder); ``MLFLOW_EXPERIMENT_NAME`` names
the experiment (default ``genframe``). The flattened spec becomes the run's parameters; each
stage's losses are metrics ``<stage>/<loss>`` at its steps, each evaluation's results
``<stage>/eval/<name>``, with its protocol and sample grids as artifacts. The MLflow run's id is
kept in the run folder, so that ``--resume`` continues the same MLflow run. Through the client
API only: no global active run is started, so user code's own MLflow runs are left alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from genframe import hookimpl
from genframe_plugins.observers._trackers import enabled, flat, last_protocol, needed, remember, remembered

_RUNS: dict[str, tuple[object, str]] = {}  # run folder -> (client, MLflow run id)
PARAMS_PER_CALL = 100  # MLflow's limit on parameters in one batch
PARAM_LENGTH = 6000  # and on the length of a parameter's value


@hookimpl
def genframe_run_started(run):
    if not enabled(run, "mlflow", ("MLFLOW_TRACKING_URI",)):
        return
    needed("mlflow")
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = remembered(run, "mlflow") if run.resumed else None
    if run_id is None:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "genframe"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run_id = client.create_run(experiment_id, run_name=run.name,
                                   tags={"genframe.run_folder": run.url, "genframe.device": run.device}).info.run_id
        params = [Param(k, v[:PARAM_LENGTH]) for k, v in flat(run.spec).items()]
        for start in range(0, len(params), PARAMS_PER_CALL):
            client.log_batch(run_id, params=params[start:start + PARAMS_PER_CALL])
        remember(run, "mlflow", run_id)
    else:
        client.update_run(run_id, status="RUNNING")
    _RUNS[run.url] = (client, run_id)


def _metrics(values: dict, prefix: str, step: int) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(f"{prefix}/{k}", float(v), now, step) for k, v in values.items() if isinstance(v, (int, float))]


@hookimpl
def genframe_step_end(run, stage, step, total_steps, losses):
    if run.url in _RUNS:
        client, run_id = _RUNS[run.url]
        client.log_batch(run_id, metrics=_metrics(losses, stage, step))


@hookimpl
def genframe_evaluated(run, stage, step, results, images):
    if run.url not in _RUNS:
        return
    client, run_id = _RUNS[run.url]
    if results:
        client.log_batch(run_id, metrics=_metrics(results, f"{stage}/eval", step))
    with tempfile.TemporaryDirectory() as folder:
        if results:
            protocol = Path(folder) / f"{stage}-{step:07d}.json"
            protocol.write_text(json.dumps(last_protocol(run, stage, step), indent=1))
            client.log_artifact(run_id, str(protocol), "protocols")
        for rel in images.values():
            path = Path(folder) / Path(rel).name
            path.write_bytes(run.read_bytes(rel))
            client.log_artifact(run_id, str(path), str(Path(rel).parent))


@hookimpl
def genframe_run_finished(run, status, error):
    if run.url in _RUNS:
        client, run_id = _RUNS.pop(run.url)
        client.set_terminated(run_id, {"completed": "FINISHED", "pruned": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))
