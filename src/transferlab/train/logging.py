"""Where training metrics go: `metrics.jsonl` always, TensorBoard and MLflow when the recipe asks.

metrics.jsonl gets one JSON object per logged step, flushed at once, so a crashed run keeps its curve. On
resume, lines from steps after the checkpoint resumed from are dropped: they belong to work being redone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transferlab.config import LoggingSpec
from transferlab.errors import UserError
from transferlab.fileio import atomic_write, read_jsonl_log


class MetricsLogger:
    def __init__(self, run_dir: Path, spec: LoggingSpec, params: dict, start_step: int = 0) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        kept = [line for line in read_jsonl_log(self.path) if line.get("step", -1) <= start_step]
        atomic_write(self.path, "".join(json.dumps(line) + "\n" for line in kept))  # a kill here loses nothing
        self._file = open(self.path, "a", encoding="utf-8")
        self._tensorboard = self._mlflow = None
        if spec.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("logging.tensorboard is on but the tensorboard package is missing: "
                                "pip install tensorboard, or set logging.tensorboard=false.") from None
            self._tensorboard = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"),
                                              purge_step=start_step + 1 if start_step else None)
        if spec.mlflow:
            self._mlflow = _start_mlflow(run_dir, spec, params)

    def log(self, step: int, values: dict) -> None:
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
        if self._tensorboard is not None:
            for key, value in numbers.items():
                self._tensorboard.add_scalar(f"train/{key}", value, step)
        if self._mlflow is not None:
            self._mlflow.log_metrics(numbers, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._mlflow is not None:
            self._mlflow.end_run()


def _start_mlflow(run_dir: Path, spec: LoggingSpec, params: dict):
    try:
        import mlflow
    except ImportError:
        raise UserError("logging.mlflow is on but mlflow is missing: pip install 'transferlab[mlflow]' "
                        "(or mlflow), or set logging.mlflow=false.") from None
    uri = spec.mlflow_tracking_uri
    if uri is None:  # a local file store inside the run directory, which MLflow only opens when asked
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (Path(run_dir).resolve() / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(spec.mlflow_experiment)
    mlflow.start_run(run_name=Path(run_dir).name)
    mlflow.log_params(params)
    return mlflow


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 1}} → {'train.lr': 1}, for trackers that take flat parameters."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
