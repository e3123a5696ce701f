"""Several `poll` instances on one PostgreSQL store (issue 14): Telegram
serves one getUpdates consumer per bot (a second one ends the first with
409), so exactly one instance polls, the one holding the store's lead lock
(a session advisory lock on a connection of its own, application_name
tgllm-lead); the others stand by, healthy, and one of them takes over
within a few seconds when the poller dies or loses that connection.

Each instance talks to the one fake Telegram through its own
instance_url(name), so every call says who made it, and logs to a file of
its own. Skipped without Debian's postgresql package, failed under CI=true.
"""

import signal
import sys
import time
import urllib.request

from fake_openai import Reply
from harness import ALICE, BOB, IVAN, BotProcess, _tail, main
from test_serve import free_port
from test_store_postgres import PgTestCase

LEADING = "poll: leading: this instance polls"
STANDING_BY = "poll: standing by: another instance is polling"
TAKEOVER_S = 5  # from the leader's end to another instance's first getUpdates
# The lead lock's key, ('tgll', 'poll') as two int4: pg_locks shows them as classid, objid, objsubid 2.
LOCK_HOLDER = ("SELECT l.pid || '|' || a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
               "WHERE l.locktype = 'advisory' AND l.classid = 1952935020 AND l.objid = 1886350444 "
               "AND l.objsubid = 2 AND l.granted")


class PgPollFailoverTest(PgTestCase):

    def setUp(self):
        super().setUp()
        self.instances: dict[str, BotProcess] = {}
        self.metrics_ports: dict[str, int] = {}

    def log(self) -> str:
        """Every instance's stderr (the base class checks it holds no secret)."""
        return "".join(f"----- {name}\n{bot.log()}" for name, bot in self.instances.items())

    def tearDown(self):
        if self._failed():
            for name, bot in self.instances.items():
                sys.stderr.write(f"\n===== instance {name} (pid {bot.pid}) stderr =====\n{_tail(bot.log(), 60)}")
        super().tearDown()
        if not self._failed():
            self.assertNoSecretIn(self.log(), "the instances' stderr")

    # ---- the instances ---------------------------------------------------

    def start_instances(self, n: int):
        for i in range(1, n + 1):
            name = f"i{i}"
            port = free_port()
            bot = BotProcess(self.bot_env(TELEGRAM_API_BASE=self.tg.instance_url(name),
                                          METRICS_LISTEN=f"127.0.0.1:{port}"),
                             self.tmp / f"{name}.stderr")
            self.bots.append(bot)
            self.addCleanup(bot.kill)
            self.instances[name] = bot
            self.metrics_ports[name] = port

    def leaders(self) -> list:
        """The instances that logged they lead, in the order they first did."""
        return [name for name, bot in self.instances.items() if LEADING in bot.log()]

    def wait_one_leader(self) -> str:
        """Once the start settles: one instance leads, every other one stands by. Its name."""
        def settled():
            leading = self.leaders()
            standing = [n for n, b in self.instances.items() if STANDING_BY in b.log()]
            return leading if len(leading) == 1 and len(standing) == len(self.instances) - 1 else None
        leading = self.tg.wait_for(settled, 20, lambda: f"one instance leading and the others standing by; "
                                                       f"leading: {self.leaders()!r}")
        for name, bot in self.instances.items():
            self.assertBotRunning(bot)
        return leading[0]

    def pollers(self, since: float = 0.0) -> set:
        return {c.instance for c in self.tg.calls_of("getUpdates") if c.time >= since}

    def wait_polls(self, since: float, n: int = 4):
        """Until n getUpdates came since then: long polls last at most the fake's poll_cap (1 s), and a
        poller answered 409 asks again within its backoff (1 s), so a second poller shows by then."""
        self.tg.wait_for(lambda: len([c for c in self.tg.calls_of("getUpdates") if c.time >= since]) >= n,
                         n * 2 + 5, f"{n} getUpdates since then")

    def conflicts(self, since: float = 0.0, exempt: str = "") -> list:
        """getUpdates calls made since then and answered 409, but those of exempt (an instance cut off)."""
        return [(c.instance, round(c.time, 3)) for c in self.tg.calls_of("getUpdates")
                if c.time >= since and c.status == 409 and c.instance != exempt]

    def health(self, name: str) -> tuple:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_ports[name]}/healthz", timeout=5) as r:
            return r.status, r.read().decode().strip()

    def assert_answered_once(self, msgs: list):
        self.wait_handled(*msgs, timeout=15)
        for m in msgs:
            texts = [r.text for r in self.tg.replies_to(m)]
            self.assertEqual(texts, ["Echo: " + m["text"]], f"expected {m['text']!r} answered exactly once")

    def send_round(self, tag: str) -> list:
        msgs = [self.tg.send_private(u, f"{tag} from {u.first_name}") for u in (ALICE, BOB, IVAN)]
        self.assert_answered_once(msgs)
        return msgs

    # ---- the tests -------------------------------------------------------

    def test_one_instance_polls_and_a_standby_takes_over_when_it_is_killed(self):
        self.start_instances(3)
        leader = self.wait_one_leader()
        self.tg.wait_for(lambda: self.pollers(), 10, "a first getUpdates")
        before = self.send_round("Before")
        self.wait_polls(since=0)
        self.assertEqual(self.pollers(), {leader}, "expected getUpdates from the leader alone")
        self.assertEqual(self.conflicts(), [], "expected no getUpdates answered 409")
        for name in self.instances:
            if name != leader:  # standing by is healthy, not polling
                self.assertEqual(self.health(name), (200, "ok"), f"expected {name}'s /healthz ok")

        killed = time.monotonic()
        self.instances[leader].kill()
        first = self.tg.wait_for(
            lambda: next((c for c in self.tg.calls_of("getUpdates") if c.time > killed and c.instance != leader),
                         None),
            TAKEOVER_S + 5, "another instance's getUpdates after the leader was killed")
        took = first.time - killed
        self.assertLess(took, TAKEOVER_S, f"expected a standby polling within {TAKEOVER_S} s; it took {took:.1f} s")
        successor = first.instance
        self.assertIn(LEADING, self.instances[successor].log())

        after = self.send_round("After")
        self.wait_polls(since=killed)
        self.assertEqual(self.pollers(since=killed), {successor},
                         "expected getUpdates after the kill from the successor alone")
        self.assertEqual(self.conflicts(exempt=leader), [],
                         "expected no live instance's getUpdates answered 409 (only the killed one's may be)")
        self.assertEqual(len(self.leaders()), 2, "expected the third instance still standing by")
        self.assert_answered_once(before + after)

    def test_a_leader_stopped_with_sigterm_hands_over_at_once(self):
        # SIGTERM: the leader stops polling and gives the lead up before it drains its running replies
        # (up to 10 s), so the standby polls while the old leader still finishes an answer.
        self.start_instances(2)
        leader = self.wait_one_leader()
        self.tg.wait_for(lambda: self.pollers(), 10, "a first getUpdates")
        self.llm.on_message_containing("Slow, while", Reply(text="A slow answer", delay=4.0))
        slow = self.tg.send_private(ALICE, "Slow, while the leader stops")
        self.llm.wait_requests(1)
        stopped = time.monotonic()
        self.instances[leader].signal(signal.SIGTERM)
        first = self.tg.wait_for(
            lambda: next((c for c in self.tg.calls_of("getUpdates") if c.time > stopped and c.instance != leader),
                         None),
            TAKEOVER_S + 5, "the standby's getUpdates after the leader was told to stop")
        self.assertLess(first.time - stopped, TAKEOVER_S)
        self.assertTrue(self.instances[leader].running(), "expected the standby polling while the leader drains")
        self.assertEqual(self.wait_reply(slow, timeout=15).text, "A slow answer")
        self.assertEqual(self.instances[leader].wait(15), 0, "expected the leader to exit 0 on SIGTERM")
        self.assertIn("store: postgres: the lead is given up", self.instances[leader].log())
        after = self.send_round("After")
        self.assertEqual(self.conflicts(exempt=leader), [])
        self.assert_answered_once(after)
        self.assertEqual([r.text for r in self.tg.replies_to(slow)], ["A slow answer"])

    def test_the_leader_losing_its_lock_connection_stops_polling_and_one_leads_again(self):
        self.start_instances(2)
        leader = self.wait_one_leader()
        self.tg.wait_for(lambda: self.pollers(), 10, "a first getUpdates")
        before = self.send_round("Before")
        holder = self.query(LOCK_HOLDER)
        self.assertRegex(holder, r"^\d+\|tgllm-lead$", "expected the lock held by a connection named tgllm-lead")
        pid = int(holder.split("|")[0])

        leads = self.log().count(LEADING)
        self.assertEqual(self.query(f"SELECT pg_terminate_backend({pid})"), "t")
        # The leader notices at once and stops polling; the lock is free, and one instance takes it
        # (either: the old leader connects again, a standby asks again every second or so).
        self.tg.wait_for(lambda: "poll: no longer leading" in self.instances[leader].log(), 5,
                         "the leader to say it no longer leads")
        # Until it noticed, the old leader may have asked once more (Telegram ends one of the two with 409).
        stopped = time.monotonic()
        self.tg.wait_for(lambda: self.log().count(LEADING) > leads, TAKEOVER_S + 5,
                         "an instance to lead again")
        self.tg.wait_for(lambda: self.pollers(since=stopped), TAKEOVER_S + 5, "a getUpdates after the cut")
        after = self.send_round("After")
        self.wait_polls(since=stopped)
        again = self.query(LOCK_HOLDER)
        self.assertRegex(again, r"^\d+\|tgllm-lead$")
        self.assertNotEqual(int(again.split("|")[0]), pid, "expected the lock on a new connection")
        self.assertEqual(len(self.pollers(since=stopped)), 1, "expected one instance polling after the cut")
        self.assertEqual(self.conflicts(since=stopped), [],
                         "expected no getUpdates made after the cut answered 409 (two pollers)")
        for bot in self.instances.values():
            self.assertBotRunning(bot)
        self.assert_answered_once(before + after)
        self.assertLogged(r"lead lock's connection is lost", levels=("error",))


if __name__ == "__main__":
    main()
