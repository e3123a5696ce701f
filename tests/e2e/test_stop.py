"""Stop: a streamed answer can be stopped while the model writes it. In
private chats the draft carries Telegram's own stop control (can_stop, Bot
API 10.3) and the stopped_message_generation update stops it; in groups the
message shown by edits carries an inline Stop button for the person who
asked (or an admin). The model call really ends (the transfer is closed),
what was said so far is the final message, marked as stopped, and it is
the stored answer."""

import time

from fake_openai import streamed
from fake_telegram import Chat
from harness import ALICE, BOB, GROUP_ID, IVAN, BotTestCase, main

GROUP = Chat.supergroup(GROUP_ID, "Allowed group")
PIECES = [f"word{i} " for i in range(40)]  # 40 pieces 0.2 s apart: 8 s unless stopped


class StopTest(BotTestCase):

    def slow_answer(self, needle: str):
        self.llm.on_message_containing(needle, streamed(PIECES, chunk_delay=0.2))

    def model_request(self, needle: str):
        return self.llm.wait_for(lambda: self.llm.requests_with(needle), 10, f"the request with {needle!r}")[0]

    def wait_callback_answer(self, text):
        """The button's press is answered after the update is marked done: its answer is waited for."""
        self.tg.wait_for(lambda: self.tg.callback_answers()[-1:] == [text], 5,
                         lambda: f"the callback answer {text!r}; got {self.tg.callback_answers()!r}")

    def assertTransferEnded(self, req, stopped_at: float):
        self.llm.wait_for(lambda: req.finished, 4, "the model transfer to be closed after the stop")
        self.assertLess(req.finished - stopped_at, 3, "expected the stream cut off, not read to its end")

    def test_a_draft_stopped_in_a_private_chat(self):
        self.start_bot()
        self.slow_answer("Tell me a long story")
        msg = self.tg.send_private(ALICE, "Tell me a long story")
        draft = self.tg.wait_for(lambda: [d for d in self.tg.drafts if "word2" in (d.get("text") or "")], 10,
                                 "a draft with some text")[0]
        self.assertIs(draft.get("can_stop"), True, f"expected can_stop on the draft: {draft}")
        stopped_at = time.monotonic()
        self.tg.push(self.tg.update("stopped_message_generation",
                                    {"chat": Chat.private(ALICE).to_json(), "draft_id": draft["draft_id"]}))
        reply = self.wait_reply(msg)
        self.assertTrue(reply.text.startswith("word0 word1 word2"), reply.text)
        self.assertTrue(reply.text.endswith("(stopped)"), reply.text)
        self.assertNotIn("word39", reply.text)
        self.assertTransferEnded(self.model_request("Tell me a long story"), stopped_at)
        # The stored answer is what the model said, without the mark.
        self.ask(ALICE, "And then?")
        history = self.model_request("And then?").messages
        said = history[-2]["content"]
        self.assertTrue(said.startswith("word0 word1 word2") and "(stopped)" not in said, said)

    def test_a_stop_for_a_finished_answer_changes_nothing(self):
        self.start_bot()
        msg = self.tg.send_private(ALICE, "Quick one")
        reply = self.wait_reply(msg)
        stop = self.tg.update("stopped_message_generation",
                              {"chat": Chat.private(ALICE).to_json(), "draft_id": msg["message_id"]})
        self.tg.push(stop)
        self.wait_update_done(stop["update_id"])
        self.assertEqual(self.tg.texts_in(ALICE.id), [reply.text])
        self.assertIn("nothing streams", self.log())

    def test_the_stop_button_in_a_group_is_for_the_asker(self):
        self.start_bot()
        self.slow_answer("explain everything")
        msg = self.tg.send_group(GROUP, IVAN, "@tgllm_test_bot explain everything")
        streaming = self.tg.wait_for(lambda: [m for m in self.tg.messages_in(GROUP_ID) if m.buttons()], 15,
                                     "the streaming message with its Stop button")[0]
        label, data = streaming.buttons()[0]
        self.assertEqual((label, data), ("Стоп", f"s:{msg['message_id']}"))  # Ivan reads Russian
        other = self.tg.press(BOB, streaming, data, chat=GROUP)
        self.tg.push(other)
        self.wait_callback_answer("Only the person who asked can stop this answer.")
        stopped_at = time.monotonic()
        press = self.tg.press(IVAN, streaming, data, chat=GROUP)
        self.tg.push(press)
        self.wait_update_done(press["update_id"])
        final = self.tg.wait_for(lambda: (lambda m: m if m.text.endswith("(остановлено)") else None)(
            self.tg.messages_in(GROUP_ID)[0]), 10, "the answer marked as stopped")
        self.assertEqual(final.buttons(), [], "expected the Stop button gone from the final message")
        self.assertNotIn("word39", final.text)
        self.assertTransferEnded(self.model_request("explain everything"), stopped_at)
        self.wait_handled(msg)
        late = self.tg.press(IVAN, streaming, data, chat=GROUP)
        self.tg.push(late)
        self.wait_callback_answer("Этот ответ уже закончен.")

    def test_an_admin_may_stop_anyones_answer(self):
        self.start_bot(TG_BOT_ADMINS="bob_builder")
        self.slow_answer("admin can stop")
        msg = self.tg.send_group(GROUP, IVAN, "@tgllm_test_bot admin can stop")
        streaming = self.tg.wait_for(lambda: [m for m in self.tg.messages_in(GROUP_ID) if m.buttons()], 15,
                                     "the streaming message with its Stop button")[0]
        press = self.tg.press(BOB, streaming, streaming.buttons()[0][1], chat=GROUP)
        self.tg.push(press)
        self.wait_update_done(press["update_id"])
        self.tg.wait_for(lambda: self.tg.messages_in(GROUP_ID)[0].text.endswith("(остановлено)"), 10,
                         "the answer marked as stopped")
        self.wait_handled(msg)


class ServerlessStopTest(BotTestCase):

    def test_handle_offers_no_stop_it_could_not_honour(self):
        self.llm.on_message_containing("serverless story", streamed(PIECES[:10], chunk_delay=0.2))
        msg = self.tg.message(Chat.private(ALICE), ALICE, "serverless story")
        self.assertEqual(self.handle_update(self.tg.update("message", msg), {}), 200)
        self.assertTrue(self.tg.drafts, "expected the answer streamed as drafts")
        self.assertFalse([d for d in self.tg.drafts if "can_stop" in d], "expected no stop control on drafts")


if __name__ == "__main__":
    main()
