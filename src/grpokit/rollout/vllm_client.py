"""A sampler on a remote vLLM engine: ``grpokit vllm-serve`` on other devices or another machine.

:class:`VLLMServerSampler` implements the :class:`~grpokit.rollout.Sampler` protocol with the semantics of
the colocated :class:`~grpokit.rollout.vllm_sampler.VLLMSampler` (the same request planning, seeds and
batch assembly, :mod:`grpokit.rollout.vllm_base`), but sends the requests over HTTP to the server of
:mod:`grpokit.rollout.vllm_server`. It needs no vLLM and no dependency beyond the standard library,
torch and safetensors.

How a training step uses it (as with the colocated sampler)::

    sampler = VLLMServerSampler(tokenizer, host="gpu-box", port=8000, model=policy)  # waits for the server,
                                                                                     # pushes policy's weights
    batch = sampler.generate(prompts, G)   # batch.sampler_logprobs: the server engine's rollout log-probs
    sampler.update_weights(policy)         # after the update: chunked safetensors upload, then a reload

Multi-turn episodes use :meth:`~grpokit.rollout.vllm_base.VLLMSamplerBase.continue_from_ids` (the
:class:`~grpokit.rollout.base.TurnSampler` protocol): each prefix of token ids travels as a request's
``prompt_token_ids`` in the same ``POST /generate``, under the same weight-version check and deadline.

Every wait has a deadline: the wait for the server at start (``connect_timeout_s``), each request
(``timeout_s``) and each weight push as a whole (``weight_sync_timeout_s``). A failure raises
:class:`VLLMServerError` (or :class:`VLLMServerTimeout`) naming the server's address, which side failed
(no connection, no answer in time, or the server's own error) and what the client was doing.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import torch

from grpokit.rollout.transformers_sampler import _stop_token_ids
from grpokit.rollout.vllm_base import Sample, VLLMSamplerBase, checked_state_dict

__all__ = ["VLLMServerError", "VLLMServerSampler", "VLLMServerTimeout"]

_CLOSED = "the sampler was closed"


class VLLMServerError(RuntimeError):
    """The vLLM server could not be reached, or answered with an error."""


class VLLMServerTimeout(VLLMServerError, TimeoutError):
    """The vLLM server did not answer within the deadline."""


class _Connection:
    """The server and the state a sampler shares with its :meth:`~VLLMServerSampler.with_sampling` copies."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.url = f"http://{host}:{port}"
        self.info: dict[str, Any] = {}
        self.weight_version = 0
        self.generate_calls = 0
        self.turn_calls = 0  # continue_from_ids calls (multi-turn)
        self.unusable: str | None = None
        self.last_sync: dict[str, float] = {}

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        payload: Any = None,
        data: bytes | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """One HTTP request; JSON answer. Raises :class:`VLLMServerError` / :class:`VLLMServerTimeout`."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        body = json.dumps(payload).encode() if payload is not None else data
        headers = {"Content-Type": "application/json" if payload is not None else "application/octet-stream"}
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except TimeoutError as error:
            raise VLLMServerTimeout(
                f"the vLLM server at {self.url} did not answer within {timeout:g} s while {what} "
                f"({method} {path}); the server is stuck or overloaded: check its log, or raise "
                "vllm.server_timeout_s"
            ) from error
        except (OSError, http.client.HTTPException) as error:
            raise VLLMServerError(
                f"lost the vLLM server at {self.url} while {what} ({method} {path}): {type(error).__name__}: "
                f"{error}. Is `grpokit vllm-serve` still running there?"
            ) from error
        finally:
            connection.close()
        try:
            answer = json.loads(raw) if raw else {}
        except json.JSONDecodeError as error:
            raise VLLMServerError(
                f"{self.url} answered {method} {path} with HTTP {response.status} and a body that is not JSON "
                f"while {what}: is it a grpokit vllm-serve server?"
            ) from error
        if response.status != 200:
            text = raw[:300].decode(errors="replace")
            message = answer.get("error", text) if isinstance(answer, dict) else text
            error_class = VLLMServerTimeout if response.status == 504 else VLLMServerError
            raise error_class(
                f"the vLLM server at {self.url} failed while {what}: HTTP {response.status}: {message}"
            )
        if not isinstance(answer, dict):
            raise VLLMServerError(f"{self.url} answered {method} {path} with {type(answer).__name__}, not an object")
        return answer


def wait_for_server(host: str, port: int, deadline_s: float, *, poll_s: float = 0.5) -> dict[str, Any]:
    """Poll ``GET /health`` until the server answers ok; return its answer.

    Raises:
        VLLMServerTimeout: no healthy answer within ``deadline_s``; the message says what to run.
    """
    connection = _Connection(host, port, timeout_s=max(min(poll_s * 4, deadline_s), 0.1))
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        try:
            connection.timeout_s = max(min(connection.timeout_s, remaining), 0.05)
            return connection.request("GET", "/health", "waiting for the server to start")
        except VLLMServerError as error:
            last = str(error)
        if time.monotonic() + poll_s >= deadline:
            break
        time.sleep(poll_s)
    raise VLLMServerTimeout(
        f"no healthy grpokit vLLM server at {connection.url} within {deadline_s:g} s (last: {last}). Start it "
        f"with `grpokit vllm-serve --model PATH --port {port}` on the machine that runs vLLM (it takes a "
        "minute or more to load; add --host 0.0.0.0 to accept other machines), or point vllm.server_host / "
        "vllm.server_port at it"
    )


class VLLMServerSampler(VLLMSamplerBase):
    """RL sampler on a ``grpokit vllm-serve`` server (module docstring; conventions as
    :class:`~grpokit.rollout.vllm_sampler.VLLMSampler`'s).

    Args:
        tokenizer: the policy's tokenizer; it encodes prompts and decodes completions (the server's
            tokenizer never touches the data), and needs a pad token.
        host: the server's address.
        port: the server's port.
        model: the policy. Its weights are pushed at once (so the server samples from the trainer's
            weights, also on resume), and its generation config gives the stop tokens; None: neither.
        timeout_s: deadline of each request (a generate call included), in seconds.
        connect_timeout_s: how long to wait for the server at start; default: ``timeout_s``.
        weight_sync_timeout_s: deadline of one whole :meth:`update_weights` (all chunks and the reload).
        weight_chunk_mb: largest request body of a weight push, in MiB (a tensor larger than this travels
            alone in its chunk); capped by the server's ``max_request_bytes``.
        eos_token_id: stop token(s); default: the model's generation config plus the tokenizer's EOS.
        max_new_tokens, min_new_tokens, temperature, top_p, top_k, temperature_schedule,
        max_prompt_length, prompt_truncation, seed, do_sample: as for
            :class:`~grpokit.rollout.vllm_sampler.VLLMSampler`.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        model: Any = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float | None = None,
        weight_sync_timeout_s: float = 300.0,
        weight_chunk_mb: float = 256.0,
        eos_token_id: int | list[int] | None = None,
        max_new_tokens: int = 64,
        min_new_tokens: int = 0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        temperature_schedule: tuple[float, float] | None = None,
        max_prompt_length: int | None = None,
        prompt_truncation: str = "error",
        seed: int = 0,
        do_sample: bool = True,
    ):
        self._configure(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, temperature_schedule=temperature_schedule, max_prompt_length=max_prompt_length,
            prompt_truncation=prompt_truncation, seed=seed, do_sample=do_sample,
        )  # fmt: skip
        for name, value in (
            ("timeout_s", timeout_s),
            ("weight_sync_timeout_s", weight_sync_timeout_s),
            ("weight_chunk_mb", weight_chunk_mb),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if connect_timeout_s is not None and not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0 or None, got {connect_timeout_s}")
        if not 0 < int(port) < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; load it with grpokit.models.load_tokenizer")
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.stop_ids = _stop_token_ids(model, tokenizer, eos_token_id)
        self.weight_sync_timeout_s = float(weight_sync_timeout_s)
        self.weight_chunk_bytes = int(weight_chunk_mb * 2**20)

        wait_for_server(host, int(port), timeout_s if connect_timeout_s is None else connect_timeout_s)
        self._conn = _Connection(host, int(port), float(timeout_s))
        info = self._conn.request("GET", "/info", "reading the served model's description")
        for key in ("tensors", "dtype", "max_model_len", "weight_version"):
            if key not in info:
                raise VLLMServerError(f"{self._conn.url}/info lacks {key!r}: is it a grpokit vllm-serve server?")
        self._conn.info = info
        self._conn.weight_version = int(info["weight_version"])
        if model is not None:
            self.update_weights(model)

    # -- what the base class needs ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._conn.url

    @property
    def max_model_len(self) -> int:
        return int(self._conn.info["max_model_len"])

    @property
    def engine_dtype(self) -> torch.dtype:
        dtype = getattr(torch, str(self._conn.info["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise VLLMServerError(f"{self.url} serves an unknown dtype {self._conn.info['dtype']!r}")
        return dtype

    @property
    def weight_version(self) -> int:
        """The server's weight version this sampler last pushed or saw (0: the served checkpoint)."""
        return self._conn.weight_version

    @property
    def last_sync(self) -> dict[str, float]:
        """Metrics of the last successful :meth:`update_weights` (empty before the first)."""
        return dict(self._conn.last_sync)

    def _check_usable(self) -> None:
        if self._conn.unusable is not None:
            raise RuntimeError(self._conn.unusable)

    def run_requests(self, specs: list[dict[str, Any]]) -> list[list[Sample]]:
        """Send request specs to the server in one ``POST /generate``; samples per spec, by index."""
        conn = self._conn
        conn.generate_calls += 1
        prompts = len({tuple(spec["prompt_token_ids"]) for spec in specs})
        samples = sum(int(spec["n"]) for spec in specs)
        return self._post_generate(
            specs,
            f"generating rollout batch {conn.generate_calls} of this run ({prompts} prompts, {samples} samples) "
            f"with weight version {conn.weight_version}",
        )

    def _run_turn_requests(self, specs: list[dict[str, Any]]) -> list[list[Sample]]:
        conn = self._conn
        conn.turn_calls += 1
        longest = max(len(spec["prompt_token_ids"]) for spec in specs)
        return self._post_generate(
            specs,
            f"continuing token prefixes, call {conn.turn_calls} of this run ({len(specs)} prefixes of up to "
            f"{longest} tokens, max_new_tokens={specs[0]['max_tokens']}) with weight version {conn.weight_version}",
        )

    def _post_generate(self, specs: list[dict[str, Any]], what: str) -> list[list[Sample]]:
        """``POST /generate`` with the weight version this sampler expects (the server answers 409 when its
        engine holds another); checks the answer's shape. ``what`` names the call in errors."""
        conn = self._conn
        answer = conn.request(
            "POST", "/generate", what, payload={"requests": specs, "weight_version": conn.weight_version}
        )
        raw = answer.get("samples")
        if not isinstance(raw, list) or len(raw) != len(specs):
            raise VLLMServerError(
                f"the vLLM server at {conn.url} answered {len(raw) if isinstance(raw, list) else raw!r} results "
                f"for {len(specs)} requests while {what}"
            )
        answers: list[list[Sample]] = []
        for index, (spec, got) in enumerate(zip(specs, raw)):
            if len(got) != spec["n"] or any(len(ids) != len(logprobs) for ids, logprobs in got):
                raise VLLMServerError(
                    f"the vLLM server at {conn.url} answered request {index} with {len(got)} samples (expected "
                    f"{spec['n']}) or with token ids and log-probs of different lengths while {what}"
                )
            answers.append([([int(t) for t in ids], [float(x) for x in logprobs]) for ids, logprobs in got])
        return answers

    # -- weight sync ------------------------------------------------------------------------------

    def update_weights(self, weights: Any) -> dict[str, float]:
        """Push the trainer's weights to the server and load them into its engine (the next version).

        Checks names and shapes against the served checkpoint (nothing is sent on a mismatch), casts floats
        to the engine dtype, sends them as safetensors in chunks of at most ``weight_chunk_mb``, then commits;
        the server loads them the way the colocated sampler does. The whole push has the deadline
        ``weight_sync_timeout_s``.

        Args:
            weights: the policy (any module with ``state_dict()``) or a ``{name: tensor}`` dict.

        Returns:
            Metrics: ``weight_sync/save_s`` (serialisation), ``weight_sync/transfer_s``,
            ``weight_sync/load_s`` (the server's reload), ``weight_sync/total_s``, ``weight_sync/megabytes``,
            ``weight_sync/chunks``, ``weight_sync/version``.

        Raises:
            ValueError: names, shapes or float/integer kinds do not match (nothing was sent).
            VLLMServerError / VLLMServerTimeout: the push failed or ran past its deadline; the sampler then
                refuses to generate until an ``update_weights`` succeeds.
        """
        conn = self._conn
        if conn.unusable == _CLOSED:
            raise RuntimeError(_CLOSED)
        start = time.perf_counter()
        deadline = time.monotonic() + self.weight_sync_timeout_s
        expected = {name: (tuple(shape), dtype) for name, (shape, dtype) in conn.info["tensors"].items()}
        state = checked_state_dict(weights, expected)
        dtype = self.engine_dtype
        tensors = {
            name: tensor.detach().to(device="cpu", dtype=dtype if tensor.is_floating_point() else None).contiguous()
            for name, tensor in state.items()
        }
        limit = min(self.weight_chunk_bytes, int(conn.info.get("max_request_bytes", self.weight_chunk_bytes)))
        from safetensors.torch import save

        chunks = [save(chunk) for chunk in _chunks(tensors, limit)]
        saved = time.perf_counter()
        version = conn.weight_version + 1
        what = f"pushing weight version {version} ({len(tensors)} tensors, {len(chunks)} chunks)"

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VLLMServerTimeout(
                    f"{what} to the vLLM server at {conn.url} ran past weight_sync_timeout_s="
                    f"{self.weight_sync_timeout_s:g} s"
                )
            return left

        try:
            conn.request("POST", "/weights/begin", what, payload={"version": version, "num_chunks": len(chunks)},
                         timeout_s=min(conn.timeout_s, remaining()))  # fmt: skip
            for index, data in enumerate(chunks):
                query = urlencode({"version": version, "index": index})
                conn.request("POST", f"/weights/chunk?{query}", f"{what}: chunk {index}", data=data,
                             timeout_s=remaining())  # fmt: skip
            sent = time.perf_counter()
            answer = conn.request("POST", "/weights/commit", f"{what}: loading it into the engine",
                                  payload={"version": version}, timeout_s=remaining())  # fmt: skip
        except VLLMServerError as error:
            conn.unusable = (
                f"the last weight push failed ({error}); the server may hold other weights than the trainer: "
                "call update_weights again, or restart the server"
            )
            raise
        done = time.perf_counter()
        conn.weight_version = int(answer.get("weight_version", version))
        conn.unusable = None
        conn.last_sync = {
            "weight_sync/save_s": saved - start,
            "weight_sync/transfer_s": sent - saved,
            "weight_sync/load_s": done - sent,
            "weight_sync/total_s": done - start,
            "weight_sync/megabytes": sum(len(data) for data in chunks) / 2**20,
            "weight_sync/chunks": float(len(chunks)),
            "weight_sync/version": float(conn.weight_version),
        }
        return dict(conn.last_sync)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop using the server (it keeps running and serves the next run: stop it with
        :meth:`shutdown_server` or by ending ``grpokit vllm-serve``)."""
        self._conn.unusable = _CLOSED

    def shutdown_server(self) -> None:
        """Ask the server to stop (``POST /close``), then close this sampler."""
        self._conn.request("POST", "/close", "asking the server to stop")
        self.close()

    def __enter__(self) -> VLLMServerSampler:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _chunks(tensors: Mapping[str, torch.Tensor], limit: int) -> list[dict[str, torch.Tensor]]:
    """Split ``tensors`` (in order) into groups of at most ``limit`` bytes of data; a larger tensor goes alone."""
    chunks: list[dict[str, torch.Tensor]] = []
    current: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > limit:
            chunks.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    if current or not chunks:
        chunks.append(current)
    return chunks
