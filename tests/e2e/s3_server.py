"""An S3 server for the end-to-end tests: @20minutes/s3rver 4.0.4 (a
third-party S3 emulator, from npm) run by a small launcher of ours.

s3rver itself verifies AWS SigV4 signatures of signed requests (the whole
canonical request: method, path, sorted query, signed headers, payload hash),
but it serves unsigned requests anonymously and ignores If-Match /
If-None-Match on PUT. The launcher (LAUNCHER below, written to the server's
temporary directory) therefore:

  - replaces s3rver's built-in key pair with the test's own, and refuses
    unsigned requests (403 AccessDenied), so a bot that forgot to sign fails;
  - makes each object's reads and writes atomic with respect to one another
    (a per-key queue: s3rver rewrites files in place, a concurrent GET could
    read half a file, which S3 never shows), and stores a PUT only once its
    whole body has arrived (s3rver truncates the file first, so a client that
    died during a held PUT left an empty object where S3 keeps the old one);
  - with conditions="enforce", checks If-Match / If-None-Match: * on PUT
    inside that queue, as S3, Yandex Object Storage and MinIO do (412
    PreconditionFailed; If-Match on a missing key: 404 NoSuchKey); with
    conditions="ignore" it leaves them to s3rver, which ignores them; with
    conditions="501" it answers 501 NotImplemented to them, as OpenStack
    Swift's s3api does;
  - can pair GETs of matching keys (pair_gets): such a GET waits until a
    second one arrives (or pair_wait_ms pass), then both are served, so two
    writers surely read the same version of an object and race;
  - can answer 503 SlowDown to the first `slow_down` PUTs of matching keys
    (slow_down_keys), as S3 does when throttling;
  - can do the first `drop_after_put` PUTs of matching keys (drop_keys) and
    then close the connection without an answer, as a network failure may;
  - can hold PUTs of matching keys (delay_keys) for delay_ms before doing
    them, as a slow or distant store does;
  - writes a JSON-lines log of every request: method, key, status, the
    conditions and payload hash sent, and the signed headers (when it is
    answered), and a log of arrivals (when it comes in);
  - serves the test's own reads (read_object: signed GETs with the header
    x-tgllm-test-probe) through the same per-key queue, so a test never
    reads an object half written, without logging or pairing them: they are
    not the bot's requests.

So the signature checks are s3rver's; the conditional-write semantics are
the launcher's (the test relies on them being S3's, which it cannot prove).

Installing: `npm install @20minutes/s3rver@4.0.4` once into a cache folder
($TGLLM_S3RVER_DIR, else $XDG_CACHE_HOME/tgllm/s3rver-4.0.4, else
~/.cache/tgllm/s3rver-4.0.4). Without node and npm, or when the install
fails, tests that need the server are skipped with the reason.
"""

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path
from typing import Optional

S3RVER_PACKAGE = "@20minutes/s3rver"
S3RVER_VERSION = "4.0.4"

LAUNCHER = r"""
'use strict';
// tgllm's launcher for @20minutes/s3rver (see tests/e2e/s3_server.py).
const http = require('http');
const fs = require('fs');
const { Readable } = require('stream');
const S3rver = require('@20minutes/s3rver');
const AWSAccount = require('@20minutes/s3rver/lib/models/account');
const S3Error = require('@20minutes/s3rver/lib/models/error');
const objects = require('@20minutes/s3rver/lib/controllers/object');

const env = process.env;
const port = Number(env.S3_PORT || 0);
const buckets = (env.S3_BUCKETS || 'bucket').split(',').filter(Boolean);
const conditions = env.S3_CONDITIONS || 'enforce';
const pairMs = Number(env.S3_PAIR_WAIT_MS || 0);
let slowDowns = Number(env.S3_SLOW_DOWN || 0);
const slowRe = env.S3_SLOW_DOWN_KEYS ? new RegExp(env.S3_SLOW_DOWN_KEYS) : null;
let drops = Number(env.S3_DROP_AFTER_PUT || 0);
const dropRe = env.S3_DROP_KEYS ? new RegExp(env.S3_DROP_KEYS) : null;
const pairRe = env.S3_PAIR_GETS ? new RegExp(env.S3_PAIR_GETS) : null;
const delayMs = Number(env.S3_DELAY_MS || 0);
const delayRe = env.S3_DELAY_KEYS ? new RegExp(env.S3_DELAY_KEYS) : null;
const logFd = fs.openSync(env.S3_LOG, 'a');
const arrivalsFd = fs.openSync(env.S3_ARRIVALS, 'a');
const isProbe = (req) => req.headers['x-tgllm-test-probe'] === '1';

// Our key pair only: s3rver's built-in S3RVER/S3RVER is revoked.
const account = AWSAccount.DUMMY_ACCOUNT;
account.revokeAccessKey('S3RVER');
account.createKeyPair(env.S3_ACCESS_KEY, env.S3_SECRET_KEY);

// One queue per object: each request on a key runs alone, as if atomic.
const queues = new Map();
async function exclusive(key, fn) {
  const before = queues.get(key) || Promise.resolve();
  let release;
  const mine = new Promise((r) => { release = r; });
  const tail = before.then(() => mine);
  queues.set(key, tail);
  await before;
  try {
    return await fn();
  } finally {
    release();
    if (queues.get(key) === tail) queues.delete(key);
  }
}

async function currentEtag(ctx) {
  try {
    return (await ctx.store.getMetadata(ctx.params.bucket, ctx.params.key)).etag;
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw err;
  }
}

// A GET to pair waits for the next one (or pairMs), then both go on.
let waiting = null;
function pairUp() {
  if (waiting) {
    const partner = waiting;
    waiting = null;
    partner();
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => { if (waiting === go) waiting = null; resolve(); }, pairMs);
    const go = () => { clearTimeout(timer); resolve(); };
    waiting = go;
  });
}
const originalPut = objects.putObject;
const originalGet = objects.getObject;
const originalDelete = objects.deleteObject;
const qkey = (ctx) => ctx.params.bucket + '/' + ctx.params.key;

// The whole body, or IncompleteBody when the client went away before it was
// all there. s3rver's own store truncates the object's file first and then
// streams the request into it, so a client killed during a held PUT left an
// empty object behind; S3 stores a PUT whole or not at all. The iterator also
// fails on a request destroyed before this runs (its client gone while the
// PUT waited in the key's queue), where listeners added now would wait for
// events already past and hold the key's queue for ever.
async function wholeBody(req) {
  const chunks = [];
  try {
    for await (const c of req) chunks.push(c);
  } catch (err) {
    throw new S3Error('IncompleteBody', 'The request body terminated unexpectedly');
  }
  if (!req.complete) throw new S3Error('IncompleteBody', 'The request body terminated unexpectedly');
  return Buffer.concat(chunks);
}

// These run after s3rver's authentication: a bad signature is refused first.
objects.putObject = (ctx) => exclusive(qkey(ctx), async () => {
  const req = ctx.req;
  const body = await wholeBody(req);
  ctx.req = Readable.from([body]); // what s3rver's handler reads the object from
  if (delayMs > 0 && delayRe && delayRe.test(ctx.params.key)) {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
  if (slowDowns > 0 && slowRe && slowRe.test(ctx.params.key)) {
    slowDowns--;
    throw new S3Error('SlowDown', 'Please reduce your request rate.');
  }
  const ifMatch = ctx.get('if-match');
  const ifNoneMatch = ctx.get('if-none-match');
  if ((ifMatch || ifNoneMatch) && conditions === '501') {
    throw new S3Error('NotImplemented', 'A header you provided implies functionality that is not implemented', { Header: ifMatch ? 'If-Match' : 'If-None-Match' });
  }
  if ((ifMatch || ifNoneMatch) && conditions === 'enforce') {
    const etag = await currentEtag(ctx);
    if (ifNoneMatch && ifNoneMatch.trim() === '*' && etag !== null) {
      throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
    }
    if (ifMatch && etag === null) {
      throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: ctx.params.key });
    }
    if (ifMatch && ifMatch.trim() !== etag) {
      throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
    }
  }
  await originalPut(ctx);
  if (drops > 0 && dropRe && dropRe.test(ctx.params.key)) {
    drops--;
    req.socket.destroy(); // written, but the client never hears so
  }
});

objects.getObject = async (ctx) => {
  if (pairRe && pairRe.test(ctx.params.key) && !isProbe(ctx.req)) await pairUp();
  return exclusive(qkey(ctx), async () => {
    await originalGet(ctx);
    // Read the file now, inside the queue, not after it.
    const body = ctx.body;
    if (body && typeof body.pipe === 'function') {
      const chunks = [];
      for await (const c of body) chunks.push(c);
      ctx.body = Buffer.concat(chunks);
    }
  });
};

objects.deleteObject = (ctx) => exclusive(qkey(ctx), () => originalDelete(ctx));

const app = new S3rver({
  directory: env.S3_DIR,
  silent: true,
  vhostBuckets: false,
  configureBuckets: buckets.map((name) => ({ name, configs: [] })),
});

function signedHeaders(h) {
  const m = /SignedHeaders=([^,]+)/.exec(h || '');
  return m ? m[1] : null;
}

(async () => {
  await app.configureBuckets();
  const handler = app.callback();
  const server = http.createServer((req, res) => {
    if (isProbe(req)) {
      handler(req, res);
      return;
    }
    // at: microseconds on one clock for arrivals and answers, to tell requests that overlapped.
    const now = () => Number(process.hrtime.bigint() / 1000n);
    fs.writeSync(arrivalsFd, JSON.stringify({ method: req.method, url: req.url, at: now() }) + '\n');
    // Logged synchronously before the answer's last bytes go out, so a test
    // that has seen the answer's effect also finds the request in the log.
    const end = res.end;
    res.end = function (...args) {
      fs.writeSync(logFd, JSON.stringify({
        method: req.method, url: req.url, status: res.statusCode, at: now(),
        signed: req.headers.authorization ? signedHeaders(req.headers.authorization) : null,
        credential: (/Credential=([^,]+)/.exec(req.headers.authorization || '') || [])[1] || null,
        contentSha256: req.headers['x-amz-content-sha256'] || null,
        ifMatch: req.headers['if-match'] || null,
        ifNoneMatch: req.headers['if-none-match'] || null,
      }) + '\n');
      return end.apply(this, args);
    };
    if (!('authorization' in req.headers) && !/[?&]X-Amz-Signature=/.test(req.url)) {
      res.statusCode = 403;
      res.setHeader('Content-Type', 'application/xml');
      res.end('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>' +
        '<Message>Anonymous request refused by the test launcher (sign it with SigV4)</Message></Error>');
      return;
    }
    handler(req, res);
  });
  server.listen(port, '127.0.0.1', () => {
    console.log('listening ' + server.address().port);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
})().catch((e) => { console.error('s3 launcher:', e); process.exit(1); });
"""


def cache_dir() -> Path:
    if os.environ.get("TGLLM_S3RVER_DIR"):
        return Path(os.environ["TGLLM_S3RVER_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tgllm" / f"s3rver-{S3RVER_VERSION}"


def _installed(d: Path) -> bool:
    pkg = d / "node_modules" / "@20minutes" / "s3rver" / "package.json"
    try:
        return json.loads(pkg.read_text())["version"] == S3RVER_VERSION
    except (OSError, ValueError, KeyError):
        return False


def ensure_s3rver() -> Path:
    """The node_modules folder holding s3rver; raises unittest.SkipTest when it cannot be had."""
    if not shutil.which("node") or not shutil.which("npm"):
        raise unittest.SkipTest("node and npm are needed for the S3 emulator (@20minutes/s3rver); "
                                "install them (apt-get install nodejs npm) to run the S3 tests")
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    # One install at a time, even with tests running in parallel.
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(d):
            if not (d / "package.json").exists():
                (d / "package.json").write_text('{"name": "tgllm-test-s3rver", "private": true}\n')
            try:
                r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
                                    "--save-exact", "--prefix", str(d), f"{S3RVER_PACKAGE}@{S3RVER_VERSION}"],
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
            except subprocess.TimeoutExpired:
                raise unittest.SkipTest(f"npm install {S3RVER_PACKAGE}@{S3RVER_VERSION} took over 10 minutes")
            if r.returncode != 0 or not _installed(d):
                tail = (r.stderr or r.stdout).decode("utf-8", "replace").strip().splitlines()[-5:]
                raise unittest.SkipTest(f"npm install {S3RVER_PACKAGE}@{S3RVER_VERSION} failed: " + " | ".join(tail))
    return d / "node_modules"


class S3Server:
    """One s3rver process on 127.0.0.1 with its own data folder."""

    def __init__(self, access_key: str = "TGLLMTESTKEY", secret_key: str = "tgllm-test-secret-0123456789",
                 buckets=("bucket",), conditions: str = "enforce", pair_gets: Optional[str] = None,
                 pair_wait_ms: int = 3000, slow_down: int = 0, slow_down_keys: Optional[str] = None,
                 drop_after_put: int = 0, drop_keys: Optional[str] = None, delay_ms: int = 0,
                 delay_keys: Optional[str] = None):
        self.access_key = access_key
        self.secret_key = secret_key
        self.buckets = list(buckets)
        self.conditions = conditions
        self.pair_gets = pair_gets
        self.pair_wait_ms = pair_wait_ms
        self.slow_down = slow_down
        self.slow_down_keys = slow_down_keys
        self.drop_after_put = drop_after_put
        self.drop_keys = drop_keys
        self.delay_ms = delay_ms
        self.delay_keys = delay_keys
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.tmp: Optional[Path] = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    @property
    def log_path(self) -> Path:
        return self.tmp / "requests.jsonl"

    @property
    def arrivals_path(self) -> Path:
        return self.tmp / "arrivals.jsonl"

    def start(self, timeout: float = 30.0) -> "S3Server":
        node_modules = ensure_s3rver()
        self.tmp = Path(tempfile.mkdtemp(prefix="tgllm-s3-"))
        launcher = self.tmp / "launch.js"
        launcher.write_text(LAUNCHER)
        self.log_path.touch()
        self.arrivals_path.touch()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NODE_PATH": str(node_modules),
            "S3_DIR": str(self.data_dir),
            "S3_PORT": "0",
            "S3_BUCKETS": ",".join(self.buckets),
            "S3_ACCESS_KEY": self.access_key,
            "S3_SECRET_KEY": self.secret_key,
            "S3_CONDITIONS": self.conditions,
            "S3_LOG": str(self.log_path),
            "S3_ARRIVALS": str(self.arrivals_path),
        }
        if self.pair_gets:
            env["S3_PAIR_GETS"] = self.pair_gets
            env["S3_PAIR_WAIT_MS"] = str(self.pair_wait_ms)
        if self.slow_down and self.slow_down_keys:
            env["S3_SLOW_DOWN"] = str(self.slow_down)
            env["S3_SLOW_DOWN_KEYS"] = self.slow_down_keys
        if self.drop_after_put and self.drop_keys:
            env["S3_DROP_AFTER_PUT"] = str(self.drop_after_put)
            env["S3_DROP_KEYS"] = self.drop_keys
        if self.delay_ms and self.delay_keys:
            env["S3_DELAY_MS"] = str(self.delay_ms)
            env["S3_DELAY_KEYS"] = self.delay_keys
        self._out = open(self.tmp / "server.out", "wb+")
        # s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3
        # keeps in its legacy provider: without it a listing of over 1000 keys is a 500.
        self.proc = subprocess.Popen(["node", "--openssl-legacy-provider", str(launcher)], env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = (self.tmp / "server.out").read_text("utf-8", "replace")
            m = re.search(r"^listening (\d+)\n", text, re.M)   # the whole line: it may be half written
            if m:
                self.port = int(m.group(1))
                if _can_connect(self.port):
                    return self
            if self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"the S3 emulator exited at start (status {self.proc.returncode}):\n{text}")
            time.sleep(0.05)
        text = (self.tmp / "server.out").read_text("utf-8", "replace")
        self.stop()
        raise AssertionError(f"the S3 emulator did not start within {timeout} s:\n{text}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_out", None) and not self._out.closed:
            self._out.close()
        if self.tmp and not os.environ.get("TGLLM_E2E_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def output(self) -> str:
        try:
            return (self.tmp / "server.out").read_text("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def requests(self) -> list:
        """Every request answered so far (the launcher's log), oldest first."""
        return _read_jsonl(self.log_path)

    def arrivals(self) -> list:
        """Every request received so far, answered or not: {"method", "url"}, oldest first."""
        return _read_jsonl(self.arrivals_path)

    def describe(self, limit: int = 60) -> str:
        lines = []
        for r in self.requests()[-limit:]:
            cond = r.get("ifMatch") and f" If-Match:{r['ifMatch']}" or r.get("ifNoneMatch") and \
                f" If-None-Match:{r['ifNoneMatch']}" or ""
            lines.append(f"{r['method']} {r['url']} -> {r['status']}{cond}")
        return "\n".join(lines) or "(no requests)"

    # ---- the bucket's contents ----

    def object_path(self, bucket: str, key: str) -> Path:
        # s3rver's filesystem store: <dir>/<bucket>/<key>._S3rver_object
        return self.data_dir / bucket / f"{key}._S3rver_object"

    def read_object(self, bucket: str, key: str) -> Optional[bytes]:
        """The object's bytes, or None when there is none. Read through the S3
        API, in the object's queue: s3rver rewrites a file in place, so reading
        the file while the bot writes the object could see half of it."""
        status, body = signed_request("GET", self.endpoint, bucket, key, b"", self.access_key, self.secret_key,
                                      {"x-tgllm-test-probe": "1"})
        if status == 404:
            return None
        if status != 200:
            raise AssertionError(f"reading s3://{bucket}/{key} failed with HTTP {status}: {body[:300]!r}")
        return body

    def keys(self, bucket: str) -> list:
        root = self.data_dir / bucket
        suffix = "._S3rver_object"
        return sorted(str(p.relative_to(root))[:-len(suffix)] for p in root.rglob("*" + suffix))

    # ---- signed requests of our own (to seed objects the way another client would) ----

    def put_object(self, bucket: str, key: str, body: bytes, content_type: str = "application/json"):
        status, _ = signed_request("PUT", self.endpoint, bucket, key, body, self.access_key, self.secret_key,
                                   {"content-type": content_type})
        if status != 200:
            raise AssertionError(f"seeding s3://{bucket}/{key} failed with HTTP {status}")


def signed_request(method: str, endpoint: str, bucket: str, key: str, body: bytes, access_key: str,
                   secret_key: str, headers: Optional[dict] = None, region: str = "us-east-1"):
    """A SigV4-signed request (AWS's documented algorithm, written out here so seeding needs no SDK)."""
    import datetime
    import hashlib
    import hmac
    from urllib.parse import quote

    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = endpoint.split("://", 1)[1]
    path = "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")
    payload = hashlib.sha256(body).hexdigest()
    hdrs = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload}
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
    names = sorted(hdrs)
    canonical = "\n".join([method, path, "", *[f"{n}:{hdrs[n].strip()}" for n in names], "",
                           ";".join(names), payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                             f"SignedHeaders={';'.join(names)}, Signature={sig}")
    del hdrs["host"]
    req = urllib.request.Request(endpoint + path, data=body if method == "PUT" else None, method=method,
                                 headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _read_jsonl(path: Path) -> list:
    """The complete lines of a JSON-lines file another process appends to (a
    line still being written is left for the next read)."""
    data = path.read_bytes()
    return [json.loads(line) for line in data[:data.rfind(b"\n") + 1].decode("utf-8", "replace").splitlines()
            if line.strip()]


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _die_with_parent():
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
