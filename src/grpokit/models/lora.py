"""LoRA and QLoRA policies through peft: adapters on any transformers causal LM, the adapter-disabled
reference, adapter-only checkpoints, and merging the adapters back into a full model.

LoRA (Hu et al., 2021, arXiv 2106.09685) freezes every weight ``W`` (d_out, d_in) of the targeted linear
layers and learns a low-rank update instead::

    h = W x + (alpha / r) * B A x          A: (r, d_in), B: (d_out, r), r << min(d_in, d_out)

``B`` starts at zero, so the wrapped model is exactly the base model before the first update. QLoRA
(Dettmers et al., 2023, arXiv 2305.14314) stores the frozen ``W`` in 4-bit NF4 (bitsandbytes, CUDA only).

What this means for GRPO, numbered:

1. The KL reference pi_ref is the initial policy, i.e. the base model: the same module run under
   ``peft_model.disable_adapter()``. No second copy of the weights exists (a full fine-tune keeps one).
   Its log-probs equal those of a frozen copy of the base model bit for bit.
2. ``ref_model_sync_steps`` (iterative GRPO) cannot refresh such a reference without merging the adapters
   into the base, so the config rejects it with LoRA.
3. Checkpoints and ``RUN_DIR/final`` hold the adapters only (``adapter_model.safetensors`` and
   ``adapter_config.json``, whose ``base_model_name_or_path`` is the absolute base directory);
   :func:`merge_adapter` (``grpokit merge``) writes a full model that plain transformers loads.
4. LoRA dropout is rejected by the config: the trainer updates the policy in eval mode so that the
   importance ratio is exactly 1 on-policy, and dropout would never be active.
5. The sampler's lean decode step needs plain ``nn.Linear`` projections, so a LoRA policy is sampled
   with the model's own ``forward`` (see ``docs/lora.md`` for the cost).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from grpokit.config import LoRAConfig, ModelConfig

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "AdapterDisabledReference",
    "apply_lora",
    "is_adapter_dir",
    "is_lora_model",
    "load_policy",
    "merge_adapter",
    "trainable_state_bytes",
]

ADAPTER_CONFIG_FILE = "adapter_config.json"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:  # peft is the optional 'lora' extra
        raise ImportError("model.lora needs peft: pip install 'grpokit[lora]'") from err
    return peft


def is_lora_model(model: Any) -> bool:
    """True for a peft-wrapped model (whatever wraps it further, e.g. DDP: pass the unwrapped module)."""
    peft = sys.modules.get("peft")  # a peft model exists only if peft was imported: no import just to check
    return peft is not None and isinstance(model, peft.PeftModel)


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a peft adapter (``adapter_config.json``) rather than a full model."""
    return (Path(path) / ADAPTER_CONFIG_FILE).is_file()


def _peft_config(settings: LoRAConfig, base_path: str | None) -> Any:
    peft = _peft()
    return peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha if settings.alpha is not None else 2 * settings.r,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_path,
    )


def apply_lora(
    model: torch.nn.Module, settings: LoRAConfig, base_path: str | os.PathLike | None = None
) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (B = 0: the output is unchanged); only they require grad.

    Args:
        model: a transformers causal LM (its weights are frozen in place, not copied).
        settings: ``config.model.lora`` with ``r > 0``.
        base_path: directory the base was loaded from, recorded (absolute) in ``adapter_config.json`` so
            ``grpokit merge`` finds it.
    Returns:
        The ``peft.PeftModelForCausalLM``.
    """
    if settings.r < 1:
        raise ValueError(f"model.lora.r must be >= 1 to add adapters, got {settings.r}")
    base = str(Path(base_path).resolve()) if base_path is not None else None
    try:
        with warnings.catch_warnings():
            # peft (0.21) reads transformers' deprecated `is_gradient_checkpointing` inside get_peft_model; the
            # warning is about peft's code, not grpokit's, and nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=DeprecationWarning)
            wrapped = _peft().get_peft_model(model, _peft_config(settings, base))
    except ValueError as err:  # e.g. target modules not found: name the field
        raise ValueError(f"model.lora.target_modules: {err}") from None
    return wrapped


def _check_quantization(settings: LoRAConfig, device: torch.device) -> None:
    if not settings.load_in_4bit:
        return
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ValueError(
            f"model.lora.load_in_4bit (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit layers do not run on "
            f"{device.type!r}. Use plain LoRA (load_in_4bit: false) on this machine."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ImportError("model.lora.load_in_4bit needs bitsandbytes: pip install 'grpokit[qlora]'") from err


def load_policy(
    model: ModelConfig, checkpoint: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> Any:
    """The policy to train: the model of ``model.name_or_path``, with LoRA adapters when ``model.lora.r > 0``.

    Resuming (``checkpoint`` set) reads the full weights from the checkpoint, or, for a LoRA run, the base
    from ``model.name_or_path`` and the trainable adapters from the checkpoint.

    Raises:
        ValueError: QLoRA without CUDA; a checkpoint whose kind (adapter or full model) does not match
            ``model.lora``.
    """
    from grpokit.models.loading import load_model

    device = torch.device(device)
    settings = model.lora
    if checkpoint is not None and is_adapter_dir(checkpoint) != (settings.r > 0):
        kind = "LoRA adapters" if is_adapter_dir(checkpoint) else "a full model"
        raise ValueError(
            f"checkpoint {str(checkpoint)!r} holds {kind}, but model.lora.r is {settings.r}: resume with the "
            "model.lora settings the run was started with"
        )
    if settings.r == 0:
        return load_model(checkpoint or _name_or_path(model), dtype=model.dtype, device=device)
    _check_quantization(settings, device)
    name_or_path = _name_or_path(model)
    kwargs: dict[str, Any] = {}
    if settings.load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if model.dtype == "bfloat16" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )  # fmt: skip
        kwargs["device_map"] = {"": device}
        base = load_model(name_or_path, dtype=model.dtype, device=device, **kwargs)
        # Casts norms to float32 and enables input grads so the frozen 4-bit base passes gradients through.
        base = _peft().prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    else:
        base = load_model(name_or_path, dtype=model.dtype, device=device)
    if checkpoint is None:
        return apply_lora(base, settings, name_or_path)
    return _peft().PeftModel.from_pretrained(base, os.fspath(checkpoint), is_trainable=True)


def _name_or_path(model: ModelConfig) -> str:
    if model.name_or_path is None:
        raise ValueError("model.name_or_path is unset: load_policy needs the directory of the model to load")
    return model.name_or_path


class _WithoutAdapters(torch.nn.Module):
    """Forward of a peft model with its adapters switched off, in eval mode; it owns no parameters.

    ``parameters()`` are the policy's (for the device), but the policy is not a submodule: the reference
    adds nothing to a ``state_dict`` and never changes the policy's train/eval mode.
    """

    policy: Any  # the peft model, set with object.__setattr__ in __init__

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "policy", policy)  # not registered: no second copy anywhere

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return self.policy.parameters(recurse)

    def train(self, mode: bool = True) -> _WithoutAdapters:
        self.training = mode
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return self.policy(*args, **kwargs)
        finally:
            self.policy.train(was_training)


class AdapterDisabledReference:
    """The reference policy of a LoRA run: the policy's own frozen base, run with adapters disabled.

    Same interface as :class:`grpokit.models.reference.ReferencePolicy` (``model``, ``maybe_sync``,
    ``checkpoint_module``), at no memory cost and nothing to checkpoint.
    """

    def __init__(self, policy: torch.nn.Module):
        if not is_lora_model(policy):
            raise ValueError(f"AdapterDisabledReference needs a peft model, got {type(policy).__name__}")
        self.model = _WithoutAdapters(policy).eval()
        self.sync_steps = 0

    def maybe_sync(self, policy: torch.nn.Module, step: int) -> bool:
        """Never re-synced (the config rejects ``ref_model_sync_steps`` with LoRA)."""
        return False

    def checkpoint_module(self) -> torch.nn.Module | None:
        """Nothing to save: the base weights are the run's ``model.name_or_path``."""
        return None


def merge_adapter(
    adapter_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    dtype: str = "float32",
) -> Path:
    """Fold the adapters of ``adapter_dir`` into their base, ``W <- W + (alpha / r) B A``; save a full model.

    Args:
        adapter_dir: a LoRA checkpoint or ``RUN_DIR/final`` (``adapter_config.json`` + weights).
        output_dir: where the merged model and the tokenizer go (``save_pretrained`` layout, safetensors);
            must not exist or be empty.
        base: the base model directory; default: ``base_model_name_or_path`` of the adapter config.
        dtype: dtype to load the base in (and save the merged model in).
    Returns:
        ``output_dir``.
    """
    import json

    from grpokit.models.loading import load_model

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not is_adapter_dir(adapter_dir):
        raise ValueError(
            f"--adapter {str(adapter_dir)!r} has no {ADAPTER_CONFIG_FILE}: not a LoRA checkpoint"
        )
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"--output {str(output_dir)!r} exists and is not empty")
    if base is None:
        base = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text())["base_model_name_or_path"]
        if not base:
            raise ValueError(f"{adapter_dir / ADAPTER_CONFIG_FILE} names no base model: pass --base")
    base_model = load_model(base, dtype=dtype)
    merged = _peft().PeftModel.from_pretrained(base_model, os.fspath(adapter_dir)).merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(os.fspath(output_dir), safe_serialization=True)
    source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else Path(base)
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, output_dir / name)
    return output_dir


def trainable_state_bytes(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, int]:
    """Bytes of the trainable parameters, of their optimizer state, and of all parameters.

    Returns:
        ``{"trainable_params": ..., "optimizer_state": ..., "all_params": ...}`` (tensor storage only).
    """

    def nbytes(tensors: Any) -> int:
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    state = 0
    if optimizer is not None:
        state = sum(nbytes(s.values()) for s in optimizer.state.values())
    return {
        "trainable_params": nbytes(p for p in model.parameters() if p.requires_grad),
        "optimizer_state": state,
        "all_params": nbytes(model.parameters()),
    }
