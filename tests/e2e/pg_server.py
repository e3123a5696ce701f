"""A throwaway PostgreSQL for the tests: Debian's `postgresql` package
(initdb and pg_ctl from /usr/lib/postgresql/<version>/bin), a cluster made
in a temporary directory, listening on 127.0.0.1 on a free port (its unix
socket in that directory), with password (SCRAM) authentication and a
database, removed afterwards.

PostgreSQL refuses to run as root: run as root (CI, containers), the
cluster belongs to `nobody` and its commands run through `setpriv`.

Without the package, tests that need the server are skipped with the
reason; with CI=true they fail instead (CI installs it: .ci/run).

As a command, it wraps another one (CTest runs the store's unit test so):

    pg_server.py COMMAND [ARG...]

starts a cluster, runs COMMAND with TGLLM_TEST_PG set to the database's
postgres:// URI, and removes the cluster; exit status is COMMAND's (77, a
skip for CTest, when there is no PostgreSQL and CI is not true).
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Optional

USER = "tgllm"
PASSWORD = "pg-Secret-9f4e1c7a"  # long enough to be spotted in any output
DATABASE = "tgllm"


def bin_dir() -> Optional[str]:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(dirs[-1]) if dirs else None


def unavailable() -> Optional[str]:
    """Why no cluster can be made here, or None."""
    if not bin_dir():
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "running as root and no setpriv to run PostgreSQL as nobody"
    return None


def skip_or_fail(test: unittest.TestCase):
    why = unavailable()
    if why:
        if os.environ.get("CI") == "true":
            test.fail("CI: " + why)
        test.skipTest(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self):
        self.bin = bin_dir()
        self.dir = None
        self.port = None
        self.proc_env = None

    def _as_owner(self, args: list) -> list:
        if os.geteuid() == 0:
            return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] + args
        return args

    def _run(self, args: list, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(self._as_owner(args), cwd=self.dir, env=self.proc_env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (args[0], r.returncode, r.stdout, r.stderr))
        return r

    @property
    def data(self) -> str:
        return os.path.join(self.dir, "data")

    def start(self):
        why = unavailable()
        if why:
            raise RuntimeError(why)
        # As root, under /tmp whatever TMPDIR says: nobody must reach the folder.
        self.dir = tempfile.mkdtemp(prefix="tgllm-pg-", dir="/tmp" if os.geteuid() == 0 else None)
        if os.geteuid() == 0:
            os.chown(self.dir, 65534, 65534)
        os.chmod(self.dir, 0o700)
        self.proc_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": self.dir,
                         "PGPASSWORD": PASSWORD}
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, 65534, 65534)
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", USER, "--pwfile", pwfile,
                   "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], timeout=120)
        os.unlink(pwfile)
        self.port = _free_port()
        self._pg_ctl("start")
        self._run([os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                   "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE %s" % DATABASE])
        return self

    def _pg_ctl(self, action: str, mode: str = "fast"):
        opts = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.dir)
        args = [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"),
                "-w", "-t", "60"]
        if action != "stop":
            args += ["-o", opts]
        if action != "start":
            args += ["-m", mode]
        self._run(args + [action], timeout=90)

    def restart(self):
        """Stops the server (fast: connections are closed) and starts it again on the same port."""
        self._pg_ctl("restart")

    def stop_server(self):
        self._pg_ctl("stop")

    def start_server(self):
        self._pg_ctl("start")

    def url(self, password: str = PASSWORD, database: str = DATABASE) -> str:
        return "postgres://%s:%s@127.0.0.1:%d/%s" % (USER, password, self.port, database)

    def keywords(self) -> str:
        return "host=127.0.0.1 port=%d user=%s password=%s dbname=%s" % (self.port, USER, PASSWORD, DATABASE)

    def sql(self, query: str, database: str = DATABASE) -> str:
        """Runs query with psql; its rows, unaligned, '|' between columns."""
        r = self._run([os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                       "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", query])
        return r.stdout.strip()

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if not self.dir:
            return
        if self.port and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self._pg_ctl("stop", "immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    why = unavailable()
    if why:
        if os.environ.get("CI") == "true":
            print("pg_server.py: CI: %s" % why, file=sys.stderr)
            return 1
        print("pg_server.py: skipped: %s" % why, file=sys.stderr)
        return 77
    pg = PgServer()
    try:
        started = time.monotonic()
        pg.start()
        print("pg_server.py: PostgreSQL on 127.0.0.1:%d (%.1f s to make)" % (pg.port, time.monotonic() - started),
              file=sys.stderr)
        env = dict(os.environ, TGLLM_TEST_PG=pg.url())
        return subprocess.call(sys.argv[1:], env=env)
    finally:
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
