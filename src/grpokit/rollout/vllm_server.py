"""The HTTP side of ``grpokit vllm-serve``: a vLLM engine on its own devices (or machine), driven by a trainer.

The server holds one engine (an :class:`EngineHost`, normally :class:`VLLMEngineHost` around a
:class:`~grpokit.rollout.vllm_sampler.VLLMSampler`) and answers, in JSON unless noted:

==========================  ==========================================================================
``GET /health``             ``{"status": "ok", "weight_version": v}``, or 503 with the reason when the
                            engine cannot generate (a failed weight load, closing)
``GET /info``               model, dtype, ``max_model_len``, the checkpoint's tensors ``{name: [shape,
                            dtype]}``, ``weight_version``, ``max_request_bytes``
``POST /generate``          ``{"requests": [spec, ...], "weight_version": v}`` (specs as in
                            :mod:`grpokit.rollout.vllm_base`) -> ``{"samples": [[[ids], [logprobs]], ...]
                            per request], "weight_version": v, "seconds": s}``; 409 when the engine's
                            weights are not version ``v``; 400 when a prompt plus its ``max_tokens``
                            exceeds ``max_model_len``. Prompts are token ids: a rollout prompt, or a
                            multi-turn conversation's exact ids so far (``continue_from_ids``)
``POST /weights/begin``     ``{"version": v, "num_chunks": k}``: start receiving version ``v`` (the
                            current version + 1, else 409); discards any unfinished upload
``POST /weights/chunk``     ``?version=v&index=i``, body: safetensors bytes of some of the tensors
``POST /weights/commit``    ``{"version": v}``: all k chunks arrived -> load them into the live engine
                            (``VLLMSampler.update_weights``: names and shapes checked first, then an in-place
                            reload and a prefix-cache reset) -> ``{"weight_version": v, "metrics": {...}}``
``POST /reset``             drop an unfinished upload and the engine's prefix cache
``POST /close``             answer, then stop serving (``grpokit vllm-serve`` exits)
==========================  ==========================================================================

Errors are ``{"error": message}`` with 400 (a bad request, e.g. wrong tensor names), 409 (version
mismatch), 413 (body over ``max_request_bytes``), 500 (the engine failed), 503 (the engine cannot generate
now) or 504 (the engine did not finish within its deadline).

Choices, numbered:

1. One engine call at a time (a lock): vLLM's ``LLM`` is not thread-safe. A request that cannot get the
   engine within ``request_timeout_s`` gets 503 instead of waiting forever; reading a request body has the
   same deadline (the socket timeout), so a stalled client never holds a thread.
2. Weights travel as safetensors (no pickle: nothing the server loads can run code), in chunks under the
   client's size limit, so no single request body is larger than ``max_request_bytes``. They are staged in
   memory and loaded only once all chunks arrived: a half-sent version never reaches the engine.
3. Versions are the server's: it starts at 0 (the ``--model`` checkpoint) and each committed upload adds 1.
   The client states the version it expects; a mismatch (another trainer pushed to the same server, or the
   server restarted) is refused rather than silently sampling from other weights.

This module needs no vLLM itself (the tests drive it with a stub engine); :class:`VLLMEngineHost` imports it
through :class:`~grpokit.rollout.vllm_sampler.VLLMSampler`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import torch

from grpokit.rollout.vllm_base import Sample, check_request_spec

__all__ = ["EngineHost", "VLLMEngineHost", "VLLMServer"]


class EngineHost(Protocol):
    """What the server needs from its engine."""

    def info(self) -> dict[str, Any]:
        """JSON-serialisable: ``model``, ``dtype``, ``max_model_len``, ``tensors`` ``{name: [shape, dtype]}``."""
        ...

    def unusable(self) -> str | None:
        """Why the engine cannot generate now, or None."""
        ...

    def run_requests(self, specs: list[dict[str, Any]]) -> list[list[Sample]]: ...

    def update_weights(self, tensors: dict[str, torch.Tensor]) -> dict[str, float]: ...

    def reset_prefix_cache(self) -> None: ...

    def close(self) -> None: ...


class VLLMEngineHost:
    """:class:`EngineHost` on a :class:`~grpokit.rollout.vllm_sampler.VLLMSampler` (the colocated sampler's
    engine and weight loading, so both modes load weights the same way)."""

    def __init__(self, sampler: Any, model_name: str):
        self.sampler = sampler
        self.model_name = model_name

    def info(self) -> dict[str, Any]:
        engine = self.sampler._engine
        return {
            "model": self.model_name,
            "dtype": str(self.sampler.engine_dtype).removeprefix("torch."),
            "max_model_len": int(self.sampler.max_model_len),
            "tensors": {name: [list(shape), dtype] for name, (shape, dtype) in engine.expected.items()},
        }

    def unusable(self) -> str | None:
        return self.sampler._engine.unusable

    def run_requests(self, specs: list[dict[str, Any]]) -> list[list[Sample]]:
        return self.sampler.run_requests(specs)

    def update_weights(self, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        return self.sampler.update_weights(tensors)

    def reset_prefix_cache(self) -> None:
        if not self.sampler.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache")

    def close(self) -> None:
        self.sampler.close()


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class _Upload:
    """Chunks of one weight version, staged until commit (choice 2)."""

    def __init__(self, version: int, num_chunks: int):
        self.version = version
        self.num_chunks = num_chunks
        self.chunks: dict[int, dict[str, torch.Tensor]] = {}


class VLLMServer:
    """A threaded HTTP server in front of one engine (module docstring for the endpoints).

    Args:
        engine: the engine host.
        host: address to bind (``0.0.0.0``: every interface).
        port: TCP port; 0 picks a free one (see :attr:`port`).
        request_timeout_s: deadline of waiting for the engine and of reading a request (choice 1).
        max_request_bytes: largest request body accepted.
        log: where one line per request goes (None: silent).
    """

    def __init__(
        self,
        engine: EngineHost,
        host: str = "0.0.0.0",
        port: int = 8000,
        *,
        request_timeout_s: float = 600.0,
        max_request_bytes: int = 2**31,
        log: Callable[[str], None] | None = None,
    ):
        if not request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        if max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
        self.engine = engine
        self.max_model_len = int(engine.info()["max_model_len"])
        self.request_timeout_s = float(request_timeout_s)
        self.max_request_bytes = int(max_request_bytes)
        self.log = log
        self.weight_version = 0
        self.engine_lock = threading.Lock()
        self.upload: _Upload | None = None
        self.upload_lock = threading.Lock()
        self.closing = False
        self.httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` or ``POST /close``."""
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> VLLMServer:
        """Serve from a background thread (tests, notebooks); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="grpokit-vllm-server", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and release the port (the engine stays up: :meth:`EngineHost.close` is the caller's)."""
        self.closing = True
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(10.0)

    # -- endpoints ----------------------------------------------------------------------------------

    def _engine_call(self, what: str, fn: Callable[[], Any]) -> Any:
        if not self.engine_lock.acquire(timeout=self.request_timeout_s):
            raise _HTTPError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the engine stayed busy for request_timeout_s={self.request_timeout_s:g} s; {what} not started",
            )
        try:
            return fn()
        finally:
            self.engine_lock.release()

    def health(self) -> dict[str, Any]:
        reason = "the server is closing" if self.closing else self.engine.unusable()
        if reason is not None:
            raise _HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, reason)
        return {"status": "ok", "weight_version": self.weight_version}

    def info(self) -> dict[str, Any]:
        return self.engine.info() | {
            "weight_version": self.weight_version,
            "max_request_bytes": self.max_request_bytes,
        }

    def generate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, 'expected {"requests": [spec, ...], "weight_version": v}')
        try:
            specs = [check_request_spec(spec, i) for i, spec in enumerate(body["requests"])]
        except ValueError as error:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, str(error)) from error
        for index, spec in enumerate(specs):
            # vLLM would silently cut such a request at max_model_len, and a multi-turn prefix grows every turn.
            if len(spec["prompt_token_ids"]) + spec["max_tokens"] > self.max_model_len:
                raise _HTTPError(
                    HTTPStatus.BAD_REQUEST,
                    f"request {index}: {len(spec['prompt_token_ids'])} prompt tokens + max_tokens={spec['max_tokens']} "
                    f"exceed the engine's max_model_len={self.max_model_len}",
                )
        expected = body.get("weight_version")

        def run() -> dict[str, Any]:
            if expected is not None and expected != self.weight_version:
                raise _HTTPError(
                    HTTPStatus.CONFLICT,
                    f"the engine holds weight version {self.weight_version}, the client expected {expected} "
                    "(another trainer pushed weights, or the server was restarted)",
                )
            reason = self.engine.unusable()
            if reason is not None:
                raise _HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, reason)
            start = time.perf_counter()
            answers = self.engine.run_requests(specs)
            return {
                "samples": [[[ids, logprobs] for ids, logprobs in samples] for samples in answers],
                "weight_version": self.weight_version,
                "seconds": time.perf_counter() - start,
            }

        return self._engine_call(f"generation of {len(specs)} requests", run)

    def weights_begin(self, body: Any) -> dict[str, Any]:
        version, num_chunks = _int_field(body, "version"), _int_field(body, "num_chunks")
        if num_chunks < 1:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"num_chunks must be >= 1, got {num_chunks}")
        if version != self.weight_version + 1:
            raise _HTTPError(
                HTTPStatus.CONFLICT,
                f"weight version {version} cannot follow the engine's version {self.weight_version} (expected "
                f"{self.weight_version + 1}; another trainer pushed weights, or the server was restarted)",
            )
        with self.upload_lock:
            self.upload = _Upload(version, num_chunks)
        return {"version": version, "num_chunks": num_chunks}

    def weights_chunk(self, query: dict[str, list[str]], data: bytes) -> dict[str, Any]:
        try:
            version, index = int(query["version"][0]), int(query["index"][0])
        except (KeyError, ValueError, IndexError) as error:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "/weights/chunk needs ?version=V&index=I") from error
        from safetensors.torch import load

        with self.upload_lock:
            upload = self._current_upload(version)
            if not 0 <= index < upload.num_chunks:
                raise _HTTPError(
                    HTTPStatus.BAD_REQUEST, f"chunk index {index} is outside [0, {upload.num_chunks})"
                )
        try:
            tensors = load(data)
        except Exception as error:  # safetensors raises its own error types on a corrupt body
            raise _HTTPError(
                HTTPStatus.BAD_REQUEST, f"chunk {index} of version {version} is not safetensors data: {error}"
            ) from error
        with self.upload_lock:
            upload = self._current_upload(version)
            upload.chunks[index] = tensors
            return {"version": version, "index": index, "received": len(upload.chunks)}

    def weights_commit(self, body: Any) -> dict[str, Any]:
        version = _int_field(body, "version")
        with self.upload_lock:
            upload = self._current_upload(version)
            missing = [i for i in range(upload.num_chunks) if i not in upload.chunks]
            if missing:
                raise _HTTPError(
                    HTTPStatus.BAD_REQUEST, f"version {version} is missing chunks {missing} of {upload.num_chunks}"
                )
            self.upload = None
        tensors: dict[str, torch.Tensor] = {}
        for index in range(upload.num_chunks):
            for name, tensor in upload.chunks[index].items():
                if name in tensors:
                    raise _HTTPError(HTTPStatus.BAD_REQUEST, f"tensor {name!r} arrived in two chunks")
                tensors[name] = tensor

        def load() -> dict[str, Any]:
            try:
                metrics = self.engine.update_weights(tensors)
            except ValueError as error:  # names/shapes: nothing reached the engine
                raise _HTTPError(HTTPStatus.BAD_REQUEST, str(error)) from error
            except TimeoutError as error:
                raise _HTTPError(HTTPStatus.GATEWAY_TIMEOUT, str(error)) from error
            self.weight_version = version
            return {"weight_version": version, "metrics": metrics}

        return self._engine_call(f"loading weight version {version}", load)

    def _current_upload(self, version: int) -> _Upload:
        upload = self.upload
        if upload is None or upload.version != version:
            current = "none" if upload is None else f"version {upload.version}"
            raise _HTTPError(
                HTTPStatus.CONFLICT,
                f"no upload of weight version {version} in progress (current upload: {current}); "
                "POST /weights/begin first",
            )
        return upload

    def reset(self) -> dict[str, Any]:
        with self.upload_lock:
            self.upload = None
        self._engine_call("prefix-cache reset", self.engine.reset_prefix_cache)
        return {"status": "ok", "weight_version": self.weight_version}

    def close_later(self) -> dict[str, Any]:
        self.closing = True
        # shutdown() waits for serve_forever to return: not from a handler thread of that loop.
        threading.Thread(target=self.httpd.shutdown, name="grpokit-vllm-server-close", daemon=True).start()
        return {"status": "closing"}


def _int_field(body: Any, name: str) -> int:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"expected an integer {name!r} in the JSON body, got {value!r}")
    return value


def _handler_class(server: VLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = server.request_timeout_s  # a client that stops sending mid-body frees the thread

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            if server.log is not None:
                server.log(f"{self.address_string()} {format % args}")

        def _reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            if status != HTTPStatus.OK:
                self.close_connection = True  # an error may leave an unread body on the socket
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (its deadline passed) while the engine worked: nobody to answer.
                self.close_connection = True
                if server.log is not None:
                    server.log(f"{self.command} {self.path}: the client left before the answer (HTTP {status})")

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > server.max_request_bytes:
                raise _HTTPError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"request body of {length} bytes is over max_request_bytes={server.max_request_bytes}; "
                    "send smaller weight chunks",
                )
            return self.rfile.read(length) if length else b""

        def _json(self) -> Any:
            try:
                return json.loads(self._body() or b"{}")
            except json.JSONDecodeError as error:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}") from error

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            try:
                route = (method, url.path)
                if route == ("GET", "/health"):
                    payload = server.health()
                elif route == ("GET", "/info"):
                    payload = server.info()
                elif route == ("POST", "/generate"):
                    payload = server.generate(self._json())
                elif route == ("POST", "/weights/begin"):
                    payload = server.weights_begin(self._json())
                elif route == ("POST", "/weights/chunk"):
                    payload = server.weights_chunk(parse_qs(url.query), self._body())
                elif route == ("POST", "/weights/commit"):
                    payload = server.weights_commit(self._json())
                elif route == ("POST", "/reset"):
                    payload = server.reset()
                elif route == ("POST", "/close"):
                    payload = server.close_later()
                else:
                    raise _HTTPError(HTTPStatus.NOT_FOUND, f"no endpoint {method} {url.path}")
            except _HTTPError as error:
                self._reply(error.status, {"error": str(error)})
                return
            except Exception as error:  # an engine failure: the client gets it, the server keeps serving
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})
                if server.log is not None:
                    server.log(f"{method} {url.path} failed: {type(error).__name__}: {error}")
                return
            self._reply(HTTPStatus.OK, payload)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

    return Handler
