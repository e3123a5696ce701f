#!/usr/bin/env python3
"""bench/instances.py: updates per second through N `tgllm serve` instances on
one PostgreSQL database (issue 14), with the e2e tests' fakes.

A throwaway cluster (tests/e2e/pg_server.py), N instances (LEASE_SECONDS at
its default), the Python fake Telegram and fake model answering at once
(TELEGRAM_PACING as the tests' fast pacing, so pacing is not the limit).
CHATS private chats send MESSAGES messages each: every update is built
first, then a child process posts them as webhooks from THREADS threads,
round robin over the instances (a chat's messages in order, each to the
next instance, as a load balancer would spread them). The figure is the
updates / the seconds from the first post to the last answer the fake
Telegram received. The CPU seconds of every process over the same span
say which one was the limit.

    TGLLM_BIN=build-rel/tgllm python3 bench/instances.py [N] [CHATS] [MESSAGES] [THREADS]

(defaults 3 200 5 8). Needs Debian's postgresql package.
"""

import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from fake_openai import FakeOpenAI  # noqa: E402
from fake_telegram import Chat, FakeTelegram, User  # noqa: E402
from harness import API_KEY, FAST_PACING, TOKEN, BotProcess  # noqa: E402
from pg_server import PgServer  # noqa: E402
from test_serve import free_port  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    """utime + stime of pid, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except OSError:
        return 0.0


def pg_cpu(pg: PgServer) -> float:
    """The cluster's CPU seconds: its postmaster and every child (backends, WAL writer...)."""
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        pm = int(f.readline())
    total = cpu(pm)
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pm:
                        total += cpu(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return total


def poster(jobs: list, threads: int, started, failed):
    """Child process: posts each (port, body) job once, from several threads; sets started first."""
    def work(part):
        conns = {}
        for port, body in part:
            for attempt in range(3):
                c = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conns[port] = c
                try:
                    c.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    r.read()
                    if r.status == 200:
                        break
                except (OSError, http.client.HTTPException):
                    pass
                c.close()
                conns.pop(port, None)
            else:
                with failed.get_lock():
                    failed.value += 1
    parts = [jobs[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=work, args=(p,)) for p in parts]
    started.value = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run(n: int, chats: int, messages: int, threads: int) -> dict:
    pg = PgServer().start()
    tg, llm = FakeTelegram().start(), FakeOpenAI().start()
    bots = []
    try:
        with tempfile.TemporaryDirectory() as d:
            ports = [free_port() for _ in range(n)]
            for i, port in enumerate(ports):
                env = {"TG_BOT_TOKEN": TOKEN, "TG_BOT_CHATS": "*", "OPENAI_API_KEY": API_KEY,
                       "OPENAI_BASE_URL": llm.base_url, "TELEGRAM_API_BASE": tg.base_url, "STORE": pg.url(),
                       "LOG_LEVEL": "warn", "TELEGRAM_PACING": FAST_PACING, "LISTEN": f"127.0.0.1:{port}"}
                log = Path(d) / f"serve{i}.log"
                bots.append(BotProcess(env, log, args=("serve",)))
                tg.wait_for(lambda: port_open(port) or not bots[-1].running(), 40, f"instance {i} to listen")
                assert bots[-1].running(), log.read_text()
            # Every update built before the clock starts: message k of every chat, then k+1, so
            # a chat's messages are posted in order; update j goes to instance j mod n.
            users = [User(id=9_000_000 + c, first_name=f"U{c}", username=f"u{c}") for c in range(chats)]
            jobs = []
            for k in range(messages):
                for u in users:
                    update = tg.update("message", tg.message(Chat.private(u), u, f"message {k} of {u.id}"))
                    jobs.append((ports[len(jobs) % n], json.dumps(update).encode()))
            total = len(jobs)
            # Threads post a chat's messages from one thread only when THREADS divides CHATS; else
            # a later message may be posted before an earlier one, which the bot must order anyway.
            mp = multiprocessing.get_context("spawn")
            started, failed = mp.Value("d", 0.0), mp.Value("i", 0)
            children0 = sum(os.times()[2:4])  # initdb, pg_ctl... already waited for
            before = {"instances": sum(cpu(b.pid) for b in bots), "postgres": pg_cpu(pg),
                      "fakes (this process)": sum(os.times()[:2])}
            child = mp.Process(target=poster, args=(jobs, threads, started, failed))
            child.start()

            def answers():
                with tg.cond:
                    return len(tg.bot_messages)
            tg.wait_for(lambda: answers() >= total or not child.is_alive() and failed.value, 600,
                        lambda: f"{total} answers ({answers()} so far)")
            after = {"instances": sum(cpu(b.pid) for b in bots), "postgres": pg_cpu(pg),
                     "fakes (this process)": sum(os.times()[:2])}
            child.join(60)
            after["poster (child)"], before["poster (child)"] = sum(os.times()[2:4]), children0
            with tg.cond:
                last = max(c.time for c in tg.calls if c.name == "sendmessage" and c.ok)
            secs = last - started.value
            replies = sum(1 for m in tg.bot_messages if m.reply_to is not None)
            return {"n": n, "updates": total, "answers": answers(), "replies": replies, "failed": failed.value,
                    "seconds": secs, "per_second": total / secs,
                    "cpu": {k: after[k] - before[k] for k in after}}
    finally:
        for b in bots:
            b.stop()
        tg.stop()
        llm.stop()
        pg.stop()


def port_open(port: int) -> bool:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
        return True
    except OSError:
        return False


def main():
    a = [int(x) for x in sys.argv[1:]]
    n, chats, messages, threads = (a + [3, 200, 5, 8][len(a):])[:4]
    r = run(n, chats, messages, threads)
    print(f"{r['n']} instance(s): {r['updates']} updates ({chats} chats x {messages}) answered in "
          f"{r['seconds']:.2f} s: {r['per_second']:.1f} updates/s ({r['answers']} answers, "
          f"{r['failed']} posts refused)")
    print("CPU seconds over the span: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu"].items()))


if __name__ == "__main__":
    main()
