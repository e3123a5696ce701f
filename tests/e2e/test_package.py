"""scripts/package: the serverless zips are self-contained.

scripts/package builds dist/tgllm-yc.zip (Yandex Cloud Functions, bash-2204)
and dist/tgllm-lambda.zip (AWS Lambda, provided.al2023). PackageTest packages
the binary under test (dynamic, with its loader and libraries; a sanitized
build too); LeanPackageTest runs scripts/package as a deploy does, without a
binary, so that it builds the lean static tgllm itself (build-package/; the
first run builds curl, md4c and SQLite from Debian's sources into
build-deps/, a few minutes, later runs reuse them), and checks that the
Yandex zip fits the 3.5 MB of a direct upload. Each zip is unpacked, with
the modes its entries record, into an empty directory tree where the
platform puts code (/function/code, /var/task); the tree gets nothing else
but bash (at /bin/bash, /bin/sh; its libraries in a directory only bash is
told about) and an empty /tmp. No /etc, no /usr, no /lib with a libc, no
/dev, no /proc (but for a sanitized build, whose runtime reads its options
there). Then, under `env -i` and `chroot`,
handler.sh answers HTTP events from stdin and bootstrap serves the fake Lambda
Runtime API, both talking to the fake Telegram (over HTTPS, trusted only
through the zip's CA bundle) and the fake model on 127.0.0.1: the answer
reaching Telegram proves the zip carries everything the binary needs.

chroot needs root: the test is skipped, saying so, for other users.
"""

import base64
import json
import os
import re
import select
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zipfile
from pathlib import Path

from fake_lambda import FakeLambda
from fake_telegram import Chat
from harness import ALICE, BIN, REPO, BotTestCase, _die_with_parent, _live, check_binary, main, minimal_env

PACKAGE = REPO / "scripts" / "package"
LOADER = "lib/ld-linux-x86-64.so.2"
YC_SIZE_LIMIT = 3_500_000  # Yandex Cloud Functions: the largest zip uploaded with the version itself
SECRET = "package-test-secret"
BASH_LIBS = "/bash-lib"  # bash's own libraries: LD_LIBRARY_PATH, which tgllm's loader ignores (--library-path)


def ldd(path) -> tuple:
    """({name: resolved path}, the loader's path) for an executable, as ldd reports them."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    libs, loader = {}, None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            libs[parts[0]] = parts[2]
        elif parts and parts[0].startswith("/"):
            loader = parts[0]
    return libs, loader


def unpack(zip_path: Path, dest: Path):
    """Unpacks with the modes the entries record (zipfile's extractall drops
    them); refuses links and names that leave dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            name = info.filename
            if name.startswith("/") or ".." in Path(name).parts:
                raise AssertionError(f"{zip_path.name}: the entry {name!r} would land outside the tree")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise AssertionError(f"{zip_path.name}: {name} is a symbolic link; expected real files")
            target = dest / name
            if name.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, stat.S_IMODE(mode) or 0o644)


def add_bash(root: Path):
    """/bin/bash and /bin/sh -> bash; bash's loader at its PT_INTERP path, its
    libraries under BASH_LIBS (not a directory any loader searches by default)."""
    bash = os.path.realpath(shutil.which("bash") or "/bin/bash")
    libs, loader = ldd(bash)
    (root / "bin").mkdir()
    shutil.copy2(bash, root / "bin" / "bash")
    os.symlink("bash", root / "bin" / "sh")
    libdir = root / BASH_LIBS.lstrip("/")
    libdir.mkdir()
    for name, path in libs.items():
        shutil.copy2(os.path.realpath(path), libdir / name)
    if loader:
        (root / loader.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(loader), root / loader.lstrip("/"))


def remove_tree(path: Path):
    """Removes a test tree: never follows links, never crosses into a mount."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            if os.path.ismount(os.path.join(dirpath, d)):
                raise RuntimeError(f"{dirpath}/{d} is a mount point; the tree {path} is left in place")
    shutil.rmtree(path)


def self_signed_cert(directory: Path):
    """A certificate for 127.0.0.1 and its key (openssl CLI), or None without openssl."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    cert, key = directory / "test-ca.pem", directory / "test-ca.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=tgllm package test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsProxy:
    """HTTPS on 127.0.0.1 in front of a plain HTTP server (the fake Telegram)."""

    def __init__(self, target_port: int, cert: Path, key: Path):
        self.target_port = target_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self._accept, daemon=True, name="tls-proxy").start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket):
        raw.settimeout(60)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.handshakes += 1
        try:
            with tls, socket.create_connection(("127.0.0.1", self.target_port), timeout=60) as back:
                while True:
                    ready = [tls] if tls.pending() else select.select([tls, back], [], [], 60)[0]
                    if not ready:
                        return
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            return
                        (back if s is tls else tls).sendall(data)
        except (OSError, ssl.SSLError):
            pass

    def stop(self):
        self.sock.close()


class PackageTestCase(BotTestCase):
    """The zips, run in an empty chroot; the subclasses say which binary is packaged."""
    work: Path
    zips: dict
    package_output: str
    tls = None
    sanitized = False
    package_timeout = 240

    @classmethod
    def package_args(cls) -> list:
        """scripts/package's arguments before --out and --ca."""
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        if cls is PackageTestCase:
            raise unittest.SkipTest("the base of PackageTest and LeanPackageTest")
        if os.geteuid() != 0:
            raise unittest.SkipTest("the package test runs the zips in a chroot, which needs root "
                                    "(CI runs as root); run it as root to prove the zips self-contained")
        for tool in ("chroot", "env", "ldd"):
            if not shutil.which(tool):
                raise unittest.SkipTest(f"{tool} is missing")
        cls.check_tools()
        cls.work = Path(tempfile.mkdtemp(prefix="tgllm-package-"))
        try:
            cls.tls = self_signed_cert(cls.work)
            args = [str(PACKAGE), *cls.package_args(), "--out", str(cls.work / "dist")]
            if cls.tls:
                # The system's CAs plus the test's: the fake Telegram is trusted through the zip only.
                system = Path("/etc/ssl/certs/ca-certificates.crt")
                cls.ca = cls.work / "ca-bundle.pem"
                cls.ca.write_bytes((system.read_bytes() if system.exists() else b"") + cls.tls[0].read_bytes())
                args += ["--ca", str(cls.ca)]
            else:
                sys.stderr.write("note: openssl is missing, so the fake Telegram is reached over plain HTTP "
                                 "and the zip's CA bundle goes untested\n")
            res = subprocess.run(args, capture_output=True, text=True, timeout=cls.package_timeout)
            if res.returncode != 0:
                raise AssertionError(f"scripts/package failed ({res.returncode}):\n{res.stdout}{res.stderr}")
            cls.package_output = res.stdout
            cls.zips = {k: cls.work / "dist" / f"tgllm-{k}.zip" for k in ("yc", "lambda")}
        except BaseException:
            remove_tree(cls.work)
            raise

    @classmethod
    def check_tools(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("TGLLM_E2E_KEEP"):
            print(f"kept {cls.work}")
        else:
            remove_tree(cls.work)

    def setUp(self):
        super().setUp()
        self.proxy = None
        if self.tls:
            self.proxy = TlsProxy(self.tg.port, *self.tls)
            self.addCleanup(self.proxy.stop)

    # ---- the tree --------------------------------------------------------

    def assertCertificates(self, z: zipfile.ZipFile):
        """The zip's CAs are the bundle's certificates, one a file, each named by its subject hash
        (what OpenSSL looks up in a hashed directory), so no bundle is parsed at a cold start."""
        pem = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)
        names = [n for n in z.namelist() if n.startswith("ca-certificates/") and not n.endswith("/")]
        self.assertEqual(sorted(z.read(n).strip() for n in names), sorted(pem.findall(self.ca.read_bytes())))
        self.assertNotIn("ca-certificates.crt", z.namelist(), "expected no bundle file to parse")
        test_ca = [n for n in names if z.read(n).strip() == self.tls[0].read_bytes().strip()]
        self.assertEqual(len(test_ca), 1, "expected the test's CA in the directory")
        h = subprocess.run(["openssl", "x509", "-noout", "-subject_hash", "-in", str(self.tls[0])],
                           capture_output=True, text=True, check=True).stdout.strip()
        self.assertRegex(test_ca[0], rf"^ca-certificates/{h}\.\d+$")

    def make_root(self, kind: str, code_dir: str) -> Path:
        """An empty tree with the zip unpacked at code_dir, bash and /tmp."""
        root = Path(tempfile.mkdtemp(prefix="root-", dir=self.work))
        self.addCleanup(lambda: os.environ.get("TGLLM_E2E_KEEP") or remove_tree(root))
        unpack(self.zips[kind], root / code_dir.lstrip("/"))
        add_bash(root)
        (root / "tmp").mkdir(mode=0o1777)
        os.chmod(root / "tmp", 0o1777)
        return root

    def chroot_env(self, **extra) -> list:
        env = minimal_env({
            "PATH": "/bin",
            "LD_LIBRARY_PATH": BASH_LIBS,
            "TG_BOT_TOKEN": self.bot_env()["TG_BOT_TOKEN"],
            "TG_BOT_CHATS": self.bot_env()["TG_BOT_CHATS"],
            "OPENAI_API_KEY": self.bot_env()["OPENAI_API_KEY"],
            "OPENAI_BASE_URL": self.llm.base_url,
            "TELEGRAM_API_BASE": self.proxy.base_url if self.proxy else self.tg.base_url,
            "STORE": "sqlite:/tmp/tgllm.db",
            "WEBHOOK_SECRET": SECRET,
            "HANDLE_DEADLINE": "20",
            "LOG_LEVEL": "debug",
            **extra,
        })
        return [f"{k}={v}" for k, v in env.items()]

    def chroot_cmd(self, root: Path, script: str, **extra) -> list:
        env = [shutil.which("env"), "-i", *self.chroot_env(**extra)]
        if not self.sanitized:
            return [*env, shutil.which("chroot"), str(root), script]
        # A sanitizer's runtime reads its options (and LeakSanitizer its
        # threads) in /proc: a sanitized build gets one, mounted in a private
        # mount namespace that ends with the process (nothing to unmount).
        return [*env, shutil.which("unshare"), "--mount", "--propagation", "private", "--",
                os.path.realpath(shutil.which("sh")), "-c", 'mkdir -p "$1/proc" && "$3" -t proc proc "$1/proc" && '
                'exec "$4" "$1" "$2"', "sh", str(root), script, shutil.which("mount"), shutil.which("chroot")]

    def run_handler(self, root: Path, event: dict, **extra) -> subprocess.CompletedProcess:
        with open(self.log_path, "ab") as log:
            return subprocess.run(self.chroot_cmd(root, "/function/code/handler.sh", **extra),
                                  input=json.dumps(event).encode(),
                                  stdout=subprocess.PIPE, stderr=log, timeout=60, preexec_fn=_die_with_parent)

    def yandex_event(self, update: dict, base64_body: bool = False) -> dict:
        """A Yandex Cloud Functions HTTP event (direct invocation) carrying update."""
        body = json.dumps(update)
        return {
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET},
            "multiValueHeaders": {}, "queryStringParameters": {}, "multiValueQueryStringParameters": {},
            "requestContext": {"identity": {"sourceIp": "91.108.6.1", "userAgent": ""}, "httpMethod": "POST",
                               "requestId": "package-test", "requestTime": "", "requestTimeEpoch": int(time.time())},
            "body": base64.b64encode(body.encode()).decode() if base64_body else body,
            "isBase64Encoded": base64_body,
        }

    def assertThroughTls(self):
        if self.proxy:
            self.assertGreater(self.proxy.handshakes, 0, "expected the bot to reach Telegram over HTTPS")

    # ---- the tests -------------------------------------------------------

    def test_handler_sh_answers_events_in_an_empty_chroot(self):
        root = self.make_root("yc", "/function/code")
        chat = Chat.private(ALICE)
        first = self.tg.update("message", self.tg.message(chat, ALICE, "hello from a chroot"))
        res = self.run_handler(root, self.yandex_event(first))
        self.assertEqual(res.returncode, 0, f"handler.sh exited {res.returncode}; stdout {res.stdout!r}")
        resp = json.loads(res.stdout)
        self.assertEqual(resp["statusCode"], 200, f"got {resp}")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: hello from a chroot"])
        self.assertThroughTls()
        # A second invocation (base64 body, as Yandex may send it) finds the history in /tmp.
        second = self.tg.update("message", self.tg.message(chat, ALICE, "and again"))
        res = self.run_handler(root, self.yandex_event(second, base64_body=True))
        self.assertEqual((res.returncode, json.loads(res.stdout or b"{}").get("statusCode")), (0, 200),
                         f"stdout {res.stdout!r}")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: hello from a chroot", "Echo: and again"])
        self.assertEqual(len(self.llm.requests_with("and again")[0].messages), 3,
                         "expected the second invocation to carry the first exchange")
        self.store = f"sqlite:{root}/tmp/tgllm.db"
        self.assertTrue(self.store_contains("Echo: and again"), "expected the history in the chroot's /tmp")

    def test_handler_sh_refuses_an_event_without_the_secret(self):
        root = self.make_root("yc", "/function/code")
        event = self.yandex_event(self.tg.update("message", self.tg.message(Chat.private(ALICE), ALICE, "forged")))
        event["headers"].pop("X-Telegram-Bot-Api-Secret-Token")
        res = self.run_handler(root, event)
        self.assertEqual((res.returncode, json.loads(res.stdout or b"{}").get("statusCode")), (0, 401),
                         f"stdout {res.stdout!r}")
        self.assertEqual(self.llm.requests, [])

    def test_bootstrap_serves_the_lambda_runtime_api_in_an_empty_chroot(self):
        root = self.make_root("lambda", "/var/task")
        runtime = FakeLambda(idle_limit=3.0).start()
        self.addCleanup(runtime.stop)
        update = self.tg.update("message", self.tg.message(Chat.private(ALICE), ALICE, "hello from lambda"))
        runtime.push("req-1", {
            "version": "2.0", "rawPath": "/", "rawQueryString": "",
            "headers": {"content-type": "application/json", "x-telegram-bot-api-secret-token": SECRET},
            "requestContext": {"http": {"method": "POST", "path": "/"}},
            "body": json.dumps(update), "isBase64Encoded": False,
        })
        log = open(self.log_path, "ab")
        self.addCleanup(log.close)
        # LAMBDA_TASK_ROOT and a LD_LIBRARY_PATH like Lambda's own: the bundle must not care.
        proc = subprocess.Popen(self.chroot_cmd(root, "/var/task/bootstrap", AWS_LAMBDA_RUNTIME_API=runtime.address,
                                                LAMBDA_TASK_ROOT="/var/task",
                                                LD_LIBRARY_PATH=f"{BASH_LIBS}:/lib64:/usr/lib64:/var/task/lib"),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent)
        _live.add(proc)
        self.addCleanup(self._kill, proc)
        kind, resp = runtime.wait_response("req-1", timeout=30)
        self.assertEqual((kind, resp.get("statusCode")), ("response", 200), f"got {kind} {resp}")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: hello from lambda"])
        self.assertThroughTls()
        # No more events: the fake answers 500 after its idle limit and the runtime stops.
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            self.fail("expected the runtime to stop when the Runtime API fails")

    @staticmethod
    def _kill(proc: subprocess.Popen):
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _live.discard(proc)


class PackageTest(PackageTestCase):
    """The binary under test, dynamically linked: the zips carry its loader and libraries."""

    @classmethod
    def check_tools(cls):
        check_binary()
        cls.sanitized = any(re.match(r"lib(a|ub|t|l|m|hwa)san\.so", name) for name in ldd(BIN)[0])
        if cls.sanitized and not (shutil.which("unshare") and shutil.which("mount")):
            raise unittest.SkipTest("a sanitized build needs /proc in the chroot: unshare and mount are missing")

    @classmethod
    def package_args(cls) -> list:
        return [BIN]

    def test_the_zips_hold_the_binary_its_libraries_the_loader_and_the_ca_bundle(self):
        self.assertRegex(self.package_output, r"tgllm-yc\.zip: [\d.]+ [kM]B")
        self.assertRegex(self.package_output, r"tgllm-lambda\.zip: [\d.]+ [kM]B")
        libs, loader = ldd(BIN)
        self.assertEqual(loader, "/lib64/ld-linux-x86-64.so.2")
        for kind, script in (("yc", "handler.sh"), ("lambda", "bootstrap")):
            with zipfile.ZipFile(self.zips[kind]) as z:
                entries = {i.filename: i for i in z.infolist()}
                for name in (script, "tgllm", LOADER):
                    self.assertIn(name, entries, f"expected {name} in {self.zips[kind].name}")
                for name, path in libs.items():
                    self.assertIn(f"lib/{name}", entries, f"expected {name} (ldd) in {self.zips[kind].name}")
                    self.assertEqual(entries[f"lib/{name}"].file_size, os.path.getsize(os.path.realpath(path)),
                                     f"expected lib/{name} to be the real file {os.path.realpath(path)}")
                for name, info in entries.items():
                    mode = info.external_attr >> 16
                    self.assertEqual(info.create_system, 3, f"{name}: expected Unix attributes")
                    self.assertFalse(stat.S_ISLNK(mode), f"{name}: expected no symbolic links")
                    if name in (script, "tgllm", LOADER):
                        self.assertEqual(stat.S_IMODE(mode), 0o755, f"{name}: expected mode 755")
                        self.assertTrue(stat.S_ISREG(mode), f"{name}: expected a regular file")
                text = z.read(script).decode()
                for path in ("/function/code", "/var/task"):
                    self.assertNotIn(path, text, f"expected {script} to find its own directory")
                if self.tls:
                    self.assertCertificates(z)

    def test_the_chroot_holds_nothing_a_missing_library_could_come_from(self):
        # The control: without the bundled libc (bash's own copy is in the
        # tree, under LD_LIBRARY_PATH) the handler cannot start, so the
        # answers above came from the zip's files alone.
        root = self.make_root("yc", "/function/code")
        (root / "function/code/lib/libc.so.6").unlink()
        event = self.yandex_event(self.tg.update("message", self.tg.message(Chat.private(ALICE), ALICE, "x")))
        res = self.run_handler(root, event)
        self.assertNotEqual(res.returncode, 0, "expected the handler to fail without the bundled libc")
        self.assertIn("libc.so.6", self.log(), "expected the loader to name the missing library")
        self.assertEqual(self.tg.texts_in(ALICE.id), [])


class LeanPackageTest(PackageTestCase):
    """scripts/package as a deploy runs it: it builds the lean static tgllm and packages that."""

    package_timeout = 1500  # the first run builds curl, md4c and SQLite from source

    @classmethod
    def check_tools(cls):
        if not shutil.which("cmake"):
            raise unittest.SkipTest("cmake is missing: scripts/package cannot build the lean tgllm")

    @classmethod
    def package_args(cls) -> list:
        return []

    def test_the_yandex_zip_fits_the_direct_upload_limit(self):
        size = self.zips["yc"].stat().st_size
        self.assertLessEqual(size, YC_SIZE_LIMIT,
                             f"expected tgllm-yc.zip to fit Yandex's {YC_SIZE_LIMIT} bytes for a direct upload; "
                             f"it has {size} (docs/lean-build.md, \"Size\")")
        self.assertRegex(self.package_output, rf"tgllm-yc\.zip: [\d.]+ [kM]B \({size} bytes\)")

    def test_the_zips_hold_one_static_executable_the_ca_bundle_and_the_script(self):
        for kind, script in (("yc", "handler.sh"), ("lambda", "bootstrap")):
            with zipfile.ZipFile(self.zips[kind]) as z:
                entries = {i.filename: i for i in z.infolist()}
                others = sorted(n for n in entries if not re.fullmatch(r"ca-certificates/[0-9a-f]{8}\.\d+", n))
                self.assertEqual(others, sorted([script, "tgllm", "ca-certificates/"]),
                                 f"expected {self.zips[kind].name} to hold the script, tgllm and the CAs only")
                for name in (script, "tgllm"):
                    mode = entries[name].external_attr >> 16
                    self.assertEqual((stat.S_ISREG(mode), stat.S_IMODE(mode)), (True, 0o755),
                                     f"{name}: expected a regular file with mode 755")
                text = z.read(script).decode()
                self.assertIn('exec "$here/tgllm"', text, f"expected {script} to run tgllm itself, without a loader")
                for path in ("/function/code", "/var/task"):
                    self.assertNotIn(path, text, f"expected {script} to find its own directory")
                if self.tls:
                    self.assertCertificates(z)
                unpacked = self.work / f"static-{kind}"
                unpacked.mkdir()
                z.extract("tgllm", unpacked)
            # Static: no interpreter (PT_INTERP 3) and no dynamic section (PT_DYNAMIC 2) to load
            # libraries by. Position-dependent: ELF e_type 2 (ET_EXEC), not 3 (ET_DYN, a static-pie,
            # which relocates ~100 pages at every cold start; docs/lean-build.md).
            elf = (unpacked / "tgllm").read_bytes()
            e_type, = struct.unpack_from("<H", elf, 16)
            phoff, = struct.unpack_from("<Q", elf, 32)
            phentsize, phnum = struct.unpack_from("<HH", elf, 54)
            p_types = {struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)}
            self.assertEqual(p_types & {2, 3}, set(), "expected the packaged tgllm to load no library")
            self.assertEqual(e_type, 2, "expected the packaged tgllm to be a position-dependent executable")

    def test_the_functions_of_a_cold_start_are_linked_together(self):
        # scripts/cold-start.order lists them; the link puts them first in the text. Spread
        # over its 4.4 MB, as the linker otherwise leaves them, each 64 KB window of code
        # they touch costs a page fault at every cold start (docs/lean-build.md).
        order = [line.strip() for line in (REPO / "scripts" / "cold-start.order").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        nm = subprocess.run(["nm", str(REPO / "build-package" / "tgllm")], capture_output=True, text=True,
                            check=True).stdout   # the build scripts/package packaged, before stripping
        address = {}
        for line in nm.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in "tTwWi":
                address.setdefault(fields[2], int(fields[0], 16))
        hot = [address[name] for name in order if name in address]
        self.assertGreaterEqual(len(hot), 0.9 * len(order),
                                "expected the functions of scripts/cold-start.order in tgllm: is it current? "
                                "(bench/run --order)")
        windows = {a >> 16 for a in hot}
        self.assertLessEqual(len(windows), 24, f"expected the {len(hot)} functions of a cold start in at most "
                             f"24 windows of 64 KB; they are in {len(windows)} (is ld.lld installed?)")

    def test_a_host_name_resolves_in_the_chroot_without_nss_modules(self):
        # Static glibc resolves through its built-in "files" and "dns"
        # services: no /etc/nsswitch.conf, no libnss_*.so (docs/lean-build.md).
        # /etc/hosts alone names the fake Telegram here; plain HTTP, as the
        # test certificate names only 127.0.0.1.
        root = self.make_root("yc", "/function/code")
        (root / "etc").mkdir()
        (root / "etc" / "hosts").write_text("127.0.0.1 telegram.test\n")
        event = self.yandex_event(self.tg.update("message", self.tg.message(Chat.private(ALICE), ALICE, "by name")))
        res = self.run_handler(root, event, TELEGRAM_API_BASE=f"http://telegram.test:{self.tg.port}")
        self.assertEqual((res.returncode, json.loads(res.stdout or b"{}").get("statusCode")), (0, 200),
                         f"stdout {res.stdout!r}")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: by name"])


if __name__ == "__main__":
    main()
