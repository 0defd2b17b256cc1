"""The live-tensor peak of training, split by kind, as torch's ``MemTracker`` measures it.

A case's resident peak (``peftcore.measure.PeakMemory``) on a CPU also holds what the allocator
keeps and fragments across steps, so it can rank methods against what they really allocate
(QLoRA above LoRA on one of our runs). ``torch.distributed._tools.mem_tracker.MemTracker``, a
dispatch mode in torch itself, sees every tensor the model, its gradients and the optimizer
hold, and every activation and temporary of a step, on any device: its peak is the memory the
method needs, by kind. It is entered when training begins and left after the first
``steps`` optimizer steps (from the second on the optimizer's states exist: the steady state
of a step), so it slows only those steps; but those it slows a lot, as it snapshots every
operation (measured: 27x for LoRA on SmolLM2-135M, 5.5x for full fine-tuning), hence opt-in
(``training.live_memory_steps``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftcore.train.outcome import TrainExtras

# MemTracker's kinds -> the names a record uses.
KINDS = {
    "Parameter": "parameters",
    "Buffer": "buffers",
    "Gradient": "gradients",
    "Optstate": "optimizer_states",
    "Activation": "activations",
    "Temp": "temporaries",
    "Other": "other",
}


def live_memory_callback(model: Any, steps: int, into: TrainExtras) -> Any:
    """A Trainer callback that tracks the first ``steps`` steps and puts, into ``into``,
    ``live_peak_bytes`` (all kinds at the peak), ``live_peak_by_kind`` and ``live_tracked_steps``."""
    from transformers import TrainerCallback

    class LivePeak(TrainerCallback):
        def __init__(self) -> None:
            self.tracker: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.tracker = _tracker()
            self.tracker.track_external(model)  # made before training; the rest is made inside
            self.tracker.__enter__()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.tracker is not None:
                # Per-module statistics are per iteration (MemTracker refuses a second forward of
                # the root module otherwise); the peak over the steps is kept apart from them.
                self.tracker.reset_mod_stats()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.tracker is not None and state.global_step >= steps:
                self._stop(state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.tracker is not None:
                self._stop(state.global_step)

        def close(self, step: int) -> None:
            """Leave the tracker if training stopped inside it (an error, an interrupt): a dispatch
            mode left entered would see every later operation of the process."""
            if self.tracker is not None:
                self._stop(step)

        def _stop(self, step: int) -> None:
            tracker, self.tracker = self.tracker, None
            tracker.__exit__(None, None, None)
            peak = _peak_by_kind(tracker.get_tracker_snapshot("peak"))
            into["live_peak_bytes"] = sum(peak.values())
            into["live_peak_by_kind"] = peak
            into["live_tracked_steps"] = step

    return LivePeak()


def _tracker() -> Any:
    """A MemTracker that leaves frozen parameters without a gradient hook.

    MemTracker hooks every parameter of a module to see its gradient, and torch refuses a hook
    on a tensor that needs no gradient: every adapter method's frozen base weights. Frozen
    parameters are still tracked (as parameters); only the ones that train get the hook. This
    leans on MemTracker's internals (it is a private tool of torch, pinned in the Makefile).
    """
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    class FrozenAwareMemTracker(MemTracker):
        def _track_module_params_and_buffers(self, module: Any, install_grad_hooks: bool = True) -> Any:
            sizes = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
            if install_grad_hooks:
                for param in module.parameters():
                    if param.requires_grad and self._param_to_grad_hook_handles.get(param) is None:

                        def seen(grad: Any) -> None:
                            self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

                        self._param_to_grad_hook_handles[param] = (
                            param.register_hook(seen),
                            param.register_post_accumulate_grad_hook(lambda p: seen(p.grad)),
                        )
            return sizes

    return FrozenAwareMemTracker()


def _peak_by_kind(snapshot: dict[Any, dict[str, int]]) -> dict[str, int]:
    """The peak snapshot, summed over devices, by the record's names for the kinds."""
    totals = dict.fromkeys(KINDS.values(), 0)
    for by_kind in snapshot.values():
        for kind, size in by_kind.items():
            name = KINDS.get(str(getattr(kind, "value", kind)))
            if name is not None:
                totals[name] += int(size)
    return totals
