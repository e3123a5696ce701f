"""Prism 5.16 (@stoplight/prism-cli, a third-party OpenAPI validator) for the
conformance tests (test_conformance.py): every Bot API call of the bot checked
against the official Bot API spec, every chat-completion request against the
official OpenAI spec.

The peer servers and the specs are not the project's: they live beside the
repository, in ../shared/peers (setup.sh, wrappers) and ../shared/specs
(data), as CI has them. A fresh clone has neither: the tests are then skipped
with the reason. With them, `../shared/peers/setup.sh DIR --no-apt` installs
Prism (and the other peers) from npm into a cache folder, once
($TGLLM_PEERS_DIR, else $XDG_CACHE_HOME/tgllm/peers, else
~/.cache/tgllm/peers; about a minute the first time, under a second after),
one install at a time even with tests in parallel. When Prism cannot be had
or cannot start the tests are skipped, except with CI=true: CI has the peers,
so there it is a failure.

Telegram: `prism proxy telegram.openapi.json UPSTREAM --errors` between the
bot and the fake Telegram. The spec (made by ../shared/peers/tg-spec-to-openapi.js
from api.json, Bot API 10.1) rejects unknown parameter names
(additionalProperties: false), wrong JSON types and missing required
parameters, in nested API types too (ReplyParameters, InlineKeyboardMarkup,
MessageEntity, BotCommand). A wrong call gets Prism's own answer
(application/problem+json: 422 with the violations, 404 for an unknown
method) instead of reaching the fake. Form and multipart bodies (the bot's
setWebhook and deleteWebhook) are values as strings, so only required
parameters are checked there, and Prism 5.16 drops the names its schema
does not have before validating (a misspelled drop_pending_updates would
pass): the front checks those names against the same spec itself. The spec is Bot API 10.1 and lacks what
10.2 and 10.3 added: the bot uses one such field, sendMessageDraft's can_stop
(Boolean, optional, Bot API 10.3). BOT_API_ADDITIONS adds exactly that to the
copy of the spec the proxy loads; everything else is checked as published.

Around the proxy (TelegramProxy):
  bot -> front (records each call and Prism's answer) -> prism proxy
      -> back (relays to the current test's fake Telegram) -> FakeTelegram
(file downloads, /file/bot<token>/..., are no Bot API method: the front
sends them to the back directly).
The front says which call Prism refused and why; the back lets one Prism
(which starts in seconds) serve every test of a class, each with its own fake.

OpenAI: `prism mock openai.chat.prism.yaml` (the official spec, fixed by
../shared/peers/openai-spec-fix.js so that Prism really validates). It has no
SSE, so it checks the shape of a request, not streaming: check_requests()
sends it the requests the fake model recorded, byte for byte with their
Authorization header, and collects any answer that is not 2xx.
"""

import email.parser
import email.policy
import fcntl
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fake_telegram import read_request_body

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
PEERS = SHARED / "peers"
SPECS = SHARED / "specs"
PRISM_VERSION = "5.16.0"

# Fields newer than the spec (Bot API 10.1) that the bot sends: method -> {parameter: JSON schema}.
# Each is documented at https://core.telegram.org/bots/api-changelog.
BOT_API_ADDITIONS = {
    "sendMessageDraft": {"can_stop": {"type": "boolean"}},  # Bot API 10.3: Telegram's own Stop control
}


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str):
    """Skips the test, or fails it in CI, which has the peers and must run these tests."""
    if in_ci():
        raise AssertionError(reason + " (CI=true: the conformance tests must run there)")
    raise unittest.SkipTest(reason)


def peers_dir() -> Path:
    if os.environ.get("TGLLM_PEERS_DIR"):
        return Path(os.environ["TGLLM_PEERS_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tgllm" / "peers"


def _installed(d: Path) -> bool:
    pkg = d / "npm" / "prism" / "node_modules" / "@stoplight" / "prism-cli" / "package.json"
    try:
        return (json.loads(pkg.read_text())["version"] == PRISM_VERSION and (d / "bin" / "prism").exists()
                and (d / "specs" / "telegram.openapi.json").exists()
                and (d / "specs" / "openai.chat.prism.yaml").exists())
    except (OSError, ValueError, KeyError):
        return False


def ensure_prism() -> Path:
    """The peers' install folder (DIR/bin/prism, DIR/specs/...). Without ../shared/peers and
    ../shared/specs the test is skipped (even in CI: a fresh clone has no conformance checks)."""
    if not (PEERS / "setup.sh").exists() or not (SPECS / "telegram" / "api.json").exists():
        raise unittest.SkipTest(f"no peer servers and specs beside the repository ({PEERS}, {SPECS}): "
                                "the conformance tests need them (CI has them at ../shared)")
    if not shutil.which("node") or not shutil.which("npm"):
        unavailable("node and npm are needed for Prism: apt-get install nodejs npm")
    d = peers_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:   # one install at a time, even with tests in parallel
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(d):
            try:
                r = subprocess.run(["bash", str(PEERS / "setup.sh"), str(d), "--no-apt"], stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=900)
            except subprocess.TimeoutExpired:
                unavailable(f"{PEERS / 'setup.sh'} {d} --no-apt took over 15 minutes")
            if r.returncode != 0 or not _installed(d):
                tail = (r.stderr or r.stdout).decode("utf-8", "replace").strip().splitlines()[-6:]
                unavailable(f"{PEERS / 'setup.sh'} {d} --no-apt failed ({r.returncode}): " + " | ".join(tail))
    return d


def telegram_spec(d: Path, out: Path) -> Path:
    """The Bot API spec with BOT_API_ADDITIONS, written to out."""
    spec = json.loads((d / "specs" / "telegram.openapi.json").read_text())
    for method, fields in BOT_API_ADDITIONS.items():
        content = spec["paths"][f"/bot{{token}}/{method}"]["post"]["requestBody"]["content"]
        for kind, media in content.items():
            props = media["schema"].setdefault("properties", {})
            for name, schema in fields.items():
                if name in props:
                    raise AssertionError(f"the spec has {method}.{name} now: drop it from BOT_API_ADDITIONS")
                props[name] = schema if kind == "application/json" else {}
    out.write_text(json.dumps(spec))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prism:
    """One Prism process (`prism proxy` or `prism mock`) on 127.0.0.1; its output goes to log_path."""

    def __init__(self, args: list, log_path: Path, timeout: float = 90):
        self.log_path = log_path
        self.port = 0
        self.proc = None
        for _ in range(2):  # a port taken between choosing and binding: once more with another
            self.port = free_port()
            log = open(log_path, "ab")
            self.proc = subprocess.Popen([*args, "--host", "127.0.0.1", "--port", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            log.close()
            if self._wait_listening(timeout):
                return
            if self.proc.poll() is None:
                break
        self.stop()
        unavailable(f"Prism did not start within {timeout:g} s: {' '.join(map(str, args[:3]))}; "
                    f"its output:\n{self.output()[-2000:]}")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "Prism is listening" in self.output():
                return True
            time.sleep(0.1)  # polling Prism's output for its own start line, bounded
        return False

    def output(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # its own session: the shell launcher and node
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)


# ---- the Telegram side -----------------------------------------------------

@dataclass
class Exchange:
    """One call of the bot as the front saw it: what it sent and what came back through Prism."""

    method: str             # the Bot API method (from the path)
    path: str
    http_method: str
    content_type: str
    body: bytes
    status: int
    answer_type: str        # Content-Type of the answer
    answer: bytes
    unknown_names: tuple = ()  # form or multipart parameters the spec does not have (the test's own check)

    @property
    def refused_by_prism(self) -> bool:
        """Prism's own answer to the bot's request (a violation, 4xx), not the fake's: Prism answers
        application/problem+json. Its 5xx are about the answer that came back through it (a fake
        already stopped under a long poll cut at the end of a test), not about what the bot sent."""
        is_problem = "problem+json" in self.answer_type or b"stoplight.io/prism/errors" in self.answer
        return is_problem and self.status < 500

    @property
    def wrong(self) -> bool:
        return self.refused_by_prism or bool(self.unknown_names)

    def violations(self) -> str:
        if self.unknown_names and not self.refused_by_prism:
            return (f"parameters the spec does not have: {', '.join(self.unknown_names)} (a form body: Prism "
                    "5.16 drops unknown names of form and multipart bodies before validating, so the test "
                    "checks them)")
        try:
            problem = json.loads(self.answer)
        except ValueError:
            return self.answer.decode("utf-8", "replace")[:500]
        found = [f"{'.'.join(v.get('location', []))}: {v.get('message')}" for v in problem.get("validation", [])]
        return "; ".join(found) or f"{problem.get('title')}: {problem.get('detail')}"

    def describe(self, token: str) -> str:
        body = self.body.decode("utf-8", "replace").replace(token, "<token>")
        if len(body) > 600:
            body = body[:600] + "..."
        return (f"{self.http_method} {self.method} ({self.content_type or 'no body'}) {body}\n"
                f"    -> Prism {self.status}: {self.violations()}")


_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "expect", "proxy-connection",
        "te", "upgrade"}


class _Relay(http.server.ThreadingHTTPServer):
    """Forwards every request to target(path) (host, port) and answers what came back; record() sees both."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, target, record=None):
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.target = target
        self.record = record
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def close(self):
        self.shutdown()
        self.server_close()


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._relay()

    def do_POST(self):
        self._relay()

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _relay(self):
        body = read_request_body(self) if self.command == "POST" else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if self.command == "POST":
            headers["Content-Length"] = str(len(body))
        host, port = self.server.target(self.path)
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            conn.request(self.command, self.path, body=body if self.command == "POST" else None, headers=headers)
            resp = conn.getresponse()
            status, answer, answer_type = resp.status, resp.read(), resp.getheader("Content-Type", "")
        except (OSError, http.client.HTTPException) as e:
            status, answer, answer_type = 502, f"relay: {e}".encode(), "text/plain"
        finally:
            conn.close()
        if self.server.record:
            self.server.record(Exchange(method=self.path.split("?")[0].rsplit("/", 1)[-1], path=self.path,
                                        http_method=self.command,
                                        content_type=self.headers.get("Content-Type", ""), body=body, status=status,
                                        answer_type=answer_type, answer=answer))
        self.send_response(status)
        self.send_header("Content-Type", answer_type or "application/octet-stream")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def form_names(content_type: str, body: bytes) -> list:
    """The parameter names of an x-www-form-urlencoded or multipart/form-data body."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return [k for k, _ in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)]
    if content_type.startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if msg.is_multipart():
            return [part.get_param("name", header="content-disposition") or "" for part in msg.iter_parts()]
    return []


class TelegramProxy:
    """prism proxy between the bot and a fake Telegram (see the module's docstring)."""

    def __init__(self, workdir: Path):
        d = ensure_prism()
        self.spec = telegram_spec(d, workdir / "telegram.openapi.json")
        doc = json.loads(self.spec.read_text())
        # Form bodies: the parameter names each method takes (Prism does not check them there).
        self.names = {path.rsplit("/", 1)[-1]: set(op["post"].get("requestBody", {}).get("content", {}).get(
            "application/json", {}).get("schema", {}).get("properties", {})) for path, op in doc["paths"].items()}
        self.upstream: Optional[str] = None   # the current fake's base URL
        self.lock = threading.Lock()
        self.exchanges: list[Exchange] = []
        self.back = _Relay(lambda path: self._upstream())
        self.prism = Prism([str(d / "bin" / "prism"), "proxy", str(self.spec), self.back.base_url, "--errors"],
                           workdir / "prism-proxy.log")
        # Downloads (GET /file/bot<token>/<file_path>, after getFile) are not Bot API methods and the
        # spec has no such path: they go straight to the back, past Prism.
        self.front = _Relay(lambda path: self._upstream() if path.startswith("/file/") else
                            ("127.0.0.1", self.prism.port), self._record)

    def _upstream(self):
        if not self.upstream:
            return ("127.0.0.1", 9)  # nothing there: a 502 from the back
        host, port = self.upstream.split("//", 1)[1].split(":")
        return (host, int(port))

    def _record(self, ex: Exchange):
        if ex.method in self.names and not ex.path.startswith("/file/"):
            ex.unknown_names = tuple(n for n in form_names(ex.content_type, ex.body) if n not in self.names[ex.method])
        with self.lock:
            self.exchanges.append(ex)

    @property
    def base_url(self) -> str:
        """TELEGRAM_API_BASE for the bot."""
        return self.front.base_url

    def take(self) -> list:
        """The calls recorded since the last take()."""
        with self.lock:
            out, self.exchanges = self.exchanges, []
        return out

    def stop(self):
        self.front.close()
        self.prism.stop()
        self.back.close()


# ---- the OpenAI side -------------------------------------------------------

class OpenAIMock:
    """prism mock of the official OpenAI spec (chat completions and models)."""

    def __init__(self, workdir: Path):
        d = ensure_prism()
        self.prism = Prism([str(d / "bin" / "prism"), "mock", str(d / "specs" / "openai.chat.prism.yaml")],
                           workdir / "prism-mock.log")

    def send(self, method: str, path: str, body: bytes, headers: dict) -> tuple:
        """(status, answer) of Prism for one request; path without the API's /v1 (the spec's server has it)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.prism.port, timeout=30)
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def stop(self):
        self.prism.stop()
