"""The case pipeline of one session: plan -> (adopt | re-score | run) -> record -> gates.

For each case the session computes its identity (:mod:`peftcore.pipeline.identity`) and looks
for earlier finished records in the run store:

- the very same case finished before (same ``case_hash``): its record is *adopted* into this
  run (marked ``cached_from``) and nothing runs; one already in this run's own folder (the same
  ``--run-id`` again, after the run was killed) is kept as it is, which *resumes* the run;
- only scoring settings changed (same ``training_hash``, saved adapter on disk): the adapter is
  *re-scored* instead of trained again;
- otherwise the case *runs* (:func:`peftcore.pipeline.execute.run_case`).

Then the case's gates are checked (its task's and profile's ``expect:`` bounds, the profile's
``compare:`` rules against every case of the session so far) and an :class:`Outcome` says what
happened. Records stay in memory once written. Nothing here imports torch or pytest; the plugin
turns outcomes into passes, skips and failures.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from peftcore.data.example import TaskData
from peftcore.errors import PeftcoreError
from peftcore.models.load import LoadedBase
from peftcore.pipeline.claims import claimed
from peftcore.pipeline.execute import CaseContext, Timer, record_early_failure, run_case, untimed
from peftcore.pipeline.identity import Identity, identify
from peftcore.pipeline.off_task import OffTaskData, load_off_task_data
from peftcore.results.provenance import package_versions
from peftcore.results.store import Earlier, History, adopt, read_record, record_path
from peftcore.spec import ProfileSpec
from peftcore.spec.cases import Case
from peftcore.vocab.record import Record, RecordError, is_search_only

How = Literal["ran", "rescored", "adopted", "resumed"]


@dataclass(frozen=True)
class Outcome:
    """What became of a case: its record, how it was obtained, and what is wrong with it."""

    case_id: str
    record: Record
    how: How
    error: Exception | None = None  # what stopped the case (the record's status says which)
    stops_session: str | None = None  # why no further case can run in this process
    gate_failures: tuple[str, ...] = ()

    @property
    def reused(self) -> str | None:
        """``cached result from <run>`` when the record was adopted or resumed, else None."""
        if self.how not in ("adopted", "resumed"):
            return None
        return f"cached result from {self.record.get('cached_from') or self.record['run_id']}"


@dataclass
class RerunPolicy:
    """``--rerun`` alone reruns everything; ``--rerun=EXPR`` reruns cases matching a -k expression."""

    everything: bool = False
    expression: str | None = None
    matcher: Callable[[Case], bool] | None = None

    def forces(self, case: Case) -> bool:
        if self.everything:
            return True
        return bool(self.matcher and self.matcher(case))


def keyword_matcher(expression: str) -> Callable[[Case], bool]:
    """A ``-k``-style expression over a case's id and spec names (as pytest's -k matches them)."""
    from _pytest.mark.expression import Expression  # pytest's own -k grammar

    compiled = Expression.compile(expression)

    def matches(case: Case) -> bool:
        names = {case.case_id, case.method.name, case.model.name, case.task.name}

        def match(word: str, /, **_: str | int | bool | None) -> bool:
            word = word.lower()
            return any(word in name.lower() for name in names)

        return bool(compiled.evaluate(match))

    return matches


@dataclass(frozen=True)
class Plan:
    """What the session will do with a case."""

    identity: Identity
    earlier: Earlier | None = None  # the same case, finished: adopt (or keep) its record
    rescore: Earlier | None = None  # the same training, finished: score its adapter again


@dataclass
class BenchmarkSession:
    """The cases of one pytest session: run, adopted from earlier runs, or failed."""

    run_dir: Path
    results_dir: Path
    profile: ProfileSpec | None = None  # its expect:/compare: gates apply to every case
    rerun: RerunPolicy = field(default_factory=RerunPolicy)
    reuse_adapters: bool = True
    device: str = "cpu"
    repo_root: Path = field(default_factory=Path.cwd)
    records: dict[str, Record] = field(default_factory=dict)
    # Called with the run folder and each record as it is kept (a results URL uploads it there).
    publish: Callable[[Path, Record], None] | None = None
    _history: History | None = None

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def history(self) -> History:
        """Finished records of every run, this run's folder included: rerunning the command of an
        interrupted run with the same ``--run-id`` resumes it. Scanned once, at the first case,
        before this session has written anything."""
        if self._history is None:
            self._history = History.scan(self.results_dir)
        return self._history

    def plan(self, case: Case, data: TaskData, off_task: OffTaskData | None = None) -> Plan:
        """The case's identity, and the earlier record to adopt or adapter to re-score, if any."""
        from peftcore.models.checkpoints import model_sha256

        hashes = off_task.hashes() if off_task else None
        identity = identify(case, model_sha256(case.model), data, package_versions(), hashes)
        if self.rerun.forces(case):
            return Plan(identity)
        earlier = self.history.by_case.get(identity.case_hash)
        if earlier is not None:
            return Plan(identity, earlier=earlier)
        trained = self.history.by_training.get(identity.training_hash)
        if trained is not None and self.reuse_adapters and case.method.is_peft and trained.adapter():
            return Plan(identity, rescore=trained)
        return Plan(identity)

    def run(
        self,
        case: Case,
        *,
        data: Callable[[Case], TaskData],
        model: Callable[[Case], LoadedBase],
        timer: Timer = untimed,
    ) -> Outcome:
        """Plan the case, then adopt, re-score or run it, record it, and check its gates.

        ``data`` and ``model`` give the case's task data and loaded base model (session caches);
        the data is asked for first, so a bad task spec fails before any model loads. ``timer``
        runs the timed part of the case once (training, or scoring for a case that trains
        nothing). Ctrl-C and SIGTERM propagate after the running case's record is written.

        A search's trial takes its values from the study (peftcore.pipeline.tuning) and tells it
        its objective after; a tuned case takes the values its trials chose, before it is planned.
        """
        if case.tuning is None or case.tuning.kind == "default":  # a default run is a plain case
            return self._run(case, data=data, model=model, timer=timer)
        from peftcore.pipeline import tuning

        trial = case.tuning.kind == "trial"
        number = 0
        try:
            if trial:
                case, number = tuning.begin_trial(self.run_dir, case)
            else:
                case = tuning.choose(self.run_dir, case, self.records)
        except (PeftcoreError, OSError) as err:
            stage = "asking the study for the trial's values" if trial else "choosing the tuned values"
            executed = record_early_failure(case, self._context(case, Identity("", "")), stage, err)
            return self._conclude(case, Outcome(case.case_id, executed.record, "ran", executed.error))
        outcome = self._run(case, data=data, model=model, timer=timer)
        if trial:
            tuning.end_trial(self.run_dir, case, number, outcome.record)
        return outcome

    def _context(
        self,
        case: Case,
        identity: Identity,
        rescore: Earlier | None = None,
        off_task: OffTaskData | None = None,
        timer: Timer = untimed,
    ) -> CaseContext:
        return CaseContext(
            run_dir=self.run_dir,
            run_id=self.run_id,
            device=self.device,
            repo_root=self.repo_root,
            identity=identity,
            reuse=rescore,
            timer=timer,
            keep=lambda record: self._keep(case.case_id, record),  # cancelled ones too
            off_task=off_task or OffTaskData(),
        )

    def _run(
        self,
        case: Case,
        *,
        data: Callable[[Case], TaskData],
        model: Callable[[Case], LoadedBase],
        timer: Timer,
    ) -> Outcome:
        """:meth:`run` for a case whose values are settled."""

        def failed_before_running(stage: str, error: Exception) -> Outcome:
            executed = record_early_failure(case, self._context(case, Identity("", "")), stage, error)
            return self._conclude(case, Outcome(case.case_id, executed.record, "ran", executed.error))

        try:
            examples = data(case)
            off_task = load_off_task_data(case)  # general text, other tasks: only if the profile asks
        except (PeftcoreError, OSError) as err:  # a bad task spec or data file: recorded, one line
            return failed_before_running("loading the task data", err)
        try:
            plan = self.plan(case, examples, off_task)
        except (PeftcoreError, OSError) as err:  # the model's weights cannot be located
            return failed_before_running("locating the model", err)
        if plan.earlier is not None:
            here = plan.earlier.run_dir.resolve() == self.run_dir.resolve()
            if here and plan.earlier.record["case_id"] == case.case_id:
                # Already in this run's folder: kept as it is (a resumed run).
                return self._conclude(case, Outcome(case.case_id, plan.earlier.record, "resumed"), examples)
            record = adopt(plan.earlier, self.run_dir, self.run_id, case.case_id)
            return self._conclude(case, Outcome(case.case_id, record, "adopted"), examples)
        with claimed(self.run_dir, case.case_id, lambda holder: _say_waiting(case.case_id, holder)) as waited:
            if waited:  # another session of this run held the case: it may have finished it
                done = _finished_record(self.run_dir, case.case_id, plan.identity.case_hash)
                if done is not None:
                    return self._conclude(case, Outcome(case.case_id, done, "resumed"), examples)
            try:
                base = model(case)
            except (PeftcoreError, OSError) as err:
                return failed_before_running("loading the model", err)
            ctx = self._context(case, plan.identity, plan.rescore, off_task, timer)
            executed = run_case(case, base, examples, ctx)
            how: How = "rescored" if plan.rescore is not None else "ran"
            outcome = Outcome(case.case_id, executed.record, how, executed.error, executed.stops_session)
            return self._conclude(case, outcome, examples)

    def _keep(self, case_id: str, record: Record) -> None:
        # A record is never changed once kept (a later stage returns a new one), so the same
        # object is the same content: published once.
        if self.publish is not None and self.records.get(case_id) is not record:
            self.publish(self.run_dir, record)
        self.records[case_id] = record

    def _conclude(self, case: Case, outcome: Outcome, examples: TaskData | None = None) -> Outcome:
        if examples is not None and case.deploy.variants and outcome.stops_session is None:
            from peftcore.pipeline.deploy import deploy_case

            # Variants of a finished case (profile deploy:), built from its saved adapter; those
            # the record already carries with the same hash are kept (an adopted record's too).
            deployed = deploy_case(case, outcome.record, self.run_dir, examples, self.device)
            if deployed is not None:
                outcome = replace(outcome, record=deployed)
        self._keep(case.case_id, outcome.record)
        failures = tuple(self.gate_failures(case, outcome.record))
        if not failures:
            return outcome
        return Outcome(
            outcome.case_id, outcome.record, outcome.how, outcome.error, outcome.stops_session, failures
        )

    def gate_failures(self, case: Case, record: Record) -> list[str]:
        """Broken gates this case takes part in: its task's and profile's bounds, and the
        profile's rules between this case and any other case of the session."""
        from peftcore import gates
        from peftcore.results.variants import unbuilt_variants, variant_rows, with_variants

        if is_search_only(record):  # a trial (tuning split only) or a default run: no gate is about it
            return []

        # The case and its deployment variants (lora@nf4: peftcore.results.variants), each gated
        # like a case.
        rows = [record, *variant_rows(record)]
        failures = []
        for row in rows:
            failures += gates.check_expect(row, case.task.expect, case.task.file)
        if self.profile is not None:
            for row in rows:
                failures += gates.check_expect(row, self.profile.expect, self.profile.file)
            compared = (r for r in self.records.values() if not is_search_only(r))
            between = gates.check_relative(with_variants(compared), self.profile.compare, self.profile.file)
            ids = {str(row["case_id"]) for row in rows}
            failures += [f for f in between if ids & {f.case_id, f.baseline_id}]
        # A variant that failed to build has no row, so no rule reaches it: it fails the case
        # itself (not_mergeable and skipped are expected, and reported, not failures).
        broken = [
            f"{record['case_id']}@{name}: the deployment variant failed: {reason}"
            for name, status, reason in unbuilt_variants(record)
            if status == "failed"
        ]
        return [str(failure) for failure in failures] + broken


def _say_waiting(case_id: str, holder: str) -> None:
    # Straight to the terminal: pytest captures what a running test prints, and a user who
    # started the command twice should see at once why this one sits still.
    print(
        f"\npeftcore: {case_id} is being run by another session of this run (pid {holder}); "
        "waiting for it, then taking its record",
        file=sys.__stderr__,
        flush=True,
    )


def _finished_record(run_dir: Path, case_id: str, case_hash: str) -> Record | None:
    """This run folder's finished record of the case with this identity, or None."""
    path = record_path(run_dir, case_id)
    try:
        record = read_record(path)
    except (OSError, RecordError):
        return None
    if record.get("status") == "finished" and record.get("case_hash") == case_hash:
        return record
    return None
