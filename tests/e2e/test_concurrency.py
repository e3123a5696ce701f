"""One chat is handled strictly in order; different chats run at once."""

import time

from fake_openai import Reply
from fake_telegram import Chat, User
from harness import ALICE, BOB, BotTestCase, main


class OrderingTest(BotTestCase):

    def test_two_messages_at_once_are_answered_in_order_with_shared_history(self):
        self.start_bot()
        self.llm.enqueue(Reply(delay=1.0))
        chat = Chat.private(ALICE)
        m1 = self.tg.message(chat, ALICE, "First message")
        m2 = self.tg.message(chat, ALICE, "Second message")
        self.tg.push(self.tg.update("message", m1), self.tg.update("message", m2))   # one getUpdates batch
        r1 = self.wait_reply(m1)
        r2 = self.wait_reply(m2)
        self.assertEqual((r1.text, r2.text), ("Echo: First message", "Echo: Second message"))
        self.assertLess(r1.message_id, r2.message_id, "expected the first answer to be sent first")
        first, second = self.llm.requests_with("First message")[0], self.llm.requests_with("Second message")[0]
        self.assertEqual(second.messages, [
            {"role": "user", "content": "First message"},
            {"role": "assistant", "content": "Echo: First message"},
            {"role": "user", "content": "Second message"},
        ], "expected the second request to carry the first exchange")
        self.assertGreaterEqual(second.time, first.finished,
                                "expected the second request only after the first answer was complete")

    def test_a_burst_of_messages_in_one_chat_stays_in_order(self):
        self.start_bot()
        self.llm.default = Reply(chunk_delay=0.05)
        chat = Chat.private(BOB)
        msgs = [self.tg.message(chat, BOB, f"burst {i}") for i in range(5)]
        self.tg.push(*[self.tg.update("message", m) for m in msgs])
        for m in msgs:
            self.wait_reply(m, timeout=20)
        self.assertEqual(self.tg.texts_in(BOB.id), [f"Echo: burst {i}" for i in range(5)])
        last = self.llm.requests_with("burst 4")[0]
        self.assertEqual(len(last.messages), 9, "expected the last request to carry the four earlier exchanges")


class ParallelChatsTest(BotTestCase):

    def test_slow_chat_does_not_hold_up_another_chat(self):
        self.start_bot()
        self.llm.on_message_containing("slow question", Reply(delay=6.0))
        slow = self.tg.send_private(ALICE, "slow question")
        self.llm.wait_requests(1)
        started = time.monotonic()
        self.assertEqual(self.ask(BOB, "quick question", timeout=4).text, "Echo: quick question")
        self.assertLess(time.monotonic() - started, 4)
        self.wait_reply(slow, timeout=15)

    def test_thirty_chats_are_answered_concurrently(self):
        self.start_bot(TG_BOT_CHATS="*")
        self.llm.default = Reply(delay=2.0)
        users = [User(id=8800000 + i, first_name=f"User{i}", username=f"user_{i}") for i in range(30)]
        msgs = [self.tg.message(Chat.private(u), u, f"hello from {i}") for i, u in enumerate(users)]
        started = time.monotonic()
        self.tg.push(*[self.tg.update("message", m) for m in msgs])
        self.tg.wait_for(lambda: all(self.tg.replies_to(m) for m in msgs), 30,
                         "all 30 chats to be answered; answered: "
                         f"{sum(1 for m in msgs if self.tg.replies_to(m))}")
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 15, f"expected 30 answers of 2 s each in far less than 60 s; took {elapsed:.1f} s")
        for i, m in enumerate(msgs):
            self.assertEqual(self.tg.replies_to(m)[0].text, f"Echo: hello from {i}")
        self.assertGreaterEqual(self.llm.max_in_flight, 10,
                                f"expected many model requests at once, at most {self.llm.max_in_flight} were")

    def test_a_crowd_of_chats_does_not_open_a_connection_each_to_telegram(self):
        # 80 chats at once while Telegram takes a second for each "typing": the
        # bot keeps at most 32 requests to Telegram in flight (one connection
        # each) and the rest wait their turn; every chat is still answered.
        self.start_bot(TG_BOT_CHATS="*")
        self.llm.default = Reply(delay=3.0)  # no answer cancels a "typing" while it is slow
        self.tg.slow("sendChatAction", 1.0, times=80)
        users = [User(id=8900000 + i, first_name=f"User{i}", username=f"crowd_{i}") for i in range(80)]
        msgs = [self.tg.message(Chat.private(u), u, f"crowd {i}") for i, u in enumerate(users)]
        self.tg.push(*[self.tg.update("message", m) for m in msgs])
        self.tg.wait_for(lambda: all(self.tg.replies_to(m) for m in msgs), 60,
                         "all 80 chats to be answered; answered: "
                         f"{sum(1 for m in msgs if self.tg.replies_to(m))}")
        for i, m in enumerate(msgs):
            self.assertEqual(self.tg.replies_to(m)[0].text, f"Echo: crowd {i}")
        self.assertLessEqual(self.tg.max_in_flight, 32,
                             f"expected at most 32 Telegram requests at once, {self.tg.max_in_flight} were")
        self.assertGreaterEqual(self.tg.max_in_flight, 16, "expected Telegram requests to run in parallel")
        self.assertEqual(len({c.chat_id() for c in self.tg.calls_of("sendChatAction")}), 80,
                         "expected every chat to get its typing indicator")


if __name__ == "__main__":
    main()
