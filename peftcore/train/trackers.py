"""Experiment trackers (``training.report_to``): each case one run, named by its case id.

transformers' own integration callbacks (``TensorBoardCallback``, ``WandbCallback``,
``MLflowCallback``, ``TrackioCallback``) log the loss curve during training, as for any Trainer.
What they cannot log is what peftcore measures after training (the held-out and seen metrics,
peak memory, adapter size, latency), nor the case's resolved spec. So each run is opened here
through the tracker's own API before training, with the resolved spec as its config (flattened:
``spec.method.adapter.r``), the callback logs into that open run, and after scoring
:meth:`Trackers.finish` logs every metric and cost figure under the names of
``peftcore.load_results`` (``held_out.accuracy``, ``training.peak_memory_bytes``) and closes it.
Opening a run (wandb starts its service process) happens before the timed training.

Where each writes (their own settings):
    tensorboard  <run folder>/tensorboard/<case id>/ (event files), or under TENSORBOARD_LOGGING_DIR
    wandb        WANDB_DIR/wandb/; offline with WANDB_MODE=offline; project WANDB_PROJECT (peftcore)
    mlflow       MLFLOW_TRACKING_URI; experiment MLFLOW_EXPERIMENT_NAME (peftcore)
    trackio      TRACKIO_DIR (default ~/.cache/huggingface/trackio); project "peftcore"
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from peftcore.spec.checks import TRACKER_MODULES
from peftcore.spec.schema import flat

log = logging.getLogger("peftcore.train.trackers")
PROJECT = "peftcore"


class _Run(Protocol):
    callbacks: list[Any]  # the Trainer's own integration callback(s), logging into this run

    def log_final(self, figures: Mapping[str, float], step: int) -> None: ...

    def close(self, ok: bool) -> None: ...


class _TensorBoard:
    def __init__(self, case_id: str, config: Mapping[str, Any], run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        root = os.environ.get("TENSORBOARD_LOGGING_DIR") or run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(Path(root).expanduser() / case_id))
        spec = json.dumps(dict(config), indent=1, default=str)
        self.writer.add_text("peftcore/spec", f"```\n{spec}\n```")  # TensorBoard renders text as Markdown
        # The callback closes the writer at the end of training; the writer reopens its folder
        # (a new event file) when the final figures are added.
        self.callbacks = [TensorBoardCallback(tb_writer=self.writer)]

    def log_final(self, figures: Mapping[str, float], step: int) -> None:
        for name, value in figures.items():
            self.writer.add_scalar(name, value, step)

    def close(self, ok: bool) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, case_id: str, config: Mapping[str, Any], run_dir: Path) -> None:
        import wandb
        from transformers.integrations import WandbCallback

        project = os.environ.get("WANDB_PROJECT") or PROJECT
        self.run = wandb.init(project=project, name=case_id, config=dict(config), reinit="finish_previous")
        self.callbacks = [WandbCallback()]  # finds the open run (wandb.run) and logs into it

    def log_final(self, figures: Mapping[str, float], step: int) -> None:
        self.run.summary.update(dict(figures))

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class _MLflow:
    def __init__(self, case_id: str, config: Mapping[str, Any], run_dir: Path) -> None:
        import mlflow
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH
        from transformers.integrations import MLflowCallback

        self.mlflow = mlflow
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT)
        self.run = mlflow.start_run(run_name=case_id)
        params = [(k, str(v)) for k, v in config.items()]
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            mlflow.log_params(dict(params[start : start + MAX_PARAMS_TAGS_PER_BATCH]))
        # With a run active the callback logs into it and leaves ending it to its opener.
        self.callbacks = [MLflowCallback()]

    def log_final(self, figures: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics(dict(figures), step=step, run_id=self.run.info.run_id)

    def close(self, ok: bool) -> None:
        self.mlflow.end_run("FINISHED" if ok else "FAILED")


class _Trackio:
    def __init__(self, case_id: str, config: Mapping[str, Any], run_dir: Path) -> None:
        import trackio
        from transformers import TrainerCallback
        from transformers.integrations import TrackioCallback

        self.trackio, self.case_id, self.config = trackio, case_id, dict(config)
        # trackio persists a run with its first logged step, so a run opened here and not yet
        # logged to would not be found by the callback, which opens (or resumes, by name) its
        # own at the start of training; the spec is added to that run's config right after.

        class SpecConfig(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                trackio.config.update(dict(config))

        self.callbacks = [TrackioCallback(), SpecConfig()]

    def log_final(self, figures: Mapping[str, float], step: int) -> None:
        if self.trackio.context_vars.current_run.get() is None:  # finished by the callback
            self.trackio.init(project=PROJECT, name=self.case_id, config=self.config, resume="allow")
        self.trackio.log(dict(figures), step=step)

    def close(self, ok: bool) -> None:
        if self.trackio.context_vars.current_run.get() is not None:
            self.trackio.finish()


_OPENERS: dict[str, type[_TensorBoard | _Wandb | _MLflow | _Trackio]] = {
    "tensorboard": _TensorBoard,
    "wandb": _Wandb,
    "mlflow": _MLflow,
    "trackio": _Trackio,
}
assert set(_OPENERS) == set(TRACKER_MODULES)


class Trackers:
    """The open runs of one case, one per tracker named in ``training.report_to``."""

    def __init__(self, names: Iterable[str], case_id: str, spec: Mapping[str, Any], run_dir: Path) -> None:
        """Open a run named ``case_id`` in each tracker, ``spec`` (the resolved case spec) as its
        config. An unknown name is a ValueError (the spec check names the file first)."""
        self.case_id = case_id
        config = flat(spec, "spec")
        self.runs: dict[str, _Run] = {}
        try:
            for name in names:
                if name not in _OPENERS:
                    raise ValueError(f"unknown tracker {name!r}; expected any of {', '.join(_OPENERS)}")
                self.runs[name] = _OPENERS[name](case_id, config, run_dir)
        except BaseException:
            self.close(ok=False)
            raise

    def callbacks(self) -> list[Any]:
        """The Trainer's integration callbacks, each logging into its tracker's open run."""
        return [callback for run in self.runs.values() for callback in run.callbacks]

    def training_arguments(self) -> dict[str, Any]:
        """What the callbacks read from ``TrainingArguments``: the run's name, trackio's project."""
        return {"run_name": self.case_id, "project": PROJECT}

    def finish(self, figures: Mapping[str, float], step: int) -> None:
        """Log the case's final metrics and cost figures at optimizer step ``step``; close every run."""
        for run in self.runs.values():
            run.log_final(figures, step)
        self.close(ok=True)

    def close(self, ok: bool) -> None:
        """Close every run (``ok``: the case finished). A tracker that fails to close is logged."""
        runs, self.runs = self.runs, {}
        for name, run in runs.items():
            try:
                run.close(ok)
            except Exception as err:  # closing must not hide why the case ended
                log.warning("could not close the %s run of %s: %s", name, self.case_id, err)
