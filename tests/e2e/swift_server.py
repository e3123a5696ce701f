"""OpenStack Swift with its S3 API, for the end-to-end tests: a real S3
server (not an emulator) from Debian's own packages, run on one node in a
temporary folder.

Swift's s3api middleware checks SigV4 in full (signature, payload hash,
region, canonical query) and answers 501 NotImplemented to conditional
writes (If-Match / If-None-Match on PUT). Its tempauth keys are named
account:user, here "test:tester" with the secret "testing".

SwiftServer.start() writes the configuration (swift.conf, the three rings,
an account, a container and an object server, and a proxy with s3api and
tempauth) with every server on its own free port of 127.0.0.1, starts the
four servers (one process each: workers = 0; each dies with the test
runner), waits until each answers HTTP, then creates the buckets with
signed PUTs (s3_server.signed_request). stop() kills them and removes the
folder.

The servers log by syslog over UDP to a socket of ours: the proxy's access
log (requests()) says what the S3 API answered, one line per request, and
all lines are kept in swift.log for a failing test.

Swift's memcache middleware must be in the pipeline (tempauth refuses to
work without it), but no memcached needs to run: the middleware is pointed
at a port we hold bound and never listen on, so each attempt is refused at
once and Swift goes on without a cache.

Needs: apt-get install swift swift-proxy swift-account swift-container
swift-object. Without them, tests that need Swift are skipped with that
reason, except in CI (CI=true), which installs them: there it is a failure.
"""

import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Optional
from urllib.parse import unquote

from harness import _die_with_parent
from s3_server import signed_request

PACKAGES = "swift swift-proxy swift-account swift-container swift-object"
ACCESS_KEY = "test:tester"   # tempauth: account "test", user "tester"
SECRET_KEY = "testing"
REGION = "us-east-1"
BACKENDS = ("account", "container", "object")
PROGRAMS = [f"swift-{name}-server" for name in BACKENDS + ("proxy",)]

# Swift's own example pipeline for s3api with tempauth, without what the tests do not use.
PROXY_PIPELINE = ("catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth "
                  "copy slo dlo proxy-logging proxy-server")
# One line per request the proxy answered, fields quoted by Swift (spaces as %20).
ACCESS_LOG_TEMPLATE = "access {method} {path} {status_int} {source} {user_agent}"
# The User-Agent of the test's own requests, left out of requests(): they are not the bot's.
PROBE_AGENT = "tgllm-test-probe"


def require_swift():
    """Raises unittest.SkipTest when Swift is not installed, or a failure in CI, which installs it."""
    missing = [p for p in PROGRAMS if not shutil.which(p)]
    if not missing:
        return
    reason = f"OpenStack Swift is not installed ({', '.join(missing)} missing): apt-get install {PACKAGES}"
    if os.environ.get("CI") == "true":
        raise AssertionError(reason + " (CI installs them in .ci/run: the Swift tests must run there)")
    raise unittest.SkipTest(reason)


def _ring_python() -> str:
    """The interpreter Swift's programs run with (their #! line): it can import swift."""
    with open(shutil.which("swift-proxy-server"), "rb") as f:
        line = f.readline().decode("utf-8", "replace")
    return line[2:].strip().split()[0] if line.startswith("#!") else "/usr/bin/python3"


# The three rings, one device each, by swift's RingBuilder (one interpreter
# start instead of nine runs of swift-ring-builder).
RING_SCRIPT = r"""
import sys
from swift.common.ring import RingBuilder
swift_dir = sys.argv[1]
for arg in sys.argv[2:]:
    name, port = arg.split("=")
    b = RingBuilder(6, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port), "device": "d1",
               "weight": 100})
    b.rebalance()
    b.save(f"{swift_dir}/{name}.builder")
    b.get_ring().save(f"{swift_dir}/{name}.ring.gz")
"""


class SwiftServer:
    """One node of Swift on 127.0.0.1: the S3 API at endpoint."""

    def __init__(self, buckets=("bucket",)):
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.buckets = list(buckets)
        self.tmp: Optional[Path] = None
        self.procs: dict = {}
        self.ports: dict = {}
        self.etc: Optional[Path] = None
        self._log_sock: Optional[socket.socket] = None
        self._memcache_sock: Optional[socket.socket] = None
        self._log_lines: list = []
        self._log_lock = threading.Lock()
        self._syncs = 0
        self._stopping = threading.Event()
        self._collector: Optional[threading.Thread] = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    def start(self, timeout: float = 60.0) -> "SwiftServer":
        require_swift()
        self.tmp = Path(tempfile.mkdtemp(prefix="tgllm-swift-"))
        try:
            self._listen_for_logs()
            deadline = time.monotonic() + timeout
            # The ports are chosen free, then bound by Swift a moment later: another
            # process may take one meanwhile. Then that server exits and we try again.
            for attempt in range(3):
                self._configure(attempt)
                self._spawn()
                if self._wait_listening(deadline):
                    break
                self._kill()
            else:
                raise AssertionError("Swift's servers could not bind their ports three times:\n" + self.output())
            for bucket in self.buckets:
                self.create_bucket(bucket, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        self._kill()
        self._stopping.set()
        if self._collector:
            self._collector.join(5)
        for s in (self._log_sock, self._memcache_sock):
            if s:
                s.close()
        self._log_sock = self._memcache_sock = None
        if self.tmp and not os.environ.get("TGLLM_E2E_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- what Swift said ----

    def log(self) -> str:
        """Every line the servers logged so far."""
        with self._log_lock:
            return "\n".join(self._log_lines)

    def requests(self) -> list:
        """The S3 requests the proxy answered (but the test's own), oldest first: {"method", "url", "status"}.
        Every request answered before the call is in it (see _sync_log)."""
        out = []
        for line in self._sync_log():
            # "access METHOD PATH STATUS SOURCE USER-AGENT (txn: ...)": the S3 request itself,
            # not the Swift requests s3api made of it (source "S3", path /v1/...), nor ours.
            fields = line.split(" access ", 1)[1].split(" ")[:5] if " access " in line else []
            if len(fields) == 5 and fields[3] == "-" and fields[4] != PROBE_AGENT \
                    and not unquote(fields[1]).startswith("/v1/"):
                out.append({"method": fields[0], "url": unquote(fields[1]), "status": int(fields[2])})
        return out

    def _sync_log(self) -> list:
        """The log lines up to a request of ours sent now. The proxy logs a request as its
        answer ends, over UDP, so an answer can reach the bot before its log line reaches us;
        but the proxy is one process, which logs an answer right after writing it: once the
        line of a request sent later is here, the lines of the answers already given are too."""
        self._syncs += 1
        marker = f"/tgllm-test-log-sync-{self._syncs}"
        c = http.client.HTTPConnection("127.0.0.1", self.ports["proxy"], timeout=10)
        try:
            c.request("GET", marker, headers={"User-Agent": PROBE_AGENT})
            c.getresponse().read()
        finally:
            c.close()
        deadline = time.monotonic() + 10
        while True:
            with self._log_lock:
                lines = list(self._log_lines)
            for i, line in enumerate(lines):
                if f" access GET {marker} " in line:
                    return [ln for ln in lines[:i] if " access GET /tgllm-test-log-sync-" not in ln]
            if time.monotonic() > deadline:
                raise AssertionError(f"Swift's access log line for GET {marker} did not come:\n" + self.output())
            time.sleep(0.01)

    def describe(self, limit: int = 60) -> str:
        try:
            requests = self.requests()
        except (OSError, http.client.HTTPException, AssertionError) as e:
            return f"(Swift's log cannot be read: {e})"
        return "\n".join(f"{r['method']} {r['url']} -> {r['status']}" for r in requests[-limit:]) or "(no requests)"

    def output(self) -> str:
        """What the servers printed (tracebacks at start), and their log."""
        parts = []
        for name in self.procs:
            try:
                parts.append(f"--- {name}:\n" + (self.tmp / f"{name}.out").read_text("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(parts) + "\n--- log:\n" + "\n".join(self.log().splitlines()[-40:])

    # ---- the bucket's contents, through the S3 API ----

    def read_object(self, bucket: str, key: str) -> Optional[bytes]:
        """The object's bytes, or None when there is none."""
        status, body = signed_request("GET", self.endpoint, bucket, key, b"", self.access_key, self.secret_key,
                                      {"user-agent": PROBE_AGENT}, region=self.region)
        if status == 404:
            return None
        if status != 200:
            raise AssertionError(f"reading s3://{bucket}/{key} from Swift failed with HTTP {status}: {body[:300]!r}")
        return body

    def put_object(self, bucket: str, key: str, body: bytes, content_type: str = "application/json"):
        status, answer = signed_request("PUT", self.endpoint, bucket, key, body, self.access_key, self.secret_key,
                                        {"content-type": content_type, "user-agent": PROBE_AGENT}, region=self.region)
        if status != 200:
            raise AssertionError(f"writing s3://{bucket}/{key} to Swift failed with HTTP {status}: {answer[:300]!r}")

    def create_bucket(self, bucket: str, deadline: Optional[float] = None):
        """A signed PUT of the bucket (Swift: a container of the account)."""
        deadline = deadline or time.monotonic() + 30
        while True:
            status, body = signed_request("PUT", self.endpoint, bucket, "", b"", self.access_key,
                                          self.secret_key, {"user-agent": PROBE_AGENT}, region=self.region)
            if status == 200:
                return
            # 503: a back end not serving yet (the account is created on first use).
            if status != 503 or time.monotonic() > deadline:
                raise AssertionError(f"creating the bucket {bucket} in Swift failed with HTTP {status}: "
                                     f"{body[:500]!r}\n" + self.output())
            time.sleep(0.05)

    # ---- start and stop ----

    def _listen_for_logs(self):
        self._log_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._log_sock.bind(("127.0.0.1", 0))
        self._log_sock.settimeout(0.2)   # to see stop() (a close does not wake a blocked recv)
        sock, stopping = self._log_sock, self._stopping

        def collect():
            while not stopping.is_set():
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                # "<priority>server-name: message"
                text = data.decode("utf-8", "replace").rstrip("\x00\n")
                with self._log_lock:
                    self._log_lines.append(text.split(">", 1)[-1])
        self._collector = threading.Thread(target=collect, daemon=True, name="swift-log")
        self._collector.start()
        # Bound, never listening: memcache connections are refused at once.
        self._memcache_sock = socket.socket()
        self._memcache_sock.bind(("127.0.0.1", 0))

    def _configure(self, attempt: int):
        etc = self.tmp / f"etc{attempt}"
        devices = self.tmp / "srv"
        (devices / "d1").mkdir(parents=True, exist_ok=True)
        etc.mkdir()
        self.etc = etc
        self.ports = {name: _free_port() for name in BACKENDS + ("proxy",)}
        (etc / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = tgllm-test\nswift_hash_path_prefix = tgllm-test\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n")
        log_port = self._log_sock.getsockname()[1]
        # bind_timeout: a port taken meanwhile fails at once (Swift retries for 30 s by default).
        common = (f"[DEFAULT]\nswift_dir = {etc}\ndevices = {devices}\nmount_check = false\n"
                  f"disable_fallocate = true\nbind_ip = 127.0.0.1\nbind_timeout = 1\nworkers = 0\n"
                  f"log_level = INFO\nlog_udp_host = 127.0.0.1\nlog_udp_port = {log_port}\n")
        for name in BACKENDS:
            (etc / f"{name}-server.conf").write_text(
                common + f"bind_port = {self.ports[name]}\nlog_name = {name}-server\n"
                f"[pipeline:main]\npipeline = {name}-server\n[app:{name}-server]\nuse = egg:swift#{name}\n")
        memcache_port = self._memcache_sock.getsockname()[1]
        (etc / "proxy-server.conf").write_text(common + f"""bind_port = {self.ports['proxy']}
log_name = proxy-server
[pipeline:main]
pipeline = {PROXY_PIPELINE}
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = {self.region}
[filter:tempauth]
use = egg:swift#tempauth
user_{self.access_key.replace(':', '_')} = {self.secret_key} .admin
[filter:proxy-logging]
use = egg:swift#proxy_logging
log_msg_template = {ACCESS_LOG_TEMPLATE}
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcache_port}
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
""")
        rings = subprocess.run([_ring_python(), "-c", RING_SCRIPT, str(etc)]
                               + [f"{name}={self.ports[name]}" for name in BACKENDS],
                               capture_output=True, timeout=60)
        if rings.returncode != 0:
            raise AssertionError("building Swift's rings failed:\n" + rings.stderr.decode("utf-8", "replace"))

    def _spawn(self):
        for name in BACKENDS + ("proxy",):
            out = open(self.tmp / f"{name}.out", "wb")
            self.procs[name] = subprocess.Popen([f"swift-{name}-server", str(self.etc / f"{name}-server.conf")],
                                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                preexec_fn=_die_with_parent)
            out.close()

    def _wait_listening(self, deadline: float) -> bool:
        """Whether all four servers answer; False when one exited (its port was taken)."""
        waiting = set(self.procs)
        while waiting:
            for name in list(waiting):
                if _answers_as_swift(name, self.ports[name]):
                    waiting.discard(name)
                elif self.procs[name].poll() is not None:
                    return False
            if time.monotonic() > deadline:
                raise AssertionError(f"Swift's {', '.join(sorted(waiting))} server(s) did not answer:\n"
                                     + self.output())
            if waiting:
                time.sleep(0.05)
        return True

    def _kill(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_as_swift(name: str, port: int) -> bool:
    """Whether Swift's server `name` answers on the port (not some other server that took the port):
    the proxy's healthcheck says OK with a transaction id, a back end has no such path."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        c.request("GET", "/healthcheck")
        r = c.getresponse()
        body = r.read()
        if name == "proxy":
            return r.status == 200 and body == b"OK" and bool(r.getheader("X-Trans-Id"))
        return r.status == 400 and body == b"Invalid path: /healthcheck"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        c.close()
