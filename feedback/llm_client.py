"""A small client for OpenAI-compatible chat-completions servers (vLLM, TGI, Ollama, hosted APIs).

Only what a live study needs: one non-streaming call (`chat`) and one streaming call (`astream_chat`, the
server-sent-events form with `data: {...}` chunks and a final `data: [DONE]`). Every failure — the server
is down, too slow, answers an HTTP error or something that is not a chat completion — becomes an
`LLMError` whose message can be shown to a participant or researcher as is; it never contains the API key.
Timeouts come from settings (CHORUS_LLM_*), so a slow model cannot hold a participant's page forever.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

# Sampling parameters a study may set; anything else in ModelEndpoint.params is ignored, so a typo
# cannot smuggle arbitrary fields (or a different "model"/"messages") into the request.
SAMPLING_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "presence_penalty", "frequency_penalty", "stop")


class LLMError(Exception):
    """A chat request that produced no usable answer; str(exc) is a message fit for a person."""


@dataclass
class EndpointConfig:
    """What a request needs from a ModelEndpoint (a plain object, so the client never touches the ORM)."""

    base_url: str  # ends in /v1 (or the server's equivalent); /chat/completions is appended
    model_id: str  # the "model" field of the request
    params: dict[str, Any] = field(default_factory=dict)  # sampling parameters, see SAMPLING_PARAMS
    api_key: str = ""  # sent as a Bearer token when set
    system_prompt: str = ""  # prepended as a system message when set

    @classmethod
    def from_endpoint(cls, endpoint: Any) -> EndpointConfig:
        return cls(
            base_url=endpoint.base_url,
            model_id=endpoint.model_id,
            params=dict(endpoint.params or {}),
            api_key=endpoint.api_key,
            system_prompt=endpoint.system_prompt,
        )

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def body(self, messages: list[dict[str, str]], *, stream: bool) -> dict[str, Any]:
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        body: dict[str, Any] = {k: v for k, v in self.params.items() if k in SAMPLING_PARAMS}
        body |= {"model": self.model_id, "messages": messages, "stream": stream}
        return body

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters actually sent (stored with every generated answer)."""
        return {k: v for k, v in self.params.items() if k in SAMPLING_PARAMS}


@dataclass
class ChatResult:
    text: str
    latency_ms: int  # request sent -> last token received
    first_token_ms: int | None = None  # request sent -> first token (streaming only)
    finish_reason: str = ""
    model: str = ""  # the model the server says answered
    usage: dict[str, Any] = field(default_factory=dict)


def _timeout() -> httpx.Timeout:
    # read = the longest silence between two chunks; the whole answer is bounded by CHORUS_LLM_TOTAL_TIMEOUT.
    return httpx.Timeout(
        connect=settings.CHORUS_LLM_CONNECT_TIMEOUT,
        read=settings.CHORUS_LLM_READ_TIMEOUT,
        write=settings.CHORUS_LLM_CONNECT_TIMEOUT,
        pool=settings.CHORUS_LLM_CONNECT_TIMEOUT,
    )


def _transport_error(exc: httpx.HTTPError) -> LLMError:
    if isinstance(exc, httpx.TimeoutException):
        return LLMError("The model took too long to answer (timed out).")
    if isinstance(exc, httpx.ConnectError):
        return LLMError("Could not connect to the model server (is it running, and is the URL right?).")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return LLMError("The model server's URL is not a valid http(s) URL.")
    return LLMError(f"The connection to the model server failed ({type(exc).__name__}).")


def _status_error(status: int, body: bytes) -> LLMError:
    detail = ""
    try:
        payload = json.loads(body)
        err = payload.get("error") if isinstance(payload, dict) else None
        detail = str(err.get("message", "") if isinstance(err, dict) else err or "")[:200]
    except (ValueError, AttributeError):
        pass
    reason = {
        401: "the API key was refused",
        403: "the API key may not use this model",
        404: "no such URL or model id",
        429: "too many requests (rate limited)",
    }.get(status, "the server reported an error" if status >= 500 else "the request was refused")
    suffix = f": {detail}" if detail else ""
    return LLMError(f"The model server answered HTTP {status} ({reason}){suffix}.")


def parse_completion(payload: Any) -> tuple[str, str, str, dict[str, Any]]:
    """(text, finish_reason, model, usage) of a non-streaming chat completion; LLMError if it is not one."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMError("The model server's answer was not a chat completion (no choices[0].message).") from exc
    if not isinstance(text, str):
        raise LLMError("The model server's answer had no text content.")
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    return text, str(choice.get("finish_reason") or ""), str(payload.get("model") or ""), usage


def chat(config: EndpointConfig, messages: list[dict[str, str]], *, client: httpx.Client | None = None) -> ChatResult:
    """One non-streaming chat completion."""
    started = time.monotonic()
    own = client is None
    client = client or httpx.Client(timeout=_timeout())
    try:
        response = client.post(config.url, json=config.body(messages, stream=False), headers=config.headers())
    except httpx.HTTPError as exc:
        raise _transport_error(exc) from exc
    finally:
        if own:
            client.close()
    if response.status_code != 200:
        raise _status_error(response.status_code, response.content)
    try:
        payload = response.json()
    except ValueError as exc:
        raise LLMError("The model server's answer was not JSON.") from exc
    text, finish, model, usage = parse_completion(payload)
    if time.monotonic() - started > settings.CHORUS_LLM_TOTAL_TIMEOUT:
        raise LLMError("The model took too long to answer (timed out).")
    return ChatResult(text, round((time.monotonic() - started) * 1000), None, finish, model, usage)


def _delta(payload: Any) -> tuple[str, str]:
    """(text delta, finish_reason) of one streamed chunk."""
    try:
        choice = payload["choices"][0] if payload["choices"] else {}
    except (KeyError, TypeError) as exc:
        raise LLMError("The model server streamed something that is not a chat-completion chunk.") from exc
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise LLMError("The model server streamed a chunk without text content.")
    return content or "", str(choice.get("finish_reason") or "")


class StreamedChat:
    """The state of one streamed answer: deltas arrive through `deltas()`, the result is `result` at the end."""

    def __init__(self, config: EndpointConfig, messages: list[dict[str, str]]):
        self.config = config
        self.messages = messages
        self.result: ChatResult | None = None

    async def deltas(self, client: httpx.AsyncClient) -> AsyncIterator[str]:
        config = self.config
        started = time.monotonic()
        first: int | None = None
        parts: list[str] = []
        finish = model = ""
        usage: dict[str, Any] = {}
        done = False
        try:
            async with client.stream(
                "POST", config.url, json=config.body(self.messages, stream=True), headers=config.headers()
            ) as response:
                if response.status_code != 200:
                    raise _status_error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if time.monotonic() - started > settings.CHORUS_LLM_TOTAL_TIMEOUT:
                        raise LLMError("The model took too long to answer (timed out).")
                    line = line.strip()
                    if not line or line.startswith(":"):
                        continue  # keep-alive comments and event separators
                    if not line.startswith("data:"):
                        if line.startswith(("event:", "id:", "retry:")):
                            continue
                        raise LLMError("The model server's stream was not server-sent events.")
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        payload = json.loads(data)
                    except ValueError as exc:
                        raise LLMError("The model server streamed a chunk that is not JSON.") from exc
                    if isinstance(payload, dict) and payload.get("error"):
                        raise _status_error(500, data.encode())
                    text, reason = _delta(payload)
                    finish = reason or finish
                    model = str(payload.get("model") or model)
                    if isinstance(payload.get("usage"), dict):
                        usage = payload["usage"]
                    if text:
                        if first is None:
                            first = round((time.monotonic() - started) * 1000)
                        parts.append(text)
                        yield text
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        if not done and not finish:
            raise LLMError("The model server's stream ended before the answer was complete.")
        self.result = ChatResult("".join(parts), round((time.monotonic() - started) * 1000), first, finish, model, usage)


def async_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=_timeout())
