"""A fake OpenAI-compatible chat completions server for the end-to-end tests.

POST /v1/chat/completions on 127.0.0.1 (an ephemeral port). Every request is
recorded (body as parsed and as sent, headers, time; GETs of the model list in `gets`). By default the answer is
"Echo: <content of the last message>": streamed as Server-Sent Events when
the request says "stream": true (chat.completion.chunk objects over HTTP/1.1
chunked transfer encoding, a finish chunk, a usage chunk with "choices": [],
then "data: [DONE]"), else one chat.completion JSON object.

A test scripts what the model does with Reply objects:
- enqueue(reply, ...): a queue consumed one reply per request, after which
  the default applies again;
- on(predicate, reply): a standing rule for the requests it matches
  (e.g. "every request whose last message mentions X fails");
- context_limit = N: any request whose message contents add up to more than
  N characters is refused with 400 context_length_exceeded, as OpenAI does;
- reported_usage(req, text): the usage it reports for an answer (Reply(usage=False):
  none, as some providers do);
- prompt_token_factor = F: the usage it reports counts F times the tokens of
  the bot's own estimate (a model whose tokenizer needs more, or fewer,
  tokens for the same text).
Precedence: context limit, then rules, then the queue, then the default.

Python standard library only.
"""

import base64
import collections
import os
import sys
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from fake_telegram import read_request_body

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_telegram import _parse_multipart  # noqa: E402 - one multipart reader for both fakes

DEFAULT_CHUNKS = 3


@dataclass
class Reply:
    """What the fake model does with one request."""

    text: Optional[str] = None       # the answer; None = "Echo: <last message content>"
    status: int = 200
    error: Optional[dict] = None     # {"message","type","code"}; body {"error": error}
    raw_body: Optional[bytes] = None  # for an error status: this exact body instead
    headers: dict = field(default_factory=dict)  # extra response headers (e.g. Retry-After)
    delay: float = 0.0               # seconds before the response starts
    chunk_delay: float = 0.0         # seconds between streamed events
    chunks: int = DEFAULT_CHUNKS     # content pieces the answer is streamed in
    pieces: Optional[list] = None    # the exact content pieces (then text = their concatenation)
    crlf: bool = False               # SSE lines end in CRLF
    comments: bool = False           # ": ping" comment lines between events
    multiline_data: bool = False     # each event's JSON spread over several "data:" lines
    force_json: bool = False         # answer a chat.completion object even when stream=true
    cut_after: Optional[int] = None  # close the connection after this many content pieces, no [DONE]
    tiny_writes: bool = False        # send the stream a few bytes per TCP write
    early: bool = False              # (queued, stream) answer before reading the request body, read it after
                                     # the first piece: legal HTTP/1.1 that leaves the client still sending
    finish_reason: str = "stop"
    usage: bool = True               # report usage (a usage chunk, or the object's "usage"), as OpenAI does
    ascii_escapes: bool = False      # events written with \\u escapes only: pieces may hold lone surrogates
                                     # (an emoji's UTF-16 pair split across two events, as some servers do)


def answer(text: str, **kw) -> Reply:
    return Reply(text=text, **kw)


def streamed(pieces: list, chunk_delay: float = 0.0, **kw) -> Reply:
    """Streams exactly these content pieces, chunk_delay seconds apart."""
    return Reply(text="".join(pieces), pieces=list(pieces), chunks=len(pieces), chunk_delay=chunk_delay, **kw)


def error(status: int, message: str = "error", type: str = "server_error",  # noqa: A002 - API field name
          code: Optional[str] = None, retry_after: Optional[float] = None, **kw) -> Reply:
    headers = dict(kw.pop("headers", {}))
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Reply(status=status, error={"message": message, "type": type, "param": None, "code": code},
                 headers=headers, **kw)


def server_error(status: int = 500, **kw) -> Reply:
    return error(status, "The server had an error while processing your request. Sorry about that!",
                 "server_error", None, **kw)


def rate_limited(retry_after: Optional[float] = None) -> Reply:
    return error(429, "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, "
                 "Requested 1. Please try again in 20s.", "requests", "rate_limit_exceeded",
                 retry_after=retry_after)


def insufficient_quota() -> Reply:
    return error(429, "You exceeded your current quota, please check your plan and billing details.",
                 "insufficient_quota", "insufficient_quota")


def invalid_api_key() -> Reply:
    return error(401, "Incorrect API key provided: sk-test-********cdef. You can find your API key at "
                 "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")


def cut(partial_text: str, pieces: int = 2) -> Reply:
    """Streams partial_text in `pieces` pieces, then closes without [DONE]."""
    return Reply(text=partial_text, chunks=pieces, cut_after=pieces)


def cut_before_text() -> Reply:
    """Sends the role chunk only, then closes the connection."""
    return Reply(text="never sent", cut_after=0)


@dataclass
class Request:
    body: dict
    headers: dict
    path: str
    time: float                   # time.monotonic() when it arrived
    status: int = 0               # status answered
    finished: Optional[float] = None
    raw: bytes = b""              # the body as sent

    @property
    def messages(self) -> list:
        return self.body.get("messages") or []

    @property
    def last_content(self) -> str:
        return _content_text(self.messages[-1].get("content")) if self.messages else ""

    def contents(self) -> list:
        return [_content_text(m.get("content")) for m in self.messages]

    def roles(self) -> list:
        return [m.get("role") for m in self.messages]

    def total_chars(self) -> int:
        return sum(len(c) for c in self.contents())


PNG_PICTURE = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


@dataclass
class ImageReply:
    """One answer of /v1/images/generations: a picture (b64_json, or a URL served here), or an error."""
    data: bytes = PNG_PICTURE
    as_url: bool = False
    revised_prompt: Optional[str] = None
    status: int = 200
    message: str = ""
    code: Optional[str] = None


@dataclass
class Transcription:
    fields: dict
    files: dict
    headers: dict

    @property
    def file(self):
        return self.files.get("file")


def _bad_content_part(messages: list, no_vision: bool) -> Optional[str]:
    """What OpenAI would refuse in the messages' content parts, or None."""
    import base64
    import binascii
    import re as _re
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for p in content:
            kind = p.get("type") if isinstance(p, dict) else None
            if kind == "text" and isinstance(p.get("text"), str):
                continue
            if kind == "image_url":
                url = (p.get("image_url") or {}).get("url") if isinstance(p.get("image_url"), dict) else None
                mt = _re.fullmatch(r"data:(image/(?:jpeg|png|gif|webp));base64,([A-Za-z0-9+/=]+)", url or "")
                if not mt:
                    return f"Invalid image_url: {str(url)[:40]}"
                try:
                    base64.b64decode(mt.group(2), validate=True)
                except (binascii.Error, ValueError):
                    return "Invalid base64 image_url."
                if no_vision:
                    return "Invalid content type. image_url is only supported by certain models."
                continue
            if kind == "file" and isinstance(p.get("file"), dict):
                data = p["file"].get("file_data") or ""
                if not p["file"].get("filename") or not data.startswith("data:application/pdf;base64,"):
                    return "Invalid file part."
                if no_vision:
                    return "Invalid content type. file is only supported by certain models."
                continue
            return f"Invalid content part: {json.dumps(p)[:60]}"
    return None


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type":"text","text":...}]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"

    def do_POST(self):
        try:
            self.server.fake._serve(self)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    def do_GET(self):
        fake = self.server.fake
        if self.path.startswith("/files/"):
            with fake.lock:
                fake.file_gets.append({k.lower(): v for k, v in self.headers.items()})
                data = fake.files.get(self.path[len("/files/"):])
            if data is None:
                return self.send_json(404, {"error": "no such file"})
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        with fake.lock:
            fake.gets.append(Request(body={}, headers={k.lower(): v for k, v in self.headers.items()},
                                     path=self.path.split("?")[0], time=time.monotonic()))
        if self.path.split("?")[0].rstrip("/") == "/v1/models" and fake.models is not None:
            if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self.send_json(401, {"error": invalid_api_key().error})
            return self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model",
                                                                     "owned_by": "test"} for m in fake.models]})
        self.send_json(404, {"error": {"message": "Unknown request URL", "type": "invalid_request_error",
                                       "param": None, "code": "unknown_url"}})

    def log_message(self, format, *args):  # noqa: A002
        pass

    def read_body(self) -> bytes:
        return read_request_body(self)

    def send_json(self, status: int, obj, headers: Optional[dict] = None, raw: Optional[bytes] = None):
        data = raw if raw is not None else json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client (the bot) that exits or gives up closes its connections:
        # not worth a traceback. Anything else is printed as usual.
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeOpenAI:
    def __init__(self):
        self.lock = threading.Condition()
        self.requests: list[Request] = []     # POSTs (chat completions)
        self.gets: list[Request] = []         # GETs (the model list)
        self.queue = collections.deque()
        self.rules: list[tuple[Callable[[Request], bool], Reply]] = []
        self.default = Reply()
        self.context_limit: Optional[int] = None
        self.prompt_token_factor = 1.0  # reported usage.prompt_tokens = factor x the bot's estimate
        self.models: Optional[list] = None  # GET /v1/models lists these (None: 404, as some servers)
        self.api_key: Optional[str] = None  # when set, GET /v1/models wants it as the Bearer token
        self.in_flight = 0
        self.max_in_flight = 0
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._counter = 0
        self.transcriptions: list = []          # Transcription requests, in order
        self.transcript_replies = collections.deque()  # next answers: a text, or (status, message)
        self.no_vision = False                  # chat requests with an image or file part answer 400
        self.image_requests: list = []          # bodies of /v1/images/generations requests, in order
        self.image_replies = collections.deque()  # next answers: ImageReply
        self.files: dict = {}                   # name -> bytes served at GET /files/<name> (picture URLs)
        self.file_gets: list = []               # headers of those GETs

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                         name="fake-openai", daemon=True).start()
        return self

    def stop(self):
        self._stopping.set()  # wakes delayed answers, so no thread outlives the test for long
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The value for OPENAI_BASE_URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- scripting -------------------------------------------------------

    def enqueue(self, *replies: Reply):
        with self.lock:
            self.queue.extend(replies)

    def on(self, predicate: Callable[[Request], bool], reply: Reply):
        """Standing rule: every request matching predicate gets reply."""
        with self.lock:
            self.rules.append((predicate, reply))

    def on_message_containing(self, needle: str, reply: Reply):
        self.on(lambda r: needle in r.last_content, reply)

    # ---- reading ---------------------------------------------------------

    def snapshot(self) -> list:
        with self.lock:
            return list(self.requests)

    def requests_with(self, needle: str) -> list:
        """Requests whose last message contains needle."""
        return [r for r in self.snapshot() if needle in r.last_content]

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0, what="a condition"):
        """Like FakeTelegram.wait_for: `what` may be a callable, called at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
            with self.lock:
                self.lock.wait(min(remaining, 0.05))

    def wait_requests(self, n: int, timeout: float = 10.0) -> list:
        return self.wait_for(lambda: len(self.requests) >= n and self.snapshot(), timeout,
                             lambda: f"{n} model request(s) (got {len(self.requests)})")

    def describe(self, limit: int = 30) -> str:
        reqs = self.snapshot()[-limit:]
        t0 = reqs[0].time if reqs else 0
        lines = []
        for r in reqs:
            summary = [f"{m.get('role')}:{_content_text(m.get('content'))[:40]!r}" for m in r.messages]
            lines.append(f"  +{r.time - t0:7.3f}s {r.path} stream={r.body.get('stream')} -> {r.status} "
                         f"[{', '.join(summary)[:300]}]")
        return "\n".join(lines)

    # ---- serving ---------------------------------------------------------

    def _choose(self, req: Request) -> Reply:
        with self.lock:
            if self.context_limit is not None and req.total_chars() > self.context_limit:
                n = self.context_limit
                return error(400, f"This model's maximum context length is {n} tokens. However, your messages "
                             f"resulted in {req.total_chars()} tokens. Please reduce the length of the messages.",
                             "invalid_request_error", "context_length_exceeded")
            for predicate, reply in self.rules:
                if predicate(req):
                    return reply
            if self.queue:
                return self.queue.popleft()
            return self.default

    def _take_early(self) -> Optional[Reply]:
        with self.lock:
            return self.queue.popleft() if self.queue and self.queue[0].early else None

    def _serve_early(self, h: _Handler, reply: Reply):
        req = Request(body={}, headers={k.lower(): v for k, v in h.headers.items()}, path=h.path.split("?")[0],
                      time=time.monotonic(), status=200)

        def read_request():
            req.raw = h.read_body()
            req.body = json.loads(req.raw)  # the whole request, or the test fails here
            with self.lock:
                self.requests.append(req)
                self.lock.notify_all()

        try:
            self._stream(h, reply, reply.text or "", "gpt-4o-mini", 0, req, after_first=read_request)
        finally:
            req.finished = time.monotonic()

    # ---- audio ------------------------------------------------------------

    def transcribe_next(self, *replies):
        """The next transcriptions answer these: a text, or (status, message) for an error.
        Without any, the transcript is the uploaded bytes read as UTF-8 (a test "speaks" text)."""
        with self.lock:
            self.transcript_replies.extend(replies)

    def _serve_transcription(self, h: _Handler, raw: bytes):
        """POST /v1/audio/transcriptions (https://platform.openai.com/docs/api-reference/audio/createTranscription):
        multipart with "file" (a name whose extension says the format) and "model"."""
        fields, files, bad = _parse_multipart(h.headers.get("Content-Type") or "", raw)
        t = Transcription(fields=fields, files=files, headers={k.lower(): v for k, v in h.headers.items()})
        with self.lock:
            self.transcriptions.append(t)
            reply = self.transcript_replies.popleft() if self.transcript_replies else None
            self.lock.notify_all()
        f = files.get("file")
        ext = (f.filename or "").rsplit(".", 1)[-1].lower() if f and "." in (f.filename or "") else ""
        if bad or not f or not fields.get("model"):
            return h.send_json(400, {"error": {"message": bad or "you must provide a file and a model",
                                               "type": "invalid_request_error"}})
        if ext not in ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"):
            return h.send_json(400, {"error": {"message": f"Invalid file format. Supported formats: ['flac', "
                                               f"'m4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
                                               "type": "invalid_request_error"}})
        if isinstance(reply, tuple):
            return h.send_json(reply[0], {"error": {"message": reply[1], "type": "server_error"}})
        text = reply if isinstance(reply, str) else f.data.decode("utf-8", "replace")
        h.send_json(200, {"text": text})

    # ---- pictures ---------------------------------------------------------

    def draw_next(self, *replies: "ImageReply"):
        with self.lock:
            self.image_replies.extend(replies)

    def _serve_images(self, h: _Handler, raw: bytes):
        """POST /v1/images/generations (https://platform.openai.com/docs/api-reference/images/create)."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self.lock:
            self.image_requests.append(body)
            reply = self.image_replies.popleft() if self.image_replies else ImageReply()
            self.lock.notify_all()
        if not isinstance(body.get("prompt"), str) or not body.get("model"):
            return h.send_json(400, {"error": {"message": "prompt and model are required",
                                               "type": "invalid_request_error"}})
        if "response_format" in body and not str(body["model"]).startswith("dall-e"):
            return h.send_json(400, {"error": {"message": "Unknown parameter: 'response_format'.",
                                               "type": "invalid_request_error", "code": "unknown_parameter"}})
        if reply.status != 200:
            return h.send_json(reply.status, {"error": {"message": reply.message, "type": "invalid_request_error",
                                                        "code": reply.code}})
        item: dict = {}
        if reply.as_url:
            name = f"img{len(self.image_requests)}.png"
            with self.lock:
                self.files[name] = reply.data
            item["url"] = f"http://127.0.0.1:{self.port}/files/{name}"
        else:
            item["b64_json"] = base64.b64encode(reply.data).decode()
        if reply.revised_prompt:
            item["revised_prompt"] = reply.revised_prompt
        h.send_json(200, {"created": int(time.time()), "data": [item]})

    def wait_transcriptions(self, n: int, timeout: float = 10.0) -> list:
        self.wait_for(lambda: len(self.transcriptions) >= n, timeout, f"{n} transcription requests")
        with self.lock:
            return list(self.transcriptions)

    def _serve(self, h: _Handler):
        if h.path.split("?")[0].rstrip("/") == "/v1/audio/transcriptions":
            return self._serve_transcription(h, h.read_body())
        if h.path.split("?")[0].rstrip("/") == "/v1/images/generations":
            return self._serve_images(h, h.read_body())
        early = self._take_early()
        if early:
            return self._serve_early(h, early)
        raw = h.read_body()
        path = h.path.split("?")[0]
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsable": raw.decode("utf-8", "replace")}
        req = Request(body=body if isinstance(body, dict) else {"_not_object": body},
                      headers={k.lower(): v for k, v in h.headers.items()}, path=path, time=time.monotonic(), raw=raw)
        with self.lock:
            self.requests.append(req)
            self._counter += 1
            n = self._counter
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.lock.notify_all()
        try:
            if path.rstrip("/") != "/v1/chat/completions":
                req.status = 404
                return h.send_json(404, {"error": {"message": f"Unknown request URL: POST {path}",
                                                   "type": "invalid_request_error", "param": None,
                                                   "code": "unknown_url"}})
            if "_unparsable" in req.body or not isinstance(req.body.get("messages"), list):
                req.status = 400
                return h.send_json(400, {"error": {"message": "We could not parse the JSON body of your request.",
                                                   "type": "invalid_request_error", "param": None, "code": None}})
            bad_part = _bad_content_part(req.messages, self.no_vision)
            if bad_part:
                req.status = 400
                return h.send_json(400, {"error": {"message": bad_part, "type": "invalid_request_error",
                                                   "param": "messages", "code": None}})
            reply = self._choose(req)
            if reply.delay and self._stopping.wait(reply.delay):
                h.close_connection = True
                return
            req.status = reply.status
            if reply.status != 200:
                return h.send_json(reply.status, {"error": reply.error}, reply.headers, reply.raw_body)
            text = reply.text if reply.text is not None else "Echo: " + req.last_content
            model = req.body.get("model") or "gpt-4o-mini"
            if req.body.get("stream") is True and not reply.force_json:
                self._stream(h, reply, text, model, n, req)
            else:
                h.send_json(200, _completion(text, model, n, req, reply.finish_reason, self.prompt_token_factor),
                            reply.headers)
        finally:
            req.finished = time.monotonic()
            with self.lock:
                self.in_flight -= 1
                self.lock.notify_all()

    def _stream(self, h: _Handler, reply: Reply, text: str, model: str, n: int, req: Request,
                after_first: Optional[Callable[[], None]] = None):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        eol = "\r\n" if reply.crlf else "\n"

        def write(data: str):
            b = data.encode("utf-8")
            if reply.tiny_writes:
                for i in range(0, len(b), 3):
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(b[i:i + 3]), b[i:i + 3]))
                    h.wfile.flush()
                    time.sleep(0.001)
            else:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                h.wfile.flush()

        def event(obj) -> str:
            if obj == "[DONE]":
                payload = "[DONE]"
            elif reply.multiline_data:
                payload = json.dumps(obj, ensure_ascii=False, indent=1)
            else:
                payload = json.dumps(obj, ensure_ascii=reply.ascii_escapes)
            lines = "".join(f"data: {line}{eol}" for line in payload.split("\n"))
            return lines + eol

        def pause():
            if reply.chunk_delay and self._stopping.wait(reply.chunk_delay):
                raise ConnectionResetError("fake stopping")

        base = {"id": f"chatcmpl-fake{n}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_fake"}
        if reply.comments:
            write(f": OPENROUTER PROCESSING{eol}{eol}")
        write(event(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}])))
        pieces = list(reply.pieces) if reply.pieces is not None else _split(text, reply.chunks)
        for i, piece in enumerate(pieces):
            if reply.cut_after is not None and i >= reply.cut_after:
                break
            pause()
            if reply.comments:
                write(f": ping{eol}{eol}")
            write(event(dict(base, choices=[{"index": 0, "delta": {"content": piece}, "logprobs": None,
                                             "finish_reason": None}])))
            if i == 0 and after_first:
                after_first()
        if reply.cut_after is not None:
            # Cut: close without the final zero-length chunk, as a dropped connection looks.
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        pause()
        write(event(dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None,
                                         "finish_reason": reply.finish_reason}])))
        if reply.usage:
            write(event(dict(base, choices=[], usage=reported_usage(req, text, self.prompt_token_factor))))
        if reply.comments:
            write(f": done{eol}{eol}")
        write(event("[DONE]"))
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def _split(text: str, pieces: int) -> list:
    pieces = max(1, pieces)
    size = max(1, -(-len(text) // pieces))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def reported_usage(req: Request, text: str, factor: float = 1.0) -> dict:
    # Counted like the bot's own pessimistic estimate (4 + UTF-8 bytes / 3 per
    # message), so whatever calibration the bot learns from usage stays ~1,
    # unless the test sets a factor (FakeOpenAI.prompt_token_factor).
    prompt = round(factor * sum(4 + len(c.encode("utf-8")) // 3 for c in req.contents()))
    completion = max(1, len(text.encode("utf-8")) // 3)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(text: str, model: str, n: int, req: Request, finish_reason: str, factor: float = 1.0) -> dict:
    return {"id": f"chatcmpl-fake{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": reported_usage(req, text, factor)}
