"""A method spec applied to a model: peft config built from the spec's ``adapter:`` block.

There is no class per method: a method is a tuner name plus base-model options (the loader
reads those) plus keyword arguments handed verbatim to the tuner's peft config class. Two
tuners are not peft's: ``none`` (score the base as is) and ``full`` (train every weight).
"""

from __future__ import annotations

from typing import Any

from peftcore.errors import SpecError
from peftcore.spec import MethodSpec, TrainingBudget


def config_class(tuner: str) -> type:
    """peft's config class for a tuner name (``lora`` -> LoraConfig)."""
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    try:
        return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(tuner.upper())]
    except (KeyError, ValueError):
        known = sorted(t.value.lower() for t in PEFT_TYPE_TO_CONFIG_MAPPING)
        raise SpecError(None, "tuner", f"peft has no tuner {tuner!r}; known: {', '.join(known)}") from None


def adapter_kwargs(method: MethodSpec, budget: TrainingBudget) -> dict[str, Any]:
    """The spec's adapter block, plus what only the run can know (AdaLoRA's schedule)."""
    kwargs = _thaw(method.adapter)
    if method.tuner == "adalora":
        steps = budget.max_steps
        # AdaLoRA prunes ranks between tinit and total_step - tfinal, every deltaT steps. Unless
        # the spec says otherwise, warm up for 10% of the run, reallocate every step, and hold
        # the final budget for the last 20%, so the reallocation happens in short runs too.
        kwargs.setdefault("total_step", steps)
        kwargs.setdefault("tinit", max(1, steps // 10) if steps > 5 else 0)
        kwargs.setdefault("tfinal", max(1, steps // 5) if steps > 5 else 1)
        kwargs.setdefault("deltaT", 1)
    return kwargs


def _thaw(value: Any) -> Any:
    """Read-only spec data (mappingproxy, tuples) back to the dicts and lists peft expects."""
    if hasattr(value, "items"):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def build_peft_config(method: MethodSpec, budget: TrainingBudget) -> Any:
    """The peft config object for a peft method; SpecError names the method file on bad keys."""
    cls = config_class(method.tuner)
    kwargs = adapter_kwargs(method, budget)
    try:
        return cls(task_type="CAUSAL_LM", **kwargs)
    except (TypeError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SpecError(method.file, "adapter", f"{cls.__name__} rejected it: {message}") from None


def apply_method(model: Any, method: MethodSpec, budget: TrainingBudget) -> Any:
    """Make ``model`` (a fresh copy) trainable as ``method`` says; return the model to train.

    - ``none``: every weight frozen, the model returned as is;
    - ``full``: every weight trainable (not possible on a quantized base);
    - a peft tuner: ``prepare_model_for_kbit_training`` on a quantized base, then the adapter.
    """
    quantized = bool(getattr(model, "is_quantized", False))
    if method.tuner == "none":
        model.requires_grad_(False)
        return model
    if method.tuner == "full":
        if quantized:
            raise SpecError(method.file, "base.quantization", "full fine-tuning needs a full-precision base")
        model.requires_grad_(True)
        if budget.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    config = build_peft_config(method, budget)
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=budget.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif budget.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, RuntimeError) as err:
        message = str(err).splitlines()[0]
        raise SpecError(method.file, "adapter", f"peft could not apply {method.tuner}: {message}") from None


def save_trained(
    model: Any, folder: Any, method: MethodSpec, state_dict: dict[str, Any] | None = None
) -> None:
    """``save_pretrained`` in safetensors; a peft model writes only its adapter. ``state_dict``:
    the weights to write instead of the model's own (the full one gathered from FSDP shards)."""
    import warnings

    with warnings.catch_warnings():
        if method.tuner == "adalora":
            # AdaLoRA prunes some modules to rank 0, which is its point; peft's save check
            # reads the zero-sized tensors as an unsynchronised ZeRO-3/FSDP shard and warns.
            warnings.filterwarnings("ignore", message=r"Adapter .* LoRA tensor\(s\) have invalid shape")
        if state_dict is None:
            model.save_pretrained(folder, safe_serialization=True)
        else:
            model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)


def load_trained(base_model: Any, folder: Any, method: MethodSpec) -> Any:
    """A saved peft adapter on ``base_model`` (the counterpart of ``save_trained``)."""
    import warnings

    from peft import PeftModel, prepare_model_for_kbit_training

    if getattr(base_model, "is_quantized", False):
        # Training ran on a prepared base (norms and embeddings cast to fp32); on an int8 base
        # that changes the logits, so the reloaded model is prepared the same way.
        base_model = prepare_model_for_kbit_training(base_model, use_gradient_checkpointing=False)
    with warnings.catch_warnings():
        if method.tuner == "adalora":
            # AdaLoRA stores its final ranks as "<module>.lora_E" keys; peft's generic check for
            # rank_pattern keys does not know that form and warns, though the ranks are applied.
            warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
        return PeftModel.from_pretrained(base_model, folder)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as the parameters they stand for."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    trainable = total = 0
    for param in model.parameters():
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":
            count *= 2 * getattr(getattr(param, "quant_storage", None), "itemsize", 1)
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total
