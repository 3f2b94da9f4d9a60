"""Worker-side half of :class:`~grpokit.rollout.vllm_sampler.VLLMSampler`'s weight sync.

vLLM runs the model in worker processes; the sampler names this class as the engine's
``worker_extension_cls``, so its methods are mixed into every worker and can be called by name
through ``LLM.collective_rpc`` (no pickled callables, so ``VLLM_ALLOW_INSECURE_SERIALIZATION`` stays
off). This module is imported inside the workers only; it needs vLLM, the sampler module does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class GRPOKitWorkerExtension:
    """Methods added to each vLLM worker (``self`` is the worker: ``self.model_runner``, ...)."""

    # Provided by the vLLM worker this class is mixed into (declared for the type checker only).
    model_runner: Any
    reload_weights: Callable[..., Any]

    def grpokit_load_weights(self, weights_path: str) -> dict[str, Any]:
        """Load a full checkpoint-format state dict from ``weights_path`` into the live model, in place.

        Uses the worker's own ``reload_weights`` (vLLM's layer-wise in-place reload, which re-runs
        ``process_weights_after_loading`` and so re-packs CPU GEMM weights), then repairs tied
        embeddings: on CPU, a tied ``lm_head`` keeps the oneDNN GEMM packed from the *old* embedding
        matrix, because only ``embed_tokens`` is reloaded. Re-dispatching the GEMM on the (updated,
        shared) weight makes the logits follow the new embedding.

        Returns:
            ``{"tied_lm_head_refreshed": bool}`` for the caller's logs.
        """
        self.reload_weights(weights_path=weights_path, is_checkpoint_format=True)
        refreshed = False
        model = self.model_runner.get_model()
        hf_config = self.model_runner.model_config.hf_config
        text_config = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
        tied = bool(getattr(text_config, "tie_word_embeddings", False))
        lm_head = getattr(model, "lm_head", None)
        if tied and lm_head is not None and getattr(lm_head, "weight", None) is not None:
            from vllm.platforms import current_platform

            if current_platform.is_cpu() and hasattr(lm_head, "cpu_linear"):
                from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

                dispatch_cpu_unquantized_gemm(lm_head, remove_weight=False)
                refreshed = True
        return {"tied_lm_head_refreshed": refreshed}
