#!/usr/bin/env python3
"""bench/pg_callgrind.py: the PostgreSQL server's instructions per update
beside figure 2 (issue 14).

A throwaway cluster (tests/e2e/pg_server.py), stopped and started again
under `valgrind --tool=callgrind --trace-children=yes` (a file per process:
each backend its own), then `bench/run --only 2` with BENCH_F2_STORE on it
(300 updates over 10 chats unless BENCH_F2_UPDATES/BENCH_F2_CHATS say
otherwise). Prints the backends' instructions (PostgresMain, inclusive: a
forked child's file also holds what the postmaster ran before the fork)
per update, and the share of the parts that matter.

    BENCH_BUILD_DIR=$PWD/build-rel BENCH_NO_BUILD=1 python3 bench/pg_callgrind.py
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from pg_server import PgServer  # noqa: E402

PARTS = ["PostgresMain", "GetCachedPlan", "pg_analyze_and_rewrite_varparams", "raw_parser",
         "standard_ExecutorRun", "CommitTransactionCommand"]


def inclusive(path: str) -> dict:
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    got = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) .*:(\w+) \[", line)
        if m and m.group(2) in PARTS and m.group(2) not in got:
            got[m.group(2)] = int(m.group(1).replace(",", ""))
    return got


def main():
    updates = int(os.environ.setdefault("BENCH_F2_UPDATES", "300"))
    os.environ.setdefault("BENCH_F2_CHATS", "10")
    out = tempfile.mkdtemp(prefix="tgllm-pgcg-")
    os.chmod(out, 0o777)  # the cluster runs as nobody when we are root
    pg = PgServer().start()
    proc = None
    try:
        pg.stop_server()
        args = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/cg.%p",
                os.path.join(pg.bin, "postgres"), "-D", pg.data, "-p", str(pg.port), "-k", pg.dir,
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        proc = subprocess.Popen(pg._as_owner(args), cwd=pg.dir, env=pg.proc_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = [os.path.join(pg.bin, "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)]
        for _ in range(240):
            if pg._run(ready, check=False).returncode == 0:
                break
            time.sleep(0.5)
        env = dict(os.environ, BENCH_F2_STORE=pg.url(), BENCH_RESULTS=os.path.join(out, "results.json"))
        subprocess.run([str(ROOT / "bench" / "run"), "--only", "2"], env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        if proc:
            proc.terminate()  # smart shutdown: the bot has gone, the files are written
            proc.wait(120)
        pg.stop()
    total = dict.fromkeys(PARTS, 0)
    backends = 0
    for f in sorted(Path(out).glob("cg.*")):
        got = inclusive(str(f))
        if "PostgresMain" in got:
            backends += 1
            for k, v in got.items():
                total[k] += v
    main_ir = total["PostgresMain"]
    print(f"{backends} backends: {main_ir / 1e6:.0f} M instructions (PostgresMain), "
          f"{main_ir / updates / 1e6:.2f} M per update over {updates} updates (their start included)")
    for k in PARTS[1:]:
        print(f"  {k}: {100 * total[k] / main_ir:.1f} %")
    print(f"callgrind files in {out}")


if __name__ == "__main__":
    main()
