"""How an answer reaches the chat while the model is still writing it:
drafts in private chats, a message edited as it grows in groups, long
answers cut into parts, the rate limits of the Bot API and its 429s, and
the typing indicator.

Most tests run with fast pacing (harness.FAST_PACING); TelegramPacingTest
proves Telegram's own intervals with the binary's default pacing, and
CustomPacingTest that TELEGRAM_PACING changes them (test_cli.py: bad values).

Answers here are plain prose (and fenced code): Markdown rendering has its
own tests (test_render_e2e.py)."""

import re

from fake_openai import Reply, answer
from harness import ALICE, OPEN_GROUP, BotTestCase, main, utf16_len

# The calls that show answer text in a chat.
SHOWING = ("sendMessageDraft", "sendMessage", "editMessageText")
# Of those, the messages: Telegram's per-chat limit counts these; drafts are paced among themselves.
MESSAGES = ("sendMessage", "editMessageText")
MENTION = "@tgllm_test_bot "


def prose(words: int, tag: str = "word") -> str:
    """Plain text without Markdown: word0 word1 ... and a full stop."""
    return " ".join(f"{tag}{i}" for i in range(words)) + "."


def squash(text: str) -> str:
    """Text without whitespace: cuts between parts drop the spaces there."""
    return re.sub(r"\s+", "", text)


def utf16_slice(text: str, offset: int, length: int) -> str:
    """The characters an entity covers (offset and length in UTF-16 units)."""
    b = text.encode("utf-16-le")
    return b[2 * offset:2 * (offset + length)].decode("utf-16-le")


def gaps(calls) -> list:
    return [round(b.time - a.time, 3) for a, b in zip(calls, calls[1:])]


class DeliveryTestCase(BotTestCase):

    def showing_calls(self, chat_id: int, ok=None, methods=SHOWING) -> list:
        """The calls that showed (or tried to show) text in the chat, in order."""
        names = {m.lower() for m in methods}
        with self.tg.cond:
            calls = list(self.tg.calls)
        return [c for c in calls if c.name in names and c.chat_id() == chat_id and (ok is None or c.ok == ok)]

    def assertSpaced(self, chat_id: int, seconds: float, what: str):
        """Messages to the chat at least `seconds` apart (0.1 s of slack), and drafts among themselves."""
        for kind, methods in (("messages", MESSAGES), ("drafts", ("sendMessageDraft",))):
            calls = self.showing_calls(chat_id, methods=methods)
            too_close = [g for g in gaps(calls) if g < seconds - 0.1]
            self.assertEqual(too_close, [], f"expected {kind} to {what} at least {seconds} s apart (gaps >= "
                                            f"{seconds - 0.1:.1f} s); the gaps were {gaps(calls)} between "
                                            f"{[c.method for c in calls]}")

    def wait_chat_texts(self, chat_id: int, expected: list, timeout: float):
        self.tg.wait_for(lambda: self.tg.texts_in(chat_id) == expected, timeout,
                         f"the chat {chat_id} to show exactly {[t[:40] + '...' for t in expected]}; it shows "
                         f"{[t[:40] + '...' for t in self.tg.texts_in(chat_id)]}")

    def assertGrowingPrefixes(self, texts: list, whole: str, what: str):
        for t in texts:
            self.assertTrue(whole.startswith(t), f"expected every {what} to be a beginning of the answer; got {t!r}")
        lengths = [len(t) for t in texts]
        self.assertEqual(lengths, sorted(lengths), f"expected the {what}s to grow; their lengths were {lengths}")
        self.assertLess(lengths[0], lengths[-1], f"expected the {what}s to grow; their lengths were {lengths}")


class PrivateStreamingTest(DeliveryTestCase):

    def test_private_answer_grows_as_drafts_with_one_draft_id_then_arrives_as_one_message(self):
        text = prose(40)
        self.start_bot()
        self.llm.enqueue(answer(text, chunks=10, chunk_delay=0.15))     # ~1.5 s of streaming
        msg = self.tg.send_private(ALICE, "Tell me something slowly")
        reply = self.wait_reply(msg, timeout=25)
        self.assertEqual(reply.text, text, "expected the final message to hold the whole answer")
        self.wait_handled(msg)

        drafts = self.tg.calls_of("sendMessageDraft", chat_id=ALICE.id, ok=True)
        self.assertGreaterEqual(len(drafts), 2,
                                f"expected at least 2 drafts during a 1.5 s stream, got {len(drafts)}")
        self.assertGrowingPrefixes([d.params.get("text", "") for d in drafts], text, "draft")
        ids = {repr(d.params.get("draft_id")) for d in drafts}
        self.assertEqual(len(ids), 1, f"expected one draft_id for one answer, got {sorted(ids)}")
        draft_id = drafts[0].params.get("draft_id")
        self.assertTrue(isinstance(draft_id, int) and draft_id != 0,
                        f"expected a non-zero integer draft_id, got {draft_id!r}")
        self.assertLess(drafts[-1].time, reply.time, "expected every draft before the final message")

        sends = self.tg.calls_of("sendMessage", chat_id=ALICE.id)
        self.assertEqual([(c.status, c.params.get("text")) for c in sends], [(200, text)],
                         "expected exactly one sendMessage: the final answer")
        self.assertEqual(self.tg.calls_of("editMessageText", chat_id=ALICE.id), [],
                         "expected no edits in a private chat that takes drafts")
        self.assertEqual(self.tg.texts_in(ALICE.id), [text])

    def test_typing_stops_once_the_first_draft_appears(self):
        text = prose(40)
        self.start_bot()
        # Thinks for 0.5 s, then streams for ~5 s: typing (repeated every 4 s)
        # would come again during the stream if it did not stop.
        self.llm.enqueue(Reply(text=text, delay=0.5, chunks=10, chunk_delay=0.5))
        msg = self.tg.send_private(ALICE, "Think, then write")
        reply = self.wait_reply(msg, timeout=30)
        self.wait_handled(msg)
        first = self.showing_calls(ALICE.id, ok=True)[0]
        typing = self.tg.calls_of("sendChatAction", chat_id=ALICE.id)
        self.assertTrue([c for c in typing if c.time < first.time], "expected typing before the first text")
        late = [round(c.time - first.time, 2) for c in typing if c.time > first.time + 0.2]
        self.assertEqual(late, [], f"expected no typing after the first text ({first.method}); typing came "
                                   f"at these seconds after it (the final message came "
                                   f"{reply.time - first.time:.1f} s after it)")


class GroupStreamingTest(DeliveryTestCase):

    def stream_in_group(self, text: str, reply: Reply, timeout: float = 40) -> dict:
        self.start_bot()
        self.llm.enqueue(reply)
        msg = self.tg.send_group(OPEN_GROUP, ALICE, MENTION + "tell us slowly")
        self.wait_chat_texts(OPEN_GROUP.id, [text], timeout)
        self.wait_handled(msg)
        return msg

    def test_group_answer_is_sent_then_edited_as_it_grows_into_one_message(self):
        text = prose(60)
        # ~3 s of streaming: the first frame waits 1 s (a quick answer would come whole), then edits.
        msg = self.stream_in_group(text, answer(text, chunks=12, chunk_delay=0.25))
        sends = self.tg.calls_of("sendMessage", chat_id=OPEN_GROUP.id)
        self.assertEqual(len(sends), 1, f"expected one sendMessage, then edits; got {len(sends)} sendMessage(s): "
                                        f"{[(c.status, c.params.get('text', '')[:30]) for c in sends]}")
        first = sends[0]
        self.assertTrue(first.ok, f"expected the first part to be accepted, got {first.response}")
        self.assertLess(len(first.params["text"]), len(text),
                        "expected the message to start with part of the answer while it streams")
        edits = self.tg.calls_of("editMessageText", chat_id=OPEN_GROUP.id)
        self.assertGreaterEqual(len(edits), 2, f"expected the message edited as it grows (at least one growing "
                                               f"edit and the final one), got {len(edits)} edit(s)")
        mid = first.response["result"]["message_id"]
        self.assertEqual({c.params.get("message_id") for c in edits}, {mid},
                         f"expected every edit to target message {mid}")
        self.assertGrowingPrefixes([first.params["text"]] + [c.params.get("text", "") for c in edits], text,
                                   "shown text")
        self.assertEqual(edits[-1].params.get("text"), text, "expected the last edit to hold the whole answer")
        self.assertEqual(self.tg.calls_of("sendMessageDraft", chat_id=OPEN_GROUP.id), [],
                         "expected no drafts in a group")
        [message] = self.tg.messages_in(OPEN_GROUP.id, include_deleted=True)
        self.assertEqual(message.reply_to, msg["message_id"], "expected the answer to reply to the question")

    def test_long_group_answer_streams_into_several_messages_without_leftovers(self):
        text = "\n\n".join(prose(120, f"p{n}w") for n in range(8))       # ~7,000 characters
        self.start_bot()
        self.llm.enqueue(answer(text, chunks=10, chunk_delay=0.25))
        msg = self.tg.send_group(OPEN_GROUP, ALICE, MENTION + "a long story please")
        self.tg.wait_for(lambda: squash("".join(self.tg.texts_in(OPEN_GROUP.id))) == squash(text), 60,
                         lambda: "the whole answer in the group; it has "
                                 f"{[utf16_len(t) for t in self.tg.texts_in(OPEN_GROUP.id)]} UTF-16 units in its "
                                 "messages")
        self.wait_handled(msg)
        parts = self.tg.messages_in(OPEN_GROUP.id)
        self.assertGreaterEqual(len(parts), 2, "expected ~7,000 characters in at least 2 messages")
        self.assertEqual(squash("".join(m.text for m in parts)), squash(text),
                         "expected the messages to hold the whole answer once, in order, and nothing else")
        self.assertEqual([m.reply_to for m in parts], [msg["message_id"]] + [None] * (len(parts) - 1),
                         "expected only the first message to be a reply")
        for m in parts:
            self.assertLessEqual(utf16_len(m.text), 4096)


class NotModifiedTest(DeliveryTestCase):

    def test_message_is_not_modified_answer_to_an_edit_counts_as_success(self):
        text = prose(60)
        self.start_bot()
        self.tg.fail("editMessageText", times=1, error_code=400, chat_id=OPEN_GROUP.id,
                     description="Bad Request: message is not modified: specified new message content and reply "
                                 "markup are exactly the same as a current content and reply markup of the message")
        self.llm.enqueue(answer(text, chunks=12, chunk_delay=0.25))
        msg = self.tg.send_group(OPEN_GROUP, ALICE, MENTION + "slowly, please")
        self.wait_chat_texts(OPEN_GROUP.id, [text], 40)
        self.wait_handled(msg)
        self.assertEqual(self.tg.texts_in(OPEN_GROUP.id), [text], "expected one message with the whole answer")
        self.assertEqual([c.status for c in self.tg.calls_of("editMessageText", chat_id=OPEN_GROUP.id)][:1], [400],
                         "control: expected the first edit answered \"not modified\"")
        self.assertEqual(len(self.tg.calls_of("sendMessage", chat_id=OPEN_GROUP.id)), 1,
                         "expected no new message after \"not modified\"")
        complaints = [ln for ln in self.log_lines("warn") + self.log_lines("error") if "editMessageText" in ln]
        self.assertEqual(complaints, [], "expected \"message is not modified\" taken as success, not a failure")


class LongAnswerTest(DeliveryTestCase):

    @staticmethod
    def code_block(n: int, lines: int) -> list:
        return ["```python"] + [f"def step_{n}_{i}(x):  return x + {i} * {n}" for i in range(lines)] + ["```"]

    def test_long_answer_with_code_blocks_arrives_complete_in_order_and_in_limits(self):
        lines: list = []
        for n, size in enumerate((12, 150, 20, 12)):           # block 1 (~5,000 characters) must be cut
            lines += ["", prose(90, f"para{n}w"), ""] + self.code_block(n, size)
        lines += ["", "The end."]
        text = "\n".join(lines).strip()
        code = [ln for ln in lines if ln.startswith("def ")]
        self.assertGreater(len(text), 9000)

        self.start_bot()
        self.llm.enqueue(answer(text, chunks=8, chunk_delay=0.15))      # parts fill up while it streams
        msg = self.tg.send_private(ALICE, "Show me a lot of code")
        plain = squash("".join(ln for ln in lines if not ln.startswith("```")))
        self.tg.wait_for(lambda: squash("".join(self.tg.texts_in(ALICE.id))) == plain, 30,
                         lambda: "the whole answer (without the fences) in the chat; it has "
                                 f"{[utf16_len(t) for t in self.tg.texts_in(ALICE.id)]} UTF-16 units in its messages")
        self.wait_handled(msg)
        parts = self.tg.messages_in(ALICE.id)
        self.assertGreaterEqual(len(parts), 3, f"expected ~10,000 characters in at least 3 messages, "
                                               f"got {len(parts)}")
        self.assertEqual(squash("".join(m.text for m in parts)), plain,
                         "expected the parts to hold the whole answer once, in order")
        self.assertEqual([m.reply_to for m in parts], [msg["message_id"]] + [None] * (len(parts) - 1),
                         "expected only the first part to be a reply")
        pre_text = ""
        for i, m in enumerate(parts):
            n = utf16_len(m.text)
            self.assertLessEqual(n, 4096, f"expected part {i} within 4096 UTF-16 units, got {n}")
            self.assertLessEqual(len(m.entities), 100, f"expected at most 100 entities in part {i}")
            for e in m.entities:
                self.assertLessEqual(e["offset"] + e["length"], n, f"expected entity {e} inside part {i} ({n} units)")
                if e["type"] == "pre":
                    self.assertEqual(e.get("language"), "python", f"expected every code block tagged python: {e}")
                    pre_text += utf16_slice(m.text, e["offset"], e["length"])
        self.assertEqual(squash(pre_text), squash("".join(code)),
                         "expected every code line inside a pre entity, and nothing else")

        # The ~5,000-character block cannot fit one message: it ends one part and starts the next.
        def ends_in_pre(m):
            return any(e["type"] == "pre" and e["offset"] + e["length"] == utf16_len(m.text) for e in m.entities)

        def starts_in_pre(m):
            return any(e["type"] == "pre" and e["offset"] == 0 for e in m.entities)

        cuts = [i for i in range(len(parts) - 1) if ends_in_pre(parts[i]) and starts_in_pre(parts[i + 1])]
        self.assertTrue(cuts, "expected a code block cut in two: a part ending in a pre entity and the next "
                              "starting with one; the parts' pre entities are "
                              f"{[[(e['offset'], e['length']) for e in m.entities if e['type'] == 'pre'] for m in parts]}")
        rejected = [c.response for c in self.tg.calls if c.chat_id() == ALICE.id and c.status == 400]
        self.assertEqual(rejected, [], "expected Telegram to accept every call")


class RateLimitTest(DeliveryTestCase):
    """A 429's retry_after is obeyed. With fast pacing on purpose: under
    Telegram's 1 s per private chat, a retry 1 s later would come even if
    retry_after were ignored."""

    def test_429_on_a_draft_pauses_the_chat_and_the_final_text_arrives_once(self):
        text = prose(40)
        self.start_bot()
        self.tg.fail("sendMessageDraft", times=1, error_code=429, retry_after=1, chat_id=ALICE.id)
        self.llm.enqueue(answer(text, chunks=8, chunk_delay=0.3))
        msg = self.tg.send_private(ALICE, "Slowly, please")
        self.wait_reply(msg, timeout=25)
        self.wait_handled(msg)
        calls = self.showing_calls(ALICE.id)
        limited = [i for i, c in enumerate(calls) if c.status == 429]
        self.assertEqual(len(limited), 1, f"expected the fake's one 429, got {[c.status for c in calls]}")
        i = limited[0]
        self.assertLess(i + 1, len(calls), "expected calls after the 429")
        pause = calls[i + 1].time - calls[i].time
        self.assertGreaterEqual(pause, 0.95, f"expected the chat paused for retry_after=1 s after the 429, "
                                             f"the next call came after {pause:.3f} s")
        finals = [c for c in self.tg.calls_of("sendMessage", chat_id=ALICE.id, ok=True)]
        self.assertEqual([c.params.get("text") for c in finals], [text], "expected the final text exactly once")
        self.assertEqual(self.tg.texts_in(ALICE.id), [text])

    def test_429_on_a_group_edit_delays_but_the_final_text_arrives_once(self):
        text = prose(60)
        self.start_bot()
        self.tg.fail("editMessageText", times=1, error_code=429, retry_after=1, chat_id=OPEN_GROUP.id)
        self.llm.enqueue(answer(text, chunks=12, chunk_delay=0.3))
        msg = self.tg.send_group(OPEN_GROUP, ALICE, MENTION + "slowly, please")
        self.wait_chat_texts(OPEN_GROUP.id, [text], 40)
        self.wait_handled(msg)
        calls = self.showing_calls(OPEN_GROUP.id)
        self.assertEqual([c.status for c in calls].count(429), 1, f"expected the fake's one 429, got "
                                                                  f"{[(c.method, c.status) for c in calls]}")
        self.assertEqual(self.tg.texts_in(OPEN_GROUP.id), [text], "expected the whole answer in one message")
        # A frame may have shown the whole text already, with the Stop button: the final edit takes it away.
        whole = [c for c in calls if c.ok and c.params.get("text") == text and "reply_markup" not in c.params]
        self.assertEqual(len(whole), 1, f"expected the final text sent exactly once, got {len(whole)} calls")

    def test_429_on_the_final_message_is_waited_out_and_the_text_arrives_once(self):
        text = "The final answer, delayed by a flood limit."
        self.start_bot()
        self.tg.fail("sendMessage", times=1, error_code=429, retry_after=1, chat_id=ALICE.id)
        self.llm.enqueue(answer(text))
        msg = self.tg.send_private(ALICE, "Quick question")
        reply = self.wait_reply(msg, timeout=15)
        self.assertEqual(reply.text, text)
        self.wait_handled(msg)
        sends = self.tg.calls_of("sendMessage", chat_id=ALICE.id)
        self.assertEqual([(c.status, c.params.get("text")) for c in sends], [(429, text), (200, text)],
                         "expected the refused message sent again, once")
        waited = sends[1].time - sends[0].time
        self.assertGreaterEqual(waited, 0.95, f"expected the retry after retry_after=1 s, it came after {waited:.3f} s")
        self.assertEqual(self.tg.texts_in(ALICE.id), [text], "expected the answer exactly once")


class DraftFallbackTest(DeliveryTestCase):

    def test_refused_draft_falls_back_to_a_message_edited_as_it_grows(self):
        text = prose(40)
        self.start_bot()
        self.tg.fail("sendMessageDraft", times=100, error_code=400,
                     description="Bad Request: method is not available for this chat", chat_id=ALICE.id)
        self.llm.enqueue(answer(text, chunks=10, chunk_delay=0.25))     # ~2.5 s of streaming
        msg = self.tg.send_private(ALICE, "Slowly, please")
        self.wait_chat_texts(ALICE.id, [text], 30)
        self.wait_handled(msg)
        drafts = self.tg.calls_of("sendMessageDraft", chat_id=ALICE.id)
        self.assertEqual([c.status for c in drafts], [400], "expected one refused draft, then no more drafts")
        sends = self.tg.calls_of("sendMessage", chat_id=ALICE.id)
        self.assertEqual(len(sends), 1, f"expected one message, edited as it grows; got {len(sends)} sendMessage(s)")
        self.assertGreater(sends[0].time, drafts[0].time)
        self.assertLess(len(sends[0].params["text"]), len(text), "expected the message to start with part of it")
        edits = self.tg.calls_of("editMessageText", chat_id=ALICE.id, ok=True)
        self.assertTrue(edits, "expected edits after the refused draft")
        self.assertGrowingPrefixes([sends[0].params["text"]] + [c.params.get("text", "") for c in edits], text,
                                   "shown text")
        self.assertEqual(self.tg.messages_in(ALICE.id)[0].reply_to, msg["message_id"])

    def test_a_draft_that_meets_a_server_error_is_given_up_for_edits_at_once(self):
        # A 500 was retried 4 times (~7 s) while the answer waited behind it.
        text = prose(40)
        self.start_bot()
        self.tg.fail("sendMessageDraft", times=100, error_code=500, chat_id=ALICE.id)
        self.llm.enqueue(answer(text, chunks=10, chunk_delay=0.25))     # ~2.5 s of streaming
        msg = self.tg.send_private(ALICE, "Even when drafts fail")
        self.wait_chat_texts(ALICE.id, [text], 30)
        self.wait_handled(msg)
        drafts = self.tg.calls_of("sendMessageDraft", chat_id=ALICE.id)
        self.assertEqual([c.status for c in drafts], [500], "expected one failed draft, not tried again")
        self.assertTrue(self.tg.calls_of("editMessageText", chat_id=ALICE.id, ok=True),
                        "expected the answer to grow by edits after the failed draft")

    def test_after_drafts_are_unknown_later_answers_are_edited_without_trying_drafts(self):
        first, second = prose(30, "one"), prose(30, "two")
        self.start_bot()
        self.tg.fail("sendMessageDraft", times=100, error_code=404, description="Not Found")
        self.llm.enqueue(answer(first, chunks=8, chunk_delay=0.3), answer(second, chunks=8, chunk_delay=0.3))
        self.ask(ALICE, "First question", timeout=25)
        self.wait_chat_texts(ALICE.id, [first], 10)
        drafts_before = len(self.tg.calls_of("sendMessageDraft"))
        self.ask(ALICE, "Second question", timeout=25)
        self.wait_chat_texts(ALICE.id, [first, second], 10)
        self.assertEqual(len(self.tg.calls_of("sendMessageDraft")), drafts_before,
                         "expected no more drafts once the server said it has no such method")
        self.assertTrue(self.tg.calls_of("editMessageText", chat_id=ALICE.id, ok=True),
                        "expected the answers to grow by edits")


class TelegramPacingTest(DeliveryTestCase):
    """Telegram's limits, with the binary's default pacing: at most one message
    a second to a private chat, one every 3 s to a group. Drafts are no
    messages: they are as far apart among themselves, and never hold a message
    back."""

    pacing = None   # TELEGRAM_PACING unset

    def test_private_drafts_are_at_least_a_second_apart(self):
        text = prose(60)
        self.start_bot()
        self.llm.enqueue(answer(text, chunks=30, chunk_delay=0.15))     # a piece every 0.15 s for 4.5 s
        msg = self.tg.send_private(ALICE, "Stream in many small pieces")
        self.wait_reply(msg, timeout=25)
        self.wait_handled(msg)
        drafts = self.showing_calls(ALICE.id, methods=("sendMessageDraft",))
        self.assertGreaterEqual(len(drafts), 4, f"expected several drafts during 4.5 s, got {len(drafts)}")
        self.assertSpaced(ALICE.id, 1.0, "the private chat")

    def test_private_messages_are_at_least_a_second_apart(self):
        # Without drafts the answer grows by edits: each one a message under the limit.
        text = prose(60)
        self.start_bot()
        self.tg.fail("sendMessageDraft", times=100, error_code=404, description="Not Found")
        self.llm.enqueue(answer(text, chunks=30, chunk_delay=0.15))     # a piece every 0.15 s for 4.5 s
        msg = self.tg.send_private(ALICE, "Stream in many small pieces")
        self.wait_chat_texts(ALICE.id, [text], 25)
        self.wait_handled(msg)
        messages = self.showing_calls(ALICE.id, methods=MESSAGES)
        self.assertGreaterEqual(len(messages), 4, f"expected a message and several edits during 4.5 s, got "
                                                  f"{[c.method for c in messages]}")
        self.assertSpaced(ALICE.id, 1.0, "the private chat")

    def test_a_quick_private_answer_follows_its_only_draft_at_once(self):
        # Streams for ~50 ms: one draft; the final message must not wait for the chat's next second.
        text = prose(6)
        self.start_bot()
        self.llm.enqueue(answer(text, chunks=3, chunk_delay=0.025))
        msg = self.tg.send_private(ALICE, "Quick one")
        reply = self.wait_reply(msg, timeout=15)
        self.assertEqual(reply.text, text)
        self.wait_handled(msg)
        drafts = self.showing_calls(ALICE.id, methods=("sendMessageDraft",))
        final = self.showing_calls(ALICE.id, methods=("sendMessage",))
        self.assertEqual(len(drafts), 1, f"expected one draft for a 50 ms stream, got {len(drafts)}")
        self.assertEqual(len(final), 1, f"expected one final message, got {len(final)}")
        gap = final[0].time - drafts[0].time
        self.assertLess(gap, 0.3, f"expected the final message well under a second after the answer's only "
                                  f"draft (< 0.3 s); it came {gap:.3f} s after")

    def test_group_frames_are_at_least_three_seconds_apart(self):
        text = prose(80)
        self.start_bot()
        self.llm.enqueue(answer(text, chunks=40, chunk_delay=0.15))     # ~6 s of streaming
        msg = self.tg.send_group(OPEN_GROUP, ALICE, MENTION + "tell us slowly")
        self.wait_chat_texts(OPEN_GROUP.id, [text], 40)
        self.wait_handled(msg)
        calls = self.showing_calls(OPEN_GROUP.id)
        self.assertGreaterEqual(len(calls), 3, f"expected several frames during 6 s, got {len(calls)} call(s)")
        too_close = [g for g in gaps(calls) if g < 2.9]
        self.assertEqual(too_close, [], f"expected at most one call every 3 s to a group (gaps >= 2.9 s); "
                                        f"the gaps were {gaps(calls)}")


class CustomPacingTest(DeliveryTestCase):
    """TELEGRAM_PACING=PRIVATE_SECONDS,GROUP_SECONDS,CALLS_PER_SECOND."""

    pacing = "2,2,0"

    def test_custom_pacing_spaces_two_answers_to_one_private_chat(self):
        self.start_bot()
        first = self.tg.send_private(ALICE, "First question")
        second = self.tg.send_private(ALICE, "Second question")
        self.wait_handled(first, second, timeout=20)
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: First question", "Echo: Second question"])
        self.assertGreaterEqual(len(self.showing_calls(ALICE.id, methods=MESSAGES)), 2)
        self.assertSpaced(ALICE.id, 2.0, "the private chat with TELEGRAM_PACING=2,2,0")


if __name__ == "__main__":
    main()
