"""The chat-completions client against real HTTP servers: the tiny-model dev server and misbehaving ones."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from feedback.llm_client import EndpointConfig, LLMError, StreamedChat, chat
from tests.feedback.llm_fakes import fake_server

MESSAGES = [{"role": "user", "content": "Tell me about rivers."}]


def _stream(config: EndpointConfig) -> tuple[list[str], StreamedChat]:
    streamed = StreamedChat(config, MESSAGES)

    async def go() -> list[str]:
        async with httpx.AsyncClient(timeout=5) as client:
            return [d async for d in streamed.deltas(client)]

    # A fresh loop in its own thread: the browser tests' session-wide Playwright keeps a loop in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, go()).result(), streamed


def test_it_gets_a_non_streaming_answer_from_the_dev_server(llm_server):
    result = chat(EndpointConfig(llm_server.base_url, "tiny-a", {"max_tokens": 10, "seed": 3}), MESSAGES)
    assert result.text.strip()
    assert result.model == "tiny-a"
    assert result.usage["completion_tokens"] == 10
    assert result.latency_ms >= 0


def test_it_streams_token_by_token_and_matches_the_non_streaming_answer(llm_server):
    config = EndpointConfig(llm_server.base_url, "tiny-b", {"max_tokens": 8, "seed": 5})
    deltas, streamed = _stream(config)
    assert len(deltas) >= 2  # arrived as several chunks, not one
    assert streamed.result is not None and streamed.result.text == "".join(deltas)
    assert streamed.result.first_token_ms is not None
    # Same seed, same model: the streamed and the plain answer are the same text.
    assert chat(config, MESSAGES).text == streamed.result.text


def test_two_model_ids_are_two_different_models(llm_server):
    a = chat(EndpointConfig(llm_server.base_url, "tiny-a", {"max_tokens": 8, "seed": 1}), MESSAGES).text
    b = chat(EndpointConfig(llm_server.base_url, "tiny-b", {"max_tokens": 8, "seed": 1}), MESSAGES).text
    assert a != b


def test_it_sends_only_known_sampling_params_and_the_key_as_bearer():
    config = EndpointConfig("http://x/v1", "m", {"temperature": 0.2, "model": "evil", "messages": []}, api_key="sk-1")
    body = config.body(MESSAGES, stream=False)
    assert body["model"] == "m" and body["messages"] == MESSAGES and body["temperature"] == 0.2
    assert config.headers()["Authorization"] == "Bearer sk-1"
    assert config.url == "http://x/v1/chat/completions"
    with fake_server("echo-key") as url:
        assert chat(EndpointConfig(url, "m", api_key="sk-secret"), MESSAGES).text == "Bearer sk-secret"


def test_an_unknown_model_id_is_a_clear_404(llm_server):
    with pytest.raises(LLMError, match="HTTP 404.*no such URL or model id"):
        chat(EndpointConfig(llm_server.base_url, "nope"), MESSAGES)


def test_a_server_that_is_down_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMError, match="Could not connect"):
        chat(EndpointConfig(f"http://127.0.0.1:{port}/v1", "m"), MESSAGES)


def test_a_slow_server_times_out_after_the_setting(settings):
    settings.CHORUS_LLM_READ_TIMEOUT = 0.5
    with fake_server("slow") as url, pytest.raises(LLMError, match="too long"):
        chat(EndpointConfig(url, "m"), MESSAGES)


@pytest.mark.parametrize("mode, message", [
    ("garbage", "not JSON"),
    ("unauthorized", "HTTP 401 .the API key was refused.: Incorrect API key"),
    ("error", "HTTP 500"),
])
def test_bad_answers_become_clear_messages_without_the_key(mode, message):
    with fake_server(mode) as url, pytest.raises(LLMError, match=message) as exc:
        chat(EndpointConfig(url, "m", api_key="sk-never-shown"), MESSAGES)
    assert "sk-never-shown" not in str(exc.value)


@pytest.mark.parametrize("mode, message", [
    ("garbage", "not server-sent events"),
    ("truncated", "ended before the answer was complete"),
    ("unauthorized", "HTTP 401"),
])
def test_bad_streams_become_clear_messages(mode, message):
    with fake_server(mode) as url, pytest.raises(LLMError, match=message):
        _stream(EndpointConfig(url, "m"))
