"""A local OpenAI-compatible chat-completions server backed by tiny transformers models.

For the demo and the tests: it speaks the same protocol as vLLM, TGI or a hosted API (POST
/v1/chat/completions, streaming as server-sent events or not; GET /v1/models), so a study can be tried
end to end without a key or a GPU. The models are randomly initialised GPT-2-shaped causal LMs (2 layers,
64 wide) with the all-MiniLM-L6-v2 tokenizer that ships with the project: their answers are word salad,
but real tokens sampled by a real model, with real latency. Each model id gets its own seed, so two ids
give two different "models".

    python -m feedback.llm_dev_server --port 8001 --models tiny-a,tiny-b

Then register http://127.0.0.1:8001/v1 with model id tiny-a (and tiny-b) as endpoints of a study.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

DEFAULT_MODELS = ("tiny-a", "tiny-b", "tiny-c", "tiny-d")
MAX_NEW_TOKENS = 256


@dataclass
class TinyLMConfig:
    n_layer: int = 2  # transformer blocks
    n_embd: int = 64  # hidden width
    n_head: int = 2  # attention heads
    n_positions: int = 512  # longest context; longer prompts keep their last tokens
    default_max_tokens: int = 48  # answer length when a request sets no max_tokens
    token_delay_s: float = 0.0  # pause after each streamed token (makes streaming visible in demos)


def _tokenizer():
    from transformers import AutoTokenizer

    from personalization.encoder import default_model_path

    return AutoTokenizer.from_pretrained(str(default_model_path()))


class TinyChatModel:
    """One randomly initialised GPT-2-shaped LM; its weights depend only on the model id."""

    def __init__(self, model_id: str, tokenizer: Any, config: TinyLMConfig):
        from transformers import GPT2Config, GPT2LMHeadModel

        self.model_id = model_id
        self.tokenizer = tokenizer
        self.config = config
        seed = int.from_bytes(hashlib.sha256(model_id.encode()).digest()[:4], "big")
        torch.manual_seed(seed)
        gpt_config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
        self.model = GPT2LMHeadModel(gpt_config).eval()
        # Never sample special tokens ([PAD], [CLS], [SEP], [MASK], [UNK]): they decode to nothing.
        # BERT vocabularies also hold "[unused17]"-style placeholders that were never trained: ban those too.
        unused = [i for t, i in tokenizer.get_vocab().items() if t.startswith("[unused")]
        self.banned = torch.tensor(sorted(set(tokenizer.all_special_ids) | set(unused)))

    def _prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        text = "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages) + "\nassistant:"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        keep = self.config.n_positions - MAX_NEW_TOKENS
        return [self.tokenizer.cls_token_id, *ids[-keep:]]

    @torch.no_grad()
    def generate(self, messages: list[dict[str, Any]], *, max_tokens: int, temperature: float, top_p: float,
                 seed: int | None):
        """Yield (text delta, n_generated) token by token."""
        generator = torch.Generator().manual_seed(seed if seed is not None else int(time.time_ns() % 2**31))
        ids = torch.tensor([self._prompt_ids(messages)])
        prompt_len = ids.shape[1]
        past = None
        step_input = ids
        text = ""
        for n in range(1, max_tokens + 1):
            out = self.model(input_ids=step_input, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].float()
            logits[self.banned] = float("-inf")
            if temperature <= 0:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                if top_p < 1.0:
                    sorted_p, order = probs.sort(descending=True)
                    cut = sorted_p.cumsum(0) - sorted_p > top_p
                    sorted_p[cut] = 0.0
                    probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
                token = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            step_input = torch.tensor([[token]])
            full = self.tokenizer.decode(ids[0, prompt_len:].tolist(), skip_special_tokens=True)
            delta, text = full[len(text):], full
            yield delta, n, prompt_len


class DevServer:
    """The models plus the HTTP server; `start()` runs it in a daemon thread (tests, the demo)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, models: tuple[str, ...] = DEFAULT_MODELS,
                 config: TinyLMConfig | None = None):
        self.config = config or TinyLMConfig()
        tokenizer = _tokenizer()
        self.models = {m: TinyChatModel(m, tokenizer, self.config) for m in models}
        self.lock = threading.Lock()  # one generation at a time: the models are tiny, the CPU is not
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        return f"http://{host}:{port}/v1"

    def start(self) -> DevServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="llm-dev-server", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(server: DevServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            pass  # quiet: the demo's console belongs to runserver

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._json(status, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                data = [{"id": m, "object": "model", "owned_by": "chorus-dev"} for m in server.models]
                self._json(200, {"object": "list", "data": data})
            elif self.path == "/health":
                self._json(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                messages = request["messages"]
                if not isinstance(messages, list) or not messages:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                self._error(400, "the body must be JSON with a non-empty messages list")
                return
            model = server.models.get(str(request.get("model", "")))
            if model is None:
                self._error(404, f"model {request.get('model')!r} does not exist; try {sorted(server.models)}")
                return
            try:
                max_tokens = min(int(request.get("max_tokens") or server.config.default_max_tokens), MAX_NEW_TOKENS)
                temperature = float(request.get("temperature", 1.0))
                top_p = float(request.get("top_p", 1.0))
                seed = None if request.get("seed") is None else int(request["seed"])
            except (TypeError, ValueError):
                self._error(400, "max_tokens, temperature, top_p and seed must be numbers")
                return
            gen = model.generate(messages, max_tokens=max(max_tokens, 1), temperature=temperature, top_p=top_p,
                                 seed=seed)
            completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
            created = int(time.time())
            if request.get("stream"):
                self._stream(gen, completion_id, created, model.model_id)
                return
            with server.lock:
                steps = list(gen)
                parts = [delta for delta, _, _ in steps]
                n, prompt_len = (steps[-1][1], steps[-1][2]) if steps else (0, 0)
            self._json(200, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": prompt_len, "completion_tokens": n, "total_tokens": prompt_len + n},
            })

        def _stream(self, gen: Any, completion_id: str, created: int, model_id: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def send(choice: dict[str, Any]) -> None:
                chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                         "model": model_id, "choices": [choice]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            try:
                send({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
                while True:
                    with server.lock:
                        step = next(gen, None)
                    if step is None:
                        break
                    send({"index": 0, "delta": {"content": step[0]}, "finish_reason": None})
                    if server.config.token_delay_s:
                        time.sleep(server.config.token_delay_s)
                send({"index": 0, "delta": {}, "finish_reason": "length"})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away; nothing to clean up

    return Handler


def wait_until_up(url: str, timeout_s: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model ids")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between streamed tokens")
    parser.add_argument("--wait", action="store_true",
                        help="do not serve: wait (up to 180 s) until a server answers on --host/--port, then exit")
    args = parser.parse_args(argv)
    if args.wait:
        raise SystemExit(0 if wait_until_up(f"http://{args.host}:{args.port}/health", 180.0) else 1)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    server = DevServer(args.host, args.port, models, TinyLMConfig(token_delay_s=args.token_delay))
    print(f"Serving {', '.join(models)} at {server.base_url}/chat/completions (Ctrl-C stops)", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
