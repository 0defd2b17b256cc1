"""A model for the planner: its config found by name, built on the meta device, made trainable.

A model is named as on the command line: a model spec of the spec directory, a config that
ships with peftcore (``model_configs/``), a path to a ``config.json`` (or its folder), or a hub
id. Nothing is loaded but the config; the model is built on the meta device (shapes and dtypes,
no memory) and the method is applied by the engine's own ``apply_method``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.errors import SpecError
from peftcore.plan.errors import PlannerError
from peftcore.spec import (
    MethodSpec,
    ModelSource,
    ModelSpec,
    SpecStore,
    TrainingBudget,
    apply_model_overrides,
    freeze,
)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
DEFAULT_SPECS = Path("benchmarks/specs")


@dataclass(frozen=True)
class ModelInfo:
    """A model config resolved from a spec name, a shipped name, a path or a hub id.

    ``spec`` is the model spec a benchmark case would use, so that its adapter overrides apply
    through the same ``apply_model_overrides``; a model outside the spec directory gets a
    stand-in spec (``stand_in_spec``) that carries only its name and overrides.
    """

    name: str
    config: Any  # transformers.PretrainedConfig
    dtype: str  # fp32 | bf16 | fp16: how the full-precision base is held in memory
    source: str  # where the config came from, as the header says it
    spec: ModelSpec

    @property
    def adapter_overrides(self) -> Mapping[str, Mapping[str, Any]]:
        """Tuner name -> keywords that differ on this model (see ``ModelSpec.adapter_overrides``)."""
        return self.spec.adapter_overrides


def stand_in_spec(
    name: str,
    source: ModelSource | None = None,
    adapter_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ModelSpec:
    """A model spec for a config the spec directory does not describe. It is never loaded:
    the planner reads only its ``adapter_overrides`` (default: none)."""
    return ModelSpec(
        name=name,
        description="a config outside the spec directory",
        source=source or ModelSource(kind="local"),
        adapter_overrides=freeze(dict(adapter_overrides or {})),
    )


def shipped_models() -> dict[str, Path]:
    """Model configs that ship with peftcore: name -> config.json."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.json"))}


def resolve_model(ref: str, specs: str | Path | None = DEFAULT_SPECS, dtype: str | None = None) -> ModelInfo:
    """Find a model's config: a model spec name, a path (config.json or its folder), a shipped name,
    or a hub id (needs a network or a filled hub cache).

    A spec name brings the spec's dtype and adapter overrides; anything else is held in ``dtype``
    (default: the ``model.dtype`` of the spec directory's defaults, fp32). ``specs`` None (or a
    folder that is not a spec directory) looks at the other kinds of name only.

    Raises PlannerError for a name that is none of these, a file that is not a transformers
    config, or a hub id whose config cannot be fetched.
    """
    store = _store(specs)
    default_dtype = str((store.defaults.get("model", {}) if store else {}).get("dtype", "fp32"))
    path = Path(ref).expanduser()
    if store is not None and ref in store.names("models"):
        from peftcore.models.checkpoints import checkpoint_dir

        spec = store.get("models", ref)
        where = checkpoint_dir(spec)
        if Path(where).is_dir():
            config = _load_config_file(Path(where) / "config.json")
        else:
            config = _hub_config(where, spec.source.revision)
        return ModelInfo(ref, config, dtype or spec.dtype, f"spec {spec.file}", spec)
    if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
        file = path if path.is_file() else path / "config.json"
        name = _display_name(file)
        spec = stand_in_spec(name, ModelSource(kind="local", path=str(file.parent)))
        return ModelInfo(name, _load_config_file(file), dtype or default_dtype, str(file), spec)
    shipped = shipped_models()
    if ref.lower() in shipped:
        file = shipped[ref.lower()]
        spec = stand_in_spec(ref.lower(), ModelSource(kind="local", path=str(file.parent)))
        config = _load_config_file(file)
        return ModelInfo(ref.lower(), config, dtype or default_dtype, f"shipped {file.name}", spec)
    looks_like_path = ref.startswith(("/", ".", "~")) or ref.endswith(".json") or ref.count("/") > 1
    if looks_like_path:
        raise PlannerError(f"--model {ref}: no such file or folder (a config.json, or a folder holding one)")
    if "/" in ref and not path.exists():
        spec = stand_in_spec(ref, ModelSource(kind="hub", id=ref))
        return ModelInfo(ref, _hub_config(ref, None), dtype or default_dtype, f"hub {ref}", spec)
    known = sorted({*shipped, *(store.names("models") if store else ())})
    raise PlannerError(
        f"unknown model {ref!r}: not a model spec, a shipped config, a config.json path or a hub id; "
        f"known names: {', '.join(known)}"
    )


def _store(specs: str | Path | None) -> SpecStore | None:
    if specs is None:
        return None
    try:
        return SpecStore(specs)
    except SpecError:
        return None


def _display_name(file: Path) -> str:
    return file.parent.name if file.name == "config.json" else file.stem


def _load_config_file(path: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PlannerError(f"{path}: not a usable transformers config ({message})") from None


def _hub_config(repo_id: str, revision: str | None) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(repo_id, revision=revision)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PlannerError(
            f"cannot fetch the config of {repo_id!r} from the hub ({reason[:120]}); offline, pass a local "
            f"file instead: --model path/to/config.json (the config.json of {repo_id}), or a shipped "
            f"name: {', '.join(shipped_models())}"
        ) from None


def build_meta_model(config: Any, dtype: str) -> Any:
    """The causal LM of ``config`` on the meta device (shapes and dtypes only, no memory), its
    parameters in ``dtype`` (fp32, bf16, fp16). PlannerError when the config is not a causal LM."""
    import torch
    from transformers import AutoModelForCausalLM

    from peftcore.models.load import torch_dtype

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    except ValueError as err:
        if "Unrecognized configuration class" in str(err):
            kind = getattr(config, "model_type", "?")
            raise PlannerError(
                f"not a causal language model: config model_type {kind!r} has no AutoModelForCausalLM class"
            ) from None
        raise


def apply_meta(model_info: ModelInfo, method: MethodSpec, budget: TrainingBudget) -> Any:
    """The meta model made trainable as ``method`` says, by the engine's own ``apply_method``,
    after the model's adapter overrides (``apply_model_overrides``, as a benchmark case does).

    A quantized base is built in its compute dtype (how ``load_base`` holds its unquantized
    modules); peft's adapters are sized from the layers' shapes, which bitsandbytes keeps.
    PlannerError when peft cannot apply the method (e.g. its target modules match nothing).
    """
    import torch

    from peftcore.train.methods import apply_method

    method = apply_model_overrides(method, model_info.spec)
    dtype = model_info.dtype if method.base.quantization == "none" else method.base.compute_dtype
    model = build_meta_model(model_info.config, dtype)
    with torch.device("meta"):
        try:
            return apply_method(model, method, budget)
        except SpecError as err:
            raise PlannerError(f"method {method.name}: {err.expected}") from None
