"""Scores outside the case's own task: what fine-tuning cost on general text, and on other tasks.

A profile asks for them in its ``eval`` block; without it nothing here runs::

    eval:
      forgetting: {task: coqa_passages, documents: 100, max_tokens: 768}
      also_score: [nq_open, arc_easy]

Every case of such a profile, the untrained base included, is then scored after its own task on

- general text (``record["general_text"]``): the mean next-token loss of the case's model over
  the first ``documents`` held-out texts of the forgetting task
  (:mod:`peftcore.score.general_text`), and the same for the untouched base model of the case's
  variant, the template every case copies (for QLoRA the quantized base; for prompt or prefix
  tuning no adapter at all, not the trained adapter disabled). The base's loss ("before") is
  computed once per base variant and process. Forgetting is after minus before;
- each other task (``record["metrics"]["ood.<task>"]``): its held-out split, the profile's
  ``data.held_out`` examples under its split seed (the examples a case trained on that task is
  scored on), with that task's metrics. A case is not scored again on its own task.

The data is loaded with the case's own data (:func:`load_off_task_data`, by the session), so a
missing source fails the case before anything trains, and its hashes enter the case's identity.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftcore.data.example import TaskData
from peftcore.errors import SizeError, SpecError
from peftcore.models.load import LoadedBase
from peftcore.spec import DataSizes
from peftcore.spec.cases import Case
from peftcore.train.prompting import PromptFormat
from peftcore.vocab.record import OOD_PREFIX, GeneralTextFigures

if TYPE_CHECKING:
    from peftcore.score.general_text import TextLoss
    from peftcore.score.run import ScoreResult

# The untouched base's loss on general text, by everything that determines it.
_BEFORE: dict[tuple[Any, ...], TextLoss] = {}


@dataclass(frozen=True)
class OffTaskData:
    """The held-out examples a case is scored on outside its task (empty: nothing asked)."""

    general_text: TaskData | None = None
    ood: Mapping[str, TaskData] = field(default_factory=dict)  # task name -> its data

    def __bool__(self) -> bool:
        return self.general_text is not None or bool(self.ood)

    def hashes(self) -> dict[str, list[str]]:
        """Data and split hashes by role (``general_text``, ``ood.<task>``), for the identity."""
        found = {OOD_PREFIX + name: data for name, data in self.ood.items()}
        if self.general_text is not None:
            found["general_text"] = self.general_text
        return {role: [data.data_sha256, data.split_sha256] for role, data in sorted(found.items())}


def held_out_only(case: Case, examples: int) -> DataSizes:
    """``examples`` held-out examples under the case's split seed, nothing to train on."""
    return DataSizes(train=0, held_out=examples, seen=0, split_seed=case.data.split_seed)


def load_off_task_data(case: Case) -> OffTaskData:
    """The case's general text and other tasks, read like any task's data (cached the same way).

    Raises what :func:`peftcore.data.tasks.load_task` raises; sizes the data cannot meet blame
    the key that set them (``eval.forgetting.documents``, or ``data.held_out`` where it was set).
    """
    from peftcore.data.tasks import load_task

    general = None
    forgetting = case.eval.forgetting
    if case.general_text is not None and forgetting is not None:
        try:
            general = load_task(case.general_text, held_out_only(case, forgetting.documents))
        except SizeError as err:
            where = case.sizes_from if case.sizes_from not in ("", "command line") else None
            raise SpecError(
                where or f"profile {case.profile}", "eval.forgetting.documents", err.expected
            ) from None
    ood = {}
    for task in case.also_score:
        try:
            ood[task.name] = load_task(task, held_out_only(case, case.data.held_out))
        except SizeError as err:
            raise SizeError(case.sizes_from or err.file, err.key, err.expected) from None
    return OffTaskData(general, ood)


def other_tasks_scores(
    case: Case, model: Any, fmt: PromptFormat, data: OffTaskData, *, device: str, precision: str
) -> Iterator[tuple[str, ScoreResult]]:
    """``model`` (the case's, trained or not) scored on each other task of ``case.also_score``
    that ``data`` holds: the task's name and its held-out scores, yielded as each is scored (a
    case that fails on a later task keeps the earlier ones). The caller keeps them under
    ``ood.<task>``. Raises what scoring raises."""
    from peftcore import score as scoring

    for task in case.also_score:
        if task.name in data.ood:
            examples = data.ood[task.name].held_out
            yield (
                task.name,
                scoring.score(model, fmt, examples, task, case.eval, device=device, precision=precision),
            )


def general_text_figures(
    case: Case, base: LoadedBase, model: Any, fmt: PromptFormat, text: TaskData, device: str, precision: str
) -> GeneralTextFigures:
    """Loss on the general text before (the untouched base, cached) and after (``model``, the
    case's, trained or not): the record's ``general_text``. ``base`` is the case's loaded
    variant: its ``model`` is the untouched template, scored once per process. Raises what
    scoring raises."""
    from peftcore.score.general_text import mean_token_loss

    settings = case.eval.forgetting
    assert settings is not None
    texts = [example.target for example in text.held_out]

    def loss(of: Any) -> TextLoss:
        return mean_token_loss(
            of,
            fmt,
            texts,
            max_tokens=settings.max_tokens,
            batch_size=case.eval.batch_size,
            device=device,
            precision=precision,
        )

    key = (
        base.spec.name,
        base.sha256,
        base.options,
        base.spec.dtype,
        base.device,
        text.data_sha256,
        text.split_sha256,
        settings.max_tokens,
        case.eval.batch_size,
        precision,
    )
    if key not in _BEFORE:
        _BEFORE[key] = loss(base.model)  # never changed: every case trains a deep copy of it
    before, after = _BEFORE[key], loss(model)
    return {
        "task": text.task_name,
        "documents": after.documents,
        "max_tokens": settings.max_tokens,
        "tokens": after.tokens,
        "before_loss": before.loss,
        "after_loss": after.loss,
        "forgetting": after.loss - before.loss,
        "seconds": round(after.seconds, 3),
    }


def forget_cached_losses() -> None:
    """Drop the cached base losses (tests; a process that reloads changed weights)."""
    _BEFORE.clear()
