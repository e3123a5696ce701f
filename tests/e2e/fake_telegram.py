"""A fake Telegram Bot API server for the end-to-end tests.

It listens on 127.0.0.1 (an ephemeral port) and answers
POST/GET /bot<TOKEN>/<method> the way https://core.telegram.org/bots/api
describes: {"ok": true, "result": ...} or
{"ok": false, "error_code": N, "description": "...", "parameters": {...}}
with the HTTP status equal to error_code.

What a test can do with it:
- push updates (helpers build realistic private, group and forum-topic
  messages with growing update_id and message_id);
- inject failures (the next N calls of a method answer an error; a chat
  that blocked the bot answers 403 to everything sent to it) and slowness
  (the next N calls of a method wait before they are answered: slow());
- make Telegram refuse the formatting of the next N messages that carry
  entities (reject_entities), on top of the checks every sendMessage,
  editMessageText and sendMessageDraft gets (entity types, integer UTF-16
  offsets and lengths inside the text, the 4096-unit limit);
- hand the next getUpdates a scripted answer: a batch of raw updates
  (re-sent or id-less ones) or a raw, even malformed, body;
- keep a webhook like Telegram does: setWebhook (JSON, form or
  multipart/form-data with an uploaded certificate), deleteWebhook and
  getWebhookInfo share one state (`webhook`); drop_pending_updates forgets
  the pending updates; a test can set the last delivery error
  (set_webhook_error) or pretend a webhook is set (set_webhook); while one
  is set, getUpdates answers 409 as the real server does;
- read every call (method, params, time, answer) and the messages the bot
  left in each chat (after edits and deletions), and wait for conditions;
- tell bot processes apart: each pointed at instance_url(name) has its
  calls recorded with that name (Call.instance), as one server sees
  several instances of one bot.

getUpdates follows the real API: it returns updates with update_id >= offset
(at most `limit`), an update is confirmed and forgotten once a call comes
with a higher offset, and a long poll waits up to `timeout` seconds (capped
at `poll_cap`, so that a bot under test stops quickly) and returns as soon
as an update is pushed. Like the real server, a second getUpdates while one
is waiting ends the first with 409 Conflict, and getUpdates answers 409
while a webhook is set. Unlike the real server, the
fake delivers every update kind whatever allowed_updates says, so tests can
prove the bot survives kinds it did not ask for.

Python standard library only.
"""

import collections
import email.parser
import email.policy
import http.server
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

TOKEN = "123456:TEST-token-abcdefghijklmnop"
BOT_ID = 1000
BOT_USERNAME = "tgllm_test_bot"
BOT_FIRST_NAME = "Test Bot"
MAX_MESSAGE_UNITS = 4096


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _utf16_offset(text: str, index: int) -> int:
    return utf16_len(text[:index])


@dataclass
class User:
    id: int
    first_name: str
    username: Optional[str] = None
    language_code: Optional[str] = None
    is_bot: bool = False
    last_name: Optional[str] = None

    def to_json(self) -> dict:
        d = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            d["last_name"] = self.last_name
        if self.username:
            d["username"] = self.username
        if self.language_code:
            d["language_code"] = self.language_code
        return d


@dataclass
class Chat:
    id: int
    type: str  # "private", "group", "supergroup", "channel"
    title: Optional[str] = None
    username: Optional[str] = None
    first_name: Optional[str] = None
    is_forum: bool = False

    @staticmethod
    def private(user: User) -> "Chat":
        return Chat(id=user.id, type="private", username=user.username, first_name=user.first_name)

    @staticmethod
    def group(chat_id: int, title: str = "Test group") -> "Chat":
        return Chat(id=chat_id, type="group", title=title)

    @staticmethod
    def supergroup(chat_id: int, title: str = "Test supergroup", is_forum: bool = False) -> "Chat":
        return Chat(id=chat_id, type="supergroup", title=title, is_forum=is_forum)

    def to_json(self) -> dict:
        d: dict = {"id": self.id, "type": self.type}
        if self.title is not None:
            d["title"] = self.title
        if self.username is not None:
            d["username"] = self.username
        if self.first_name is not None:
            d["first_name"] = self.first_name
        if self.is_forum:
            d["is_forum"] = True
        return d


@dataclass
class Call:
    """One request the bot made, as the fake understood it."""

    method: str          # as written in the URL
    params: dict         # JSON body, form fields and query merged
    time: float          # time.monotonic() when it arrived
    token_ok: bool
    content_type: str = ""  # of the request body
    status: int = 0      # HTTP status answered
    response: Any = None  # the JSON answered (None for raw bodies)
    files: dict = field(default_factory=dict)  # multipart file parts: name -> UploadedFile
    scripted: bool = False  # getUpdates answered with a scripted answer (inject_updates / inject_body)
    instance: str = ""   # the caller's name, when it was given instance_url(name); else ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.response, dict) and self.response.get("ok") is True

    @property
    def name(self) -> str:
        return self.method.lower()

    def chat_id(self) -> Optional[int]:
        return _as_int(self.params.get("chat_id"))


@dataclass
class BotMessage:
    """A message the bot left in a chat, as the chat's members see it now."""

    message_id: int
    chat_id: int
    text: str
    time: float
    params: dict                     # the sendMessage parameters
    thread_id: Optional[int] = None
    reply_to: Optional[int] = None   # message_id it replies to
    edits: list = field(default_factory=list)  # texts set by editMessageText
    deleted: bool = False
    entities: list = field(default_factory=list)  # as shown now (the last send or edit)
    reply_markup: Optional[dict] = None  # the inline keyboard under it now, if any

    def buttons(self) -> list:
        """[(text, callback_data)] of the inline keyboard, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [(b.get("text"), b.get("callback_data")) for row in rows for b in row]


@dataclass
class UploadedFile:
    """A file part of a multipart/form-data request."""

    filename: Optional[str]
    content_type: str
    data: bytes


@dataclass
class Webhook:
    """The webhook as Telegram keeps it (url "" = none: getUpdates works)."""

    url: str = ""
    secret_token: Optional[str] = None
    allowed_updates: Optional[list] = None
    certificate: Optional[UploadedFile] = None   # the uploaded public key, if any
    max_connections: Optional[int] = None
    ip_address: Optional[str] = None
    last_error_date: Optional[int] = None
    last_error_message: Optional[str] = None

    @property
    def has_custom_certificate(self) -> bool:
        return self.certificate is not None


@dataclass
class _EntityRejection:
    methods: tuple
    remaining: int
    description: str
    chat_id: Optional[int]


@dataclass
class _Failure:
    method: str
    remaining: int
    error_code: int
    description: str
    retry_after: Optional[int]
    chat_id: Optional[int]


@dataclass
class _Slowdown:
    method: str
    remaining: int
    seconds: float
    chat_id: Optional[int]


def _as_int(v) -> Optional[int]:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    return None


def visible_text(text: str, parse_mode: Optional[str]) -> str:
    """What a user sees for text sent with parse_mode (roughly, for assertions)."""
    if not parse_mode:
        return text
    mode = parse_mode.lower()
    if mode == "html":
        import html

        return html.unescape(re.sub(r"<[^>]*>", "", text))
    if mode in ("markdown", "markdownv2"):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
        out = []
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if c in "*_~`|":
                i += 1
                continue
            out.append(c)
            i += 1
        return "".join(out)
    return text


def read_request_body(h: http.server.BaseHTTPRequestHandler) -> bytes:
    """A request's body, chunked or with a Content-Length (libcurl sends either)."""
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                h.rfile.readline()
                return body
            body += h.rfile.read(size)
            h.rfile.readline()
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n > 0 else b""


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1: keep-alive like the real server, and "Expect: 100-continue"
    # is answered at once (curl sends it for larger bodies).
    protocol_version = "HTTP/1.1"
    server_version = "FakeTelegram/1.0"

    def do_GET(self):
        self.server.fake._serve(self)

    def do_POST(self):
        self.server.fake._serve(self)

    def log_message(self, format, *args):  # noqa: A002 - silence the default access log
        pass

    def read_body(self) -> bytes:
        return read_request_body(self)

    def send_body(self, status: int, body: bytes, content_type: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


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


class FakeTelegram:
    def __init__(self, token: str = TOKEN, bot_id: int = BOT_ID, bot_username: str = BOT_USERNAME,
                 bot_first_name: str = BOT_FIRST_NAME, poll_cap: float = 1.0):
        self.token = token
        self.bot = User(id=bot_id, first_name=bot_first_name, username=bot_username, is_bot=True)
        self.poll_cap = poll_cap
        self.cond = threading.Condition()
        self.calls: list[Call] = []
        self.pending: list[dict] = []          # unconfirmed updates, in update_id order
        self.scripted = collections.deque()    # next getUpdates answers
        self.failures: list[_Failure] = []
        self.slowdowns: list[_Slowdown] = []
        self.blocked: dict[int, str] = {}      # chat_id -> 403 description
        self.chats: dict[int, Chat] = {}
        self.bot_messages: list[BotMessage] = []
        self.drafts: list[dict] = []           # accepted sendMessageDraft parameters
        self.entity_rejections: list[_EntityRejection] = []
        self.conflicts = 0                     # getUpdates ended by a newer one (409)
        self.polls_waiting = 0                 # getUpdates calls being answered now (long polls)
        self.in_flight = 0                     # requests being answered now
        self.max_in_flight = 0
        self.webhook = Webhook()               # the current webhook (url "" = none)
        self.dropped_updates: list[dict] = []  # forgotten by drop_pending_updates
        self.next_update_id = 500000
        self.update_ids: dict = {}             # (chat_id, message_id) -> update_id of the update built for it
        self.next_message_id = 1
        self.callback_ids: set = set()         # callback queries pressed and not yet answered
        self.menus: dict = {}                  # language_code ("" = default) -> the bot's commands
        self.next_callback = 0
        self.files: dict = {}                  # file_id -> (file_path, bytes): what getFile and downloads serve
        self.downloads: list = []              # (token_ok, file_path) of every file GET, in order
        self.download_delay = 0.0              # seconds each file download takes (a slow network)
        self.downloads_in_flight = 0
        self.max_downloads_in_flight = 0
        self._poll_generation = 0
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> "FakeTelegram":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-telegram", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        with self.cond:
            self.cond.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The value for TELEGRAM_API_BASE."""
        return f"http://127.0.0.1:{self.port}"

    def instance_url(self, name: str) -> str:
        """TELEGRAM_API_BASE for one of several bot processes: its calls carry name (Call.instance)."""
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name) and name != "file", name
        return f"{self.base_url}/{name}"

    # ---- building and pushing updates ------------------------------------

    def new_message_id(self) -> int:
        with self.cond:
            mid = self.next_message_id
            self.next_message_id += 1
            return mid

    def message(self, chat: Chat, user: Optional[User], text: Optional[str] = None, *,
                entities: Optional[list] = None, reply_to: Optional[dict] = None,
                thread_id: Optional[int] = None, extra: Optional[dict] = None) -> dict:
        """A Message object (not pushed). Entities for /commands and @mentions
        are computed like Telegram does unless given."""
        self.chats[chat.id] = chat
        msg: dict = {"message_id": self.new_message_id(), "date": int(time.time()), "chat": chat.to_json()}
        if user is not None:
            msg["from"] = user.to_json()
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        if text is not None:
            msg["text"] = text
            ents = entities if entities is not None else auto_entities(text)
            if ents:
                msg["entities"] = ents
        if extra:
            msg.update(extra)
        return msg

    def update(self, kind: str, payload: Any) -> dict:
        """An Update object with the next update_id (not pushed)."""
        with self.cond:
            uid = self.next_update_id
            self.next_update_id += 1
            if isinstance(payload, dict) and isinstance(payload.get("chat"), dict) and "message_id" in payload:
                self.update_ids[(payload["chat"].get("id"), payload["message_id"])] = uid
        return {"update_id": uid, kind: payload}

    def update_id_of(self, message: dict) -> int:
        """The update_id of the update built (by update(), send_*()) for message."""
        key = (message["chat"]["id"], message["message_id"])
        with self.cond:
            if key not in self.update_ids:
                raise KeyError(f"no update was built for message {message['message_id']} in chat {key[0]}")
            return self.update_ids[key]

    def push(self, *updates: dict) -> list[dict]:
        """Makes updates available to getUpdates, all at once (one batch)."""
        with self.cond:
            for u in updates:
                if not isinstance(u.get("update_id"), int):
                    raise ValueError("push() needs update_id; use inject_updates() for id-less updates")
                self.pending.append(u)
            self.pending.sort(key=lambda u: u["update_id"])
            self.cond.notify_all()
        return list(updates)

    def send_private(self, user: User, text: Optional[str] = None, **kw) -> dict:
        """The user writes to the bot in a private chat; returns the Message."""
        msg = self.message(Chat.private(user), user, text, **kw)
        self.push(self.update("message", msg))
        return msg

    # ---- files -----------------------------------------------------------

    def add_file(self, data: bytes, file_path: str, file_id: Optional[str] = None) -> str:
        """A file the bot may download: getFile gives file_path, GET /file/bot<token>/<file_path>
        gives data. Returns its file_id."""
        with self.cond:
            fid = file_id or f"FILE{len(self.files) + 1}x{int(time.monotonic() * 1000) % 100000}"
            self.files[fid] = (file_path, data)
            return fid

    def send_file(self, chat: Chat, user: User, kind: str, data: bytes, *, file_path: Optional[str] = None,
                  caption: Optional[str] = None, mime_type: Optional[str] = None, file_name: Optional[str] = None,
                  file_size: Optional[int] = None, **kw) -> dict:
        """The user sends a file: kind is voice, audio, video_note, photo or document. Its bytes are
        served to getFile and the download; file_size defaults to their length."""
        ext = {"voice": "oga", "audio": "mp3", "video_note": "mp4", "photo": "jpg"}.get(kind, "bin")
        path = file_path or f"{kind}s/file_{len(self.files)}.{ext}"
        fid = self.add_file(data, path)
        obj: dict = {"file_id": fid, "file_unique_id": "u" + fid,
                     "file_size": len(data) if file_size is None else file_size}
        if mime_type:
            obj["mime_type"] = mime_type
        if file_name:
            obj["file_name"] = file_name
        if kind == "voice":
            obj.setdefault("mime_type", "audio/ogg")
            obj["duration"] = 2
        extra = dict(kw.pop("extra", None) or {})
        if kind == "photo":
            small = self.add_file(b"\xff\xd8\xff small", f"photos/small_{fid}.jpg")
            extra["photo"] = [{"file_id": small, "file_unique_id": "s" + fid, "width": 90, "height": 60,
                               "file_size": 10},
                              dict(obj, width=1280, height=853)]
        else:
            extra[kind] = obj
        if caption is not None:
            extra["caption"] = caption
            ents = auto_entities(caption)
            if ents:
                extra["caption_entities"] = ents
        msg = self.message(chat, user, None, extra=extra, **kw)
        self.push(self.update("message", msg))
        return msg

    def send_group(self, chat: Chat, user: User, text: Optional[str] = None, **kw) -> dict:
        """The user writes in a group or supergroup; returns the Message."""
        msg = self.message(chat, user, text, **kw)
        self.push(self.update("message", msg))
        return msg

    def send_topic(self, chat: Chat, thread_id: int, user: User, text: str, *,
                   topic_creator: Optional[User] = None, **kw) -> dict:
        """The user writes in a forum topic. Like Telegram, a topic message that
        replies to nothing in particular carries the topic's creation service
        message as reply_to_message."""
        if "reply_to" not in kw:
            creator = topic_creator or user
            kw["reply_to"] = {
                "message_id": thread_id, "date": int(time.time()) - 3600, "chat": chat.to_json(),
                "from": creator.to_json(), "message_thread_id": thread_id, "is_topic_message": True,
                "forum_topic_created": {"name": "Topic", "icon_color": 7322096},
            }
        msg = self.message(chat, user, text, thread_id=thread_id, **kw)
        self.push(self.update("message", msg))
        return msg

    def inject_updates(self, updates: list):
        """The next getUpdates answers exactly this batch, whatever its offset
        (to re-send handled updates, or send updates without update_id)."""
        with self.cond:
            self.scripted.append(("updates", list(updates)))
            self.cond.notify_all()

    def inject_body(self, body: bytes, status: int = 200, content_type: str = "application/json"):
        """The next getUpdates answers this raw body (malformed JSON, HTML error page...)."""
        with self.cond:
            self.scripted.append(("raw", status, body, content_type))
            self.cond.notify_all()

    # ---- failures --------------------------------------------------------

    def fail(self, method: str, times: int = 1, error_code: int = 429, description: Optional[str] = None,
             retry_after: Optional[int] = None, chat_id: Optional[int] = None):
        """The next `times` calls of method (for chat_id, if given) answer an error."""
        if description is None:
            description = {
                429: f"Too Many Requests: retry after {retry_after or 1}",
                400: "Bad Request",
                403: "Forbidden",
                500: "Internal Server Error",
                502: "Bad Gateway",
            }.get(error_code, "Error")
        if error_code == 429 and retry_after is None:
            retry_after = 1
        with self.cond:
            self.failures.append(_Failure(method.lower(), times, error_code, description, retry_after, chat_id))

    def slow(self, method: str, seconds: float, times: int = 1, chat_id: Optional[int] = None):
        """The next `times` calls of method (for chat_id, if given) are answered only
        after `seconds` (a slow or hanging Telegram); the call is recorded at once."""
        with self.cond:
            self.slowdowns.append(_Slowdown(method.lower(), times, seconds, chat_id))

    def reject_entities(self, times: int = 1, methods=("sendMessage",), chat_id: Optional[int] = None,
                        description: str = "Bad Request: can't parse entities: Can't find end of the entity "
                                           "starting at byte offset 0"):
        """The next `times` calls of methods (for chat_id, if given) that carry a
        non-empty "entities" answer 400 with description, as Telegram does for
        entities it cannot use; calls without entities are not affected."""
        with self.cond:
            self.entity_rejections.append(_EntityRejection(tuple(m.lower() for m in methods), times, description,
                                                           chat_id))

    def _entity_rejection(self, call: "Call") -> Optional[str]:
        if not call.params.get("entities"):
            return None
        with self.cond:
            for r in self.entity_rejections:
                if r.remaining > 0 and call.name in r.methods and (r.chat_id is None or r.chat_id == call.chat_id()):
                    r.remaining -= 1
                    return r.description
        return None

    def drafts_in(self, chat_id: int) -> list[dict]:
        """The accepted sendMessageDraft parameters for a chat, oldest first."""
        with self.cond:
            return [d for d in self.drafts if _as_int(d.get("chat_id")) == chat_id]

    def block(self, chat_id: int, description: str = "Forbidden: bot was blocked by the user"):
        """From now on everything sent to chat_id answers 403."""
        with self.cond:
            self.blocked[chat_id] = description

    # ---- the webhook -----------------------------------------------------

    def set_webhook(self, url: str, secret_token: Optional[str] = None, allowed_updates: Optional[list] = None,
                    certificate: Optional[bytes] = None):
        """Pretends setWebhook was called (e.g. by whoever ran the bot before)."""
        with self.cond:
            self.webhook = Webhook(url=url, secret_token=secret_token, allowed_updates=allowed_updates,
                                   certificate=UploadedFile("cert.pem", "application/octet-stream", certificate)
                                   if certificate is not None else None)
            self.cond.notify_all()

    def set_webhook_error(self, message: Optional[str], date: Optional[int] = None):
        """What getWebhookInfo reports as the last delivery error (None clears it)."""
        with self.cond:
            self.webhook.last_error_message = message
            self.webhook.last_error_date = (date if date is not None else int(time.time())) if message else None

    def webhook_info(self) -> dict:
        """The WebhookInfo object getWebhookInfo answers now."""
        with self.cond:
            w = self.webhook
            info: dict = {"url": w.url, "has_custom_certificate": w.has_custom_certificate,
                          "pending_update_count": len(self.pending)}
            if w.url:
                if w.ip_address:
                    info["ip_address"] = w.ip_address
                info["max_connections"] = w.max_connections or 40
                if w.allowed_updates is not None:
                    info["allowed_updates"] = list(w.allowed_updates)
            if w.last_error_message:
                info["last_error_date"] = w.last_error_date
                info["last_error_message"] = w.last_error_message
            return info

    # ---- reading what happened -------------------------------------------

    def calls_of(self, method: str, chat_id: Optional[int] = None, ok: Optional[bool] = None) -> list[Call]:
        method = method.lower()
        with self.cond:
            calls = list(self.calls)
        return [c for c in calls if c.name == method
                and (chat_id is None or c.chat_id() == chat_id)
                and (ok is None or c.ok == ok)]

    def messages_in(self, chat_id: int, include_deleted: bool = False) -> list[BotMessage]:
        """The bot's messages in a chat, oldest first, with edits applied."""
        with self.cond:
            return [m for m in self.bot_messages if m.chat_id == chat_id and (include_deleted or not m.deleted)]

    def texts_in(self, chat_id: int) -> list[str]:
        return [m.text for m in self.messages_in(chat_id)]

    def replies_to(self, message: dict) -> list[BotMessage]:
        """The bot's messages in message's chat that reply to it."""
        chat_id = message["chat"]["id"]
        return [m for m in self.messages_in(chat_id) if m.reply_to == message["message_id"]]

    def offsets(self) -> list[Optional[int]]:
        return [_as_int(c.params.get("offset")) for c in self.calls_of("getUpdates")]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: Any = "a condition"):
        """Waits until predicate() is truthy; returns its value, or raises
        AssertionError naming `what` after timeout seconds (a callable `what`
        is called then, so the message shows the state at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
            with self.cond:
                self.cond.wait(min(remaining, 0.05))

    def describe(self, limit: int = 60) -> str:
        """The last calls, one line each, for failure reports."""
        with self.cond:
            calls = self.calls[-limit:]
        t0 = self.calls[0].time if self.calls else 0
        lines = []
        for c in calls:
            p = dict(c.params)
            if isinstance(p.get("text"), str) and len(p["text"]) > 80:
                p["text"] = p["text"][:77] + "..."
            for name, f in c.files.items():
                p[name] = f"<file {f.filename!r}, {len(f.data)} bytes>"
            who = f"[{c.instance}] " if c.instance else ""
            lines.append(f"  +{c.time - t0:7.3f}s {who}{c.method} {json.dumps(p, ensure_ascii=False)[:200]} -> {c.status}")
        return "\n".join(lines)

    # ---- serving ---------------------------------------------------------

    def _serve(self, h: _Handler):
        with self.cond:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._serve_unsafe(h)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        finally:
            with self.cond:
                self.in_flight -= 1

    def _serve_file(self, h: _Handler, token: str, path: str):
        """GET /file/bot<token>/<file_path> (https://core.telegram.org/bots/api#getfile)."""
        with self.cond:
            self.downloads.append((token == self.token, path))
            found = [d for p, d in self.files.values() if p == path]
            failure = None
            for f in self.failures:
                if f.remaining > 0 and f.method == "download":
                    f.remaining -= 1
                    failure = f
                    break
            self.cond.notify_all()
        if token != self.token:
            return h.send_body(401, b'{"ok":false,"error_code":401,"description":"Unauthorized"}')
        if failure:
            return h.send_body(failure.error_code, b"error", "text/plain")
        if not found:
            return h.send_body(404, b'{"ok":false,"error_code":404,"description":"Not Found"}')
        with self.cond:
            self.downloads_in_flight += 1
            self.max_downloads_in_flight = max(self.max_downloads_in_flight, self.downloads_in_flight)
        try:
            if self.download_delay and self._stopping.wait(self.download_delay):
                h.close_connection = True
                return
            h.send_body(200, found[0], "application/octet-stream")
        finally:
            with self.cond:
                self.downloads_in_flight -= 1

    def _serve_unsafe(self, h: _Handler):
        url = urllib.parse.urlsplit(h.path)
        fm = re.fullmatch(r"(?:/[A-Za-z0-9_-]+)?/file/bot([^/]*)/(.+)", url.path)
        if fm and h.command == "GET":
            return self._serve_file(h, fm.group(1), urllib.parse.unquote(fm.group(2)))
        m = re.fullmatch(r"(?:/([A-Za-z0-9_-]+))?/bot([^/]*)/([A-Za-z0-9_]+)", url.path)
        body = h.read_body() if h.command == "POST" else b""
        if not m:
            return self._answer(h, None, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
        instance, token, method = m.group(1) or "", m.group(2), m.group(3)
        params, bad = self._params(h, url.query, body)
        files = params.pop("_files", {}) if isinstance(params.get("_files"), dict) else {}
        call = Call(method=method, params=params, time=time.monotonic(), token_ok=(token == self.token),
                    content_type=(h.headers.get("Content-Type") or "") if body else "", files=files,
                    instance=instance)
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()
        if not call.token_ok:
            return self._answer(h, call, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        if bad:
            return self._error(h, call, 400, f"Bad Request: {bad}")
        name = method.lower()

        with self.cond:
            pause = 0.0
            for d in self.slowdowns:
                if d.remaining > 0 and d.method == name and (d.chat_id is None or d.chat_id == call.chat_id()):
                    d.remaining -= 1
                    pause = d.seconds
                    break
        if pause and self._stopping.wait(pause):
            h.close_connection = True
            return
        with self.cond:
            failure = None
            for f in self.failures:
                if f.remaining > 0 and f.method == name and (f.chat_id is None or f.chat_id == call.chat_id()):
                    f.remaining -= 1
                    failure = f
                    break
            blocked = self.blocked.get(call.chat_id()) if call.chat_id() is not None else None
        if failure:
            return self._error(h, call, failure.error_code, failure.description, failure.retry_after)
        if blocked and name != "getupdates":
            return self._error(h, call, 403, blocked)

        handler = getattr(self, "_m_" + name, None)
        if handler is None:
            return self._ok(h, call, True)
        return handler(h, call)

    def _params(self, h: _Handler, query: str, body: bytes) -> tuple[dict, Optional[str]]:
        params: dict = {}
        for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
            params[k] = _maybe_json(v)
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if body:
            if ctype == "application/json":
                try:
                    obj = json.loads(body)
                except ValueError as e:
                    return params, f"can't parse JSON body: {e}"
                if not isinstance(obj, dict):
                    return params, "JSON body must be an object"
                params.update(obj)
            elif ctype == "application/x-www-form-urlencoded":
                for k, v in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
                    params[k] = _maybe_json(v)
            elif ctype == "multipart/form-data":
                fields, files, bad = _parse_multipart(h.headers.get("Content-Type") or "", body)
                if bad:
                    return params, bad
                params.update(fields)
                if files:
                    params["_files"] = files
            else:
                params["_raw_body"] = body.decode("utf-8", "replace")
        return params, None

    def _answer(self, h: _Handler, call: Optional[Call], status: int, obj: dict):
        # Compact, as the real server writes: the bot reads that layout without a tree.
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if call is not None:
            call.status = status
            call.response = obj
            with self.cond:
                self.cond.notify_all()
        h.send_body(status, data)

    def _ok(self, h, call, result):
        return self._answer(h, call, 200, {"ok": True, "result": result})

    def _error(self, h, call, code: int, description: str, retry_after: Optional[int] = None):
        obj: dict = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            obj["parameters"] = {"retry_after": retry_after}
        return self._answer(h, call, code, obj)

    # ---- methods ---------------------------------------------------------

    def _m_getme(self, h, call):
        me = self.bot.to_json()
        me.update({"can_join_groups": True, "can_read_all_group_messages": False,
                   "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False})
        return self._ok(h, call, me)

    def _m_getupdates(self, h, call):
        with self.cond:
            webhook_active = bool(self.webhook.url)
        if webhook_active:
            return self._error(h, call, 409, "Conflict: can't use getUpdates method while webhook is active; "
                               "use deleteWebhook to delete the webhook first")
        p = call.params
        offset = _as_int(p.get("offset")) or 0
        limit = _as_int(p.get("limit")) or 100
        limit = max(1, min(limit, 100))
        timeout = p.get("timeout", 0)
        try:
            timeout = max(0.0, float(timeout))
        except (TypeError, ValueError):
            timeout = 0.0
        deadline = time.monotonic() + min(timeout, self.poll_cap)
        with self.cond:
            self._poll_generation += 1
            me = self._poll_generation
            if offset > 0:
                self.pending = [u for u in self.pending if u["update_id"] >= offset]
            elif offset < 0:
                self.pending = self.pending[offset:]
            self.polls_waiting += 1
            self.cond.notify_all()
            while True:
                if self.scripted:
                    item = self.scripted.popleft()
                    call.scripted = True
                    break
                ready = [u for u in self.pending if u["update_id"] >= offset][:limit]
                if ready:
                    item = ("updates", ready)
                    break
                if self._poll_generation != me:
                    self.conflicts += 1
                    item = ("conflict",)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    item = ("updates", [])
                    break
                self.cond.wait(min(remaining, 0.1))
            self.polls_waiting -= 1
        if item[0] == "raw":
            _, status, body, ctype = item
            call.status = status
            with self.cond:
                self.cond.notify_all()
            return h.send_body(status, body, ctype)
        if item[0] == "conflict":
            return self._error(h, call, 409, "Conflict: terminated by other getUpdates request; "
                               "make sure that only one bot instance is running")
        return self._ok(h, call, item[1])

    def _chat_json(self, chat_id: int) -> dict:
        chat = self.chats.get(chat_id)
        if chat is None:
            return {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        return chat.to_json()

    def _m_sendmessage(self, h, call):
        p = call.params
        chat_id = call.chat_id()
        if chat_id is None:
            return self._error(h, call, 400, "Bad Request: chat_id is empty" if "chat_id" not in p
                               else "Bad Request: chat not found")
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            return self._error(h, call, 400, "Bad Request: message text is empty")
        shown = visible_text(text, p.get("parse_mode"))
        if utf16_len(shown) > MAX_MESSAGE_UNITS:
            return self._error(h, call, 400, "Bad Request: message is too long")
        bad = _check_entities(shown, p.get("entities"))
        if bad:
            return self._error(h, call, 400, f"Bad Request: can't parse entities: {bad}")
        rejected = self._entity_rejection(call)
        if rejected:
            return self._error(h, call, 400, rejected)
        thread_id = _as_int(p.get("message_thread_id"))
        known = self.chats.get(chat_id)
        if thread_id and known is not None and known.type != "private" and not known.is_forum:
            # Telegram's answer for a thread id in a chat without topics (for example
            # the reply-thread id that ordinary supergroup messages carry).
            return self._error(h, call, 400, "Bad Request: message thread not found")
        bad_markup = _check_markup(p.get("reply_markup"))
        if bad_markup:
            return self._error(h, call, 400, f"Bad Request: {bad_markup}")
        reply_to = None
        rp = p.get("reply_parameters")
        if isinstance(rp, dict):
            reply_to = _as_int(rp.get("message_id"))
        elif p.get("reply_to_message_id") is not None:
            reply_to = _as_int(p.get("reply_to_message_id"))
        mid = self.new_message_id()
        result: dict = {"message_id": mid, "from": self.bot.to_json(), "chat": self._chat_json(chat_id),
                        "date": int(time.time()), "text": shown}
        if isinstance(p.get("entities"), list):
            result["entities"] = p["entities"]
        if thread_id:
            result["message_thread_id"] = thread_id
            result["is_topic_message"] = True
        if reply_to:
            result["reply_to_message"] = {"message_id": reply_to, "chat": self._chat_json(chat_id),
                                          "date": int(time.time())}
        with self.cond:
            self.bot_messages.append(BotMessage(message_id=mid, chat_id=chat_id, text=shown, time=call.time,
                                                params=p, thread_id=thread_id, reply_to=reply_to,
                                                entities=list(p.get("entities") or []),
                                                reply_markup=p.get("reply_markup")))
        return self._ok(h, call, result)

    def _find(self, chat_id, message_id) -> Optional[BotMessage]:
        with self.cond:
            for m in self.bot_messages:
                if m.chat_id == chat_id and m.message_id == message_id and not m.deleted:
                    return m
        return None

    def _m_editmessagetext(self, h, call):
        p = call.params
        m = self._find(call.chat_id(), _as_int(p.get("message_id")))
        if m is None:
            return self._error(h, call, 400, "Bad Request: message to edit not found")
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            return self._error(h, call, 400, "Bad Request: message text is empty")
        shown = visible_text(text, p.get("parse_mode"))
        if utf16_len(shown) > MAX_MESSAGE_UNITS:
            return self._error(h, call, 400, "Bad Request: MESSAGE_TOO_LONG")
        bad = _check_entities(shown, p.get("entities"))
        if bad:
            return self._error(h, call, 400, f"Bad Request: can't parse entities: {bad}")
        rejected = self._entity_rejection(call)
        if rejected:
            return self._error(h, call, 400, rejected)
        bad_markup = _check_markup(p.get("reply_markup"))
        if bad_markup:
            return self._error(h, call, 400, f"Bad Request: {bad_markup}")
        entities = list(p.get("entities") or [])
        markup = p.get("reply_markup")  # an edit without one removes the keyboard, as Telegram does
        # Like Telegram: new formatting of the same text is a modification.
        if shown == m.text and entities == m.entities and markup == m.reply_markup:
            return self._error(h, call, 400, "Bad Request: message is not modified: specified new message "
                               "content and reply markup are exactly the same as a current content and reply "
                               "markup of the message")
        with self.cond:
            m.text = shown
            m.entities = entities
            m.reply_markup = markup
            m.edits.append(shown)
        return self._ok(h, call, {"message_id": m.message_id, "from": self.bot.to_json(),
                                  "chat": self._chat_json(m.chat_id), "date": int(time.time()),
                                  "edit_date": int(time.time()), "text": shown})

    def _m_setmycommands(self, h, call):
        commands = call.params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            return self._error(h, call, 400, "Bad Request: commands must be an array of at most 100")
        for c in commands:
            name, desc = (c.get("command"), c.get("description")) if isinstance(c, dict) else (None, None)
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                return self._error(h, call, 400, "Bad Request: BOT_COMMAND_INVALID")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 256:
                return self._error(h, call, 400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        with self.cond:
            self.menus[call.params.get("language_code") or ""] = commands
        return self._ok(h, call, True)

    def _m_getmycommands(self, h, call):
        with self.cond:
            menu = list(self.menus.get(call.params.get("language_code") or "", []))
        return self._ok(h, call, menu)

    def _m_answercallbackquery(self, h, call):
        qid = call.params.get("callback_query_id")
        with self.cond:
            known = qid in self.callback_ids
            if known:
                self.callback_ids.discard(qid)  # answered once, like Telegram
        if not known:
            return self._error(h, call, 400, "Bad Request: query is too old and response timeout expired or "
                               "query ID is invalid")
        text = call.params.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > 200):
            return self._error(h, call, 400, "Bad Request: MESSAGE_TOO_LONG")
        return self._ok(h, call, True)

    def callback_answers(self) -> list:
        """The texts of answerCallbackQuery calls that Telegram took, in order (None: no text)."""
        return [c.params.get("text") for c in self.calls_of("answerCallbackQuery", ok=True)]

    def press(self, user: User, message: "BotMessage", data: str, chat: Optional[Chat] = None) -> dict:
        """user presses the button with data under the bot's message: the callback_query Update (not pushed)."""
        with self.cond:
            self.next_callback += 1
            qid = f"cbq{self.next_callback}"
            self.callback_ids.add(qid)
        chat = chat or self.chats.get(message.chat_id) or Chat.private(user)
        msg = {"message_id": message.message_id, "from": self.bot.to_json(), "chat": chat.to_json(),
               "date": int(time.time()), "text": message.text}
        if message.reply_markup:
            msg["reply_markup"] = message.reply_markup
        return self.update("callback_query", {"id": qid, "from": user.to_json(), "message": msg,
                                              "chat_instance": str(chat.id), "data": data})

    def _m_deletemessage(self, h, call):
        m = self._find(call.chat_id(), _as_int(call.params.get("message_id")))
        if m is None:
            return self._error(h, call, 400, "Bad Request: message to delete not found")
        with self.cond:
            m.deleted = True
        return self._ok(h, call, True)

    def _m_sendmessagedraft(self, h, call):
        # Bot API 9.5: chat_id, draft_id (non-zero), text (1-4096 characters), entities.
        p = call.params
        if call.chat_id() is None:
            return self._error(h, call, 400, "Bad Request: chat_id is empty")
        draft_id = p.get("draft_id")
        if not isinstance(draft_id, int) or isinstance(draft_id, bool) or draft_id == 0:
            return self._error(h, call, 400, "Bad Request: draft_id must be non-zero")
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            return self._error(h, call, 400, "Bad Request: text is empty")
        shown = visible_text(text, p.get("parse_mode"))
        if utf16_len(shown) > MAX_MESSAGE_UNITS:
            return self._error(h, call, 400, "Bad Request: TEXT_TOO_LONG")
        bad = _check_entities(shown, p.get("entities"))
        if bad:
            return self._error(h, call, 400, f"Bad Request: can't parse entities: {bad}")
        rejected = self._entity_rejection(call)
        if rejected:
            return self._error(h, call, 400, rejected)
        with self.cond:
            self.drafts.append(p)
        return self._ok(h, call, True)

    def _m_setwebhook(self, h, call):
        p = call.params
        url = p.get("url", "")
        if not isinstance(url, str):
            return self._error(h, call, 400, "Bad Request: url must be a string")
        url = url.strip()
        secret = p.get("secret_token")
        if secret is not None and (not isinstance(secret, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret)):
            return self._error(h, call, 400, "Bad Request: secret token contains unallowed characters")
        allowed = p.get("allowed_updates")
        if allowed is not None and not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
            return self._error(h, call, 400, "Bad Request: can't parse allowed updates")
        cert = call.files.get("certificate")
        if "certificate" in p and cert is None:
            # Telegram wants the public key uploaded as a file, not a string.
            return self._error(h, call, 400, "Bad Request: wrong HTTP URL specified")
        if url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                return self._error(h, call, 400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
            try:
                port = parts.port or 443
            except ValueError:
                return self._error(h, call, 400, "Bad Request: bad webhook: Failed to resolve host")
            if port not in (80, 88, 443, 8443):
                return self._error(h, call, 400, "Bad Request: bad webhook: Webhook can be set up only on ports "
                                   "80, 88, 443 or 8443")
        with self.cond:
            was = self.webhook.url
            if p.get("drop_pending_updates") in (True, "true", "True", "1", 1):
                self.dropped_updates.extend(self.pending)
                self.pending = []
            if url:
                self.webhook = Webhook(url=url, secret_token=secret, allowed_updates=allowed, certificate=cert,
                                       max_connections=_as_int(p.get("max_connections")),
                                       ip_address=p.get("ip_address") if isinstance(p.get("ip_address"), str)
                                       else None)
            else:
                self.webhook = Webhook()
            self.cond.notify_all()
        if not url:
            desc = "Webhook was deleted" if was else "Webhook is already deleted"
        else:
            desc = "Webhook is already set" if was == url else "Webhook was set"
        return self._answer(h, call, 200, {"ok": True, "result": True, "description": desc})

    def _m_deletewebhook(self, h, call):
        with self.cond:
            was = self.webhook.url
            if call.params.get("drop_pending_updates") in (True, "true", "True", "1", 1):
                self.dropped_updates.extend(self.pending)
                self.pending = []
            self.webhook = Webhook()
            self.cond.notify_all()
        return self._answer(h, call, 200, {"ok": True, "result": True,
                                           "description": "Webhook was deleted" if was else
                                           "Webhook is already deleted"})

    def _m_getwebhookinfo(self, h, call):
        return self._ok(h, call, self.webhook_info())

    def _m_sendphoto(self, h, call):
        """https://core.telegram.org/bots/api#sendphoto: the photo uploaded (multipart) or a file_id/URL."""
        p = call.params
        chat_id = call.chat_id()
        if chat_id is None:
            return self._error(h, call, 400, "Bad Request: chat_id is empty")
        photo = call.files.get("photo")
        if photo is None and not isinstance(p.get("photo"), str):
            return self._error(h, call, 400, "Bad Request: there is no photo in the request")
        if photo is not None and not photo.data:
            return self._error(h, call, 400, "Bad Request: file must be non-empty")
        caption = p.get("caption") if isinstance(p.get("caption"), str) else ""
        if utf16_len(caption) > 1024:
            return self._error(h, call, 400, "Bad Request: message caption is too long")
        rp = p.get("reply_parameters")
        reply_to = _as_int(rp.get("message_id")) if isinstance(rp, dict) else None
        thread_id = _as_int(p.get("message_thread_id"))
        mid = self.new_message_id()
        with self.cond:
            self.bot_messages.append(BotMessage(message_id=mid, chat_id=chat_id, text=caption, time=call.time,
                                                params=dict(p, _photo=photo), thread_id=thread_id,
                                                reply_to=reply_to))
        return self._ok(h, call, {"message_id": mid, "from": self.bot.to_json(), "chat": self._chat_json(chat_id),
                                  "date": int(time.time()), "caption": caption,
                                  "photo": [{"file_id": f"sent{mid}", "file_unique_id": f"s{mid}", "width": 1024,
                                             "height": 1024}]})

    def _m_getfile(self, h, call):
        fid = call.params.get("file_id")
        with self.cond:
            entry = self.files.get(fid) if isinstance(fid, str) else None
        if entry is None:
            return self._error(h, call, 400, "Bad Request: invalid file_id")
        path, data = entry
        if len(data) > 20 * 1024 * 1024:
            return self._error(h, call, 400, "Bad Request: file is too big")
        return self._ok(h, call, {"file_id": fid, "file_unique_id": "u" + fid, "file_size": len(data),
                                  "file_path": path})

    def _m_sendchataction(self, h, call):
        if call.chat_id() is None:
            return self._error(h, call, 400, "Bad Request: chat_id is empty")
        if not call.params.get("action"):
            return self._error(h, call, 400, "Bad Request: wrong parameter action in request")
        return self._ok(h, call, True)


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict, dict, Optional[str]]:
    """Fields (text parts, JSON-looking values decoded) and files (parts with
    a filename) of a multipart/form-data body, or a reason it is malformed."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    boundary = msg.get_boundary()
    if not boundary:
        return {}, {}, "multipart/form-data without a boundary"
    if body.strip() == b"--" + boundary.encode("latin-1", "replace") + b"--":
        return {}, {}, None  # no parts at all (curl's form without fields)
    if not msg.is_multipart():
        return {}, {}, "can't parse multipart/form-data body"
    fields: dict = {}
    files: dict = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            return {}, {}, "multipart part without a name"
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = UploadedFile(filename, part.get_content_type(), data)
        else:
            fields[name] = _maybe_json(data.decode("utf-8", "replace"))
    return fields, files, None


def _maybe_json(v: str):
    s = v.strip()
    if s[:1] in ("{", "[") or s in ("true", "false"):
        try:
            return json.loads(s)
        except ValueError:
            return v
    return v


# https://core.telegram.org/bots/api#messageentity
ENTITY_TYPES = frozenset({
    "mention", "hashtag", "cashtag", "bot_command", "url", "email", "phone_number", "bold", "italic",
    "underline", "strikethrough", "spoiler", "blockquote", "expandable_blockquote", "code", "pre",
    "text_link", "text_mention", "custom_emoji",
})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_markup(markup) -> Optional[str]:
    """What Telegram says of a bad inline keyboard, or None."""
    if markup is None:
        return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        return "can't parse reply keyboard markup JSON object"
    for row in rows:
        for b in row:
            if not isinstance(b, dict) or not isinstance(b.get("text"), str) or not b["text"]:
                return "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
            data = b.get("callback_data")
            if data is not None and not (isinstance(data, str) and 1 <= len(data.encode("utf-8")) <= 64):
                return "BUTTON_DATA_INVALID"
    return None


def _check_entities(text: str, entities) -> Optional[str]:
    """What Telegram would refuse in entities for text (None when fine): a
    known type, integer offset and length in UTF-16 units, length > 0, inside
    the text, and the fields the type needs (text_link: url; pre: language,
    if any, a string)."""
    if entities is None:
        return None
    if not isinstance(entities, list):
        return "entities must be an array"
    n = utf16_len(text)
    for e in entities:
        if not isinstance(e, dict):
            return "entity must be an object"
        if e.get("type") not in ENTITY_TYPES:
            return f"unsupported entity type in {json.dumps(e, ensure_ascii=False)}"
        off, ln = e.get("offset"), e.get("length")
        if not _is_int(off) or not _is_int(ln):
            return f"entity {json.dumps(e, ensure_ascii=False)} needs integer offset and length"
        if off < 0 or ln <= 0 or off + ln > n:
            return f"entity {json.dumps(e, ensure_ascii=False)} is outside the text of {n} UTF-16 units"
        if e["type"] == "text_link" and not (isinstance(e.get("url"), str) and e["url"]):
            return f"text_link {json.dumps(e, ensure_ascii=False)} has no url"
        if e["type"] == "pre" and "language" in e and not isinstance(e["language"], str):
            return f"pre {json.dumps(e, ensure_ascii=False)} has a language that is not a string"
        if e["type"] == "text_mention" and not isinstance(e.get("user"), dict):
            return f"text_mention {json.dumps(e, ensure_ascii=False)} has no user"
        if e["type"] == "custom_emoji" and not e.get("custom_emoji_id"):
            return f"custom_emoji {json.dumps(e, ensure_ascii=False)} has no custom_emoji_id"
    return None


def auto_entities(text: str) -> list:
    """bot_command and mention entities as Telegram marks them (UTF-16 offsets)."""
    ents = []
    for m in re.finditer(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?", text):
        ents.append({"type": "bot_command", "offset": _utf16_offset(text, m.start()),
                     "length": utf16_len(m.group(0))})
    for m in re.finditer(r"(?<![\w/@])@[A-Za-z0-9_]{4,32}", text):
        start = m.start()
        # "/cmd@bot" is one bot_command, not a mention.
        if any(e["type"] == "bot_command" and e["offset"] <= _utf16_offset(text, start) < e["offset"] + e["length"]
               for e in ents):
            continue
        ents.append({"type": "mention", "offset": _utf16_offset(text, start), "length": utf16_len(m.group(0))})
    ents.sort(key=lambda e: e["offset"])
    return ents
