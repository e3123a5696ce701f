"""Updates the bot does not act on are logged and skipped, never a crash:
after each, the bot still answers a normal message."""

import json
import time

from fake_telegram import Chat
from harness import ALICE, BOB, IVAN, OPEN_GROUP, BotTestCase, main


class WeirdUpdateTest(BotTestCase):

    def assertSurvives(self, update: dict, needle: str = None, kind: str = None):
        """Pushes update, then a normal message from Alice, which must be answered."""
        bot = self.start_bot()
        self.tg.push(update)
        # Confirmed by the next getUpdates, alone in its batch: else Telegram would hand it over forever.
        self.tg.wait_for(lambda: max(o or 0 for o in self.tg.offsets()) > update["update_id"], 10,
                         "a getUpdates that confirms the skipped update")
        reply = self.ask(ALICE, "Normal message after it", timeout=15)
        self.assertEqual(reply.text, "Echo: Normal message after it")
        self.assertBotRunning(bot)
        if needle:
            self.assertNoModelRequest(needle)
        self.assertEqual(len(self.llm.requests), 1, "expected only the normal message to reach the model")
        if kind:
            self.assertIn(kind, self.log(), f"expected a log line naming the skipped {kind}")

    def test_edited_message_is_skipped(self):
        msg = self.tg.message(Chat.private(ALICE), ALICE, "edited text here", extra={"edit_date": int(time.time())})
        self.assertSurvives(self.tg.update("edited_message", msg), "edited text here", "edited_message")

    def test_channel_post_is_skipped(self):
        channel = Chat(id=-1009999999999, type="channel", title="News", username="news_channel")
        post = self.tg.message(channel, None, "channel news item",
                               extra={"sender_chat": channel.to_json()})
        self.assertSurvives(self.tg.update("channel_post", post), "channel news item", "channel_post")

    def test_callback_query_with_data_the_bot_never_made_survives(self):
        query = {"id": "4382bfdwdsb323b2d9", "from": ALICE.to_json(), "chat_instance": "-8123456789",
                 "data": "button-data",
                 "message": {"message_id": 1, "date": int(time.time()), "chat": Chat.private(ALICE).to_json(),
                             "from": self.tg.bot.to_json(), "text": "pick one"}}
        self.assertSurvives(self.tg.update("callback_query", query), "button-data", "a button with data")

    def test_callback_query_without_a_message_is_skipped(self):
        # An inline-mode message's button: no chat to speak of.
        query = {"id": "99", "from": ALICE.to_json(), "chat_instance": "1", "inline_message_id": "AAA",
                 "data": "m:gpt-4o"}
        self.assertSurvives(self.tg.update("callback_query", query), "gpt-4o", "callback_query")

    def test_my_chat_member_is_skipped(self):
        change = {"chat": OPEN_GROUP.to_json(), "from": ALICE.to_json(), "date": int(time.time()),
                  "old_chat_member": {"user": self.tg.bot.to_json(), "status": "left"},
                  "new_chat_member": {"user": self.tg.bot.to_json(), "status": "member"}}
        self.assertSurvives(self.tg.update("my_chat_member", change), kind="my_chat_member")

    def test_sticker_message_is_skipped(self):
        sticker = {"file_id": "CAACAgIAAxkBAAEB", "file_unique_id": "AgADBAAD", "type": "regular",
                   "width": 512, "height": 512, "is_animated": False, "is_video": False, "emoji": "😀"}
        msg = self.tg.message(Chat.private(ALICE), ALICE, None, extra={"sticker": sticker})
        self.assertSurvives(self.tg.update("message", msg))

    def test_photo_whose_file_telegram_no_longer_has_is_told_and_survives(self):
        # Photos are read (test_media.py); one getFile refuses is a short reply, not a crash.
        photo = [{"file_id": "AgACAgIAAxkBAAIB", "file_unique_id": "AQADx", "file_size": 1234,
                  "width": 90, "height": 60}]
        msg = self.tg.message(Chat.private(ALICE), ALICE, None,
                              extra={"photo": photo, "caption": "what is in this photo"})
        self.assertSurvives(self.tg.update("message", msg), "what is in this photo")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)],
                         ["I could not download this file from Telegram. Please send it again."])

    def test_service_message_new_chat_members_is_skipped(self):
        msg = self.tg.message(OPEN_GROUP, ALICE, None, extra={"new_chat_members": [self.tg.bot.to_json()]})
        self.assertSurvives(self.tg.update("message", msg))

    def test_message_without_sender_is_skipped(self):
        msg = self.tg.message(Chat.private(ALICE), None, "no sender here")
        self.assertSurvives(self.tg.update("message", msg), "no sender here")

    def test_update_of_an_unknown_kind_is_skipped(self):
        update = self.tg.update("future_kind_of_update", {"something": [1, 2, 3]})
        self.assertSurvives(update)

    def test_odd_text_in_one_update_does_not_stop_the_batch(self):
        # jansson refuses \u0000, lone surrogates and bytes that are not UTF-8:
        # one such string made the whole getUpdates answer unreadable, and the
        # poller asked for the same batch forever. They are read as U+FFFD.
        self.start_bot()
        odd = [(ALICE, "nul", b"\\u0000"), (BOB, "half", b"\\ud83d"), (IVAN, "byte", b"\xff")]
        msgs, items = [], []
        for user, name, raw in odd:
            msgs.append(self.tg.message(Chat.private(user), user, f"{name} @@ here"))
            item = json.dumps(self.tg.update("message", msgs[-1])).encode()
            items.append(item.replace(b"@@", raw))
        normal = self.tg.message(Chat.private(ALICE), ALICE, "a normal one after them")
        items.append(json.dumps(self.tg.update("message", normal)).encode())
        self.tg.inject_body(b'{"ok":true,"result":[' + b",".join(items) + b"]}")
        for msg, (_, name, _) in zip(msgs, odd):
            self.assertEqual(self.wait_reply(msg).text, f"Echo: {name} \ufffd here")
        self.assertEqual(self.wait_reply(normal).text, "Echo: a normal one after them")

    def test_update_id_at_the_int64_edge_moves_the_offset_to_it(self):
        # The offset past the largest id there is cannot be written: it stays
        # at that id (an overflow wrapped it to a negative offset, which asks
        # Telegram for the last updates again, and UBSan aborts on it).
        edge = 2**63 - 1
        bot = self.start_bot()
        msg = self.tg.message(Chat.private(ALICE), ALICE, "at the edge")
        self.tg.inject_updates([{"update_id": edge, "message": msg}])
        self.tg.wait_for(lambda: self.journal_state(edge) == "done", 10, "the edge update to be handled")
        self.tg.wait_for(lambda: edge in self.tg.offsets(), 10, "a getUpdates with the offset at the edge")
        self.assertTrue(all(o is None or o >= 0 for o in self.tg.offsets()),
                        f"expected no negative offset, got {self.tg.offsets()}")
        self.assertBotRunning(bot)

    def test_message_with_wrongly_typed_fields_is_skipped(self):
        update = self.tg.update("message", {"message_id": "seven", "chat": "not an object", "text": 42})
        self.assertSurvives(update)

    def test_update_without_update_id_is_skipped_and_its_batch_still_handled(self):
        bot = self.start_bot()
        idless = {"message": self.tg.message(Chat.private(ALICE), ALICE, "message without update id")}
        good_msg = self.tg.message(Chat.private(ALICE), ALICE, "message in the same batch")
        self.tg.inject_updates([idless, self.tg.update("message", good_msg)])
        self.assertEqual(self.wait_reply(good_msg).text, "Echo: message in the same batch")
        self.assertEqual(self.ask(ALICE, "and the next one").text, "Echo: and the next one")
        self.assertNoModelRequest("without update id")
        self.assertBotRunning(bot)

    def test_batch_spaced_and_ordered_otherwise_is_handled(self):
        """Telegram writes compact JSON, read without a tree; any other layout is read through one."""
        bot = self.start_bot()
        first = self.tg.message(Chat.private(ALICE), ALICE, "first of a spaced batch")
        second = self.tg.message(Chat.private(ALICE), ALICE, "second of a spaced batch")
        updates = [self.tg.update("message", first), self.tg.update("message", second)]
        self.tg.inject_body(json.dumps({"result": updates, "ok": True}, indent=2).encode())
        self.assertEqual(self.wait_reply(first).text, "Echo: first of a spaced batch")
        self.assertEqual(self.wait_reply(second).text, "Echo: second of a spaced batch")
        self.assertGreater(max(o or 0 for o in self.tg.offsets()), updates[1]["update_id"],
                           "expected the offset to move past the batch")
        self.assertBotRunning(bot)

    def test_huge_text_is_answered_or_refused_gracefully(self):
        bot = self.start_bot()
        huge = "All work and no play. " * 4546          # 100,012 characters
        self.tg.send_private(ALICE, huge)
        self.tg.wait_for(lambda: self.tg.messages_in(ALICE.id), 30, "any answer to a 100,000-character message")
        self.assertBotRunning(bot)
        self.assertEqual(self.ask(ALICE, "Small talk now", timeout=30).text, "Echo: Small talk now")
        self.assertBotRunning(bot)


if __name__ == "__main__":
    main()
