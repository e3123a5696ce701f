"""/model and /system: a chat picks its model (a keyboard of OPENAI_MODELS or
the provider's GET /models, a button press or /model NAME) and its system
prompt; both survive restarts, apply only to that chat, and in groups only
the people the allowlist names and the admins may change them. A chosen
model the provider no longer has sends the chat back to the default."""

import json
import threading

from fake_openai import Reply
from fake_telegram import Chat
from harness import ALICE, BOB, BotTestCase, GROUP_ID, IVAN, User, main
from test_store_s3 import BUCKET, PREFIX, S3TestCase

MODELS = "gpt-4o-mini, gpt-4o, o3-mini"
CAROL = User(id=888008, first_name="Carol", username="carol", language_code="ru")  # the group lets her talk
GROUP = Chat.supergroup(GROUP_ID, "Allowed group")


class SteerTestCase(BotTestCase):

    def model_of(self, needle: str) -> str:
        """The model the request whose last message holds needle asked."""
        req = self.llm.wait_for(lambda: self.llm.requests_with(needle), 10, f"a model request with {needle!r}")
        return req[0].body["model"]

    def system_of(self, needle: str):
        req = self.llm.wait_for(lambda: self.llm.requests_with(needle), 10, f"a model request with {needle!r}")[0]
        return req.messages[0]["content"] if req.roles()[0] == "system" else None

    def press(self, user, message, data, chat=None):
        update = self.tg.press(user, message, data, chat)
        self.tg.push(update)
        self.wait_update_done(update["update_id"])
        return update


class ModelTest(SteerTestCase):

    def test_the_keyboard_switches_the_chat_and_survives_a_restart(self):
        bot = self.start_bot(OPENAI_MODELS=MODELS)
        menu = self.ask(ALICE, "/model")
        self.assertIn("gpt-4o-mini", menu.text)
        self.assertEqual(menu.buttons(), [("gpt-4o", "m:gpt-4o"), ("✓ gpt-4o-mini", "m:gpt-4o-mini"),
                                          ("o3-mini", "m:o3-mini")])
        self.press(ALICE, menu, "m:o3-mini")
        self.assertEqual(self.tg.callback_answers(), ["Model: o3-mini"])
        edited = self.tg.wait_for(lambda: menu.edits and menu, 5, "the keyboard message edited")
        self.assertIn("o3-mini", edited.text)
        self.assertIn(("✓ o3-mini", "m:o3-mini"), edited.buttons())
        self.ask(ALICE, "Which model answers?")
        self.assertEqual(self.model_of("Which model answers?"), "o3-mini")
        self.ask(BOB, "And for me?")  # another chat keeps the default
        self.assertEqual(self.model_of("And for me?"), "gpt-4o-mini")

        self.restart_bot(bot, OPENAI_MODELS=MODELS)
        self.ask(ALICE, "Still the same model?")
        self.assertEqual(self.model_of("Still the same model?"), "o3-mini")

    def test_model_name_switches_directly_and_unknown_names_are_refused(self):
        self.start_bot(OPENAI_MODELS=MODELS)
        reply = self.ask(ALICE, "/model gpt-4o")
        self.assertIn("gpt-4o", reply.text)
        reply = self.ask(ALICE, "/model gpt-5-ultra")
        self.assertIn("There is no model gpt-5-ultra", reply.text)
        self.ask(ALICE, "Hello there")
        self.assertEqual(self.model_of("Hello there"), "gpt-4o")

    def test_without_openai_models_the_providers_chat_models_are_offered(self):
        self.llm.models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "whisper-1", "tts-1", "dall-e-3"]
        self.start_bot()
        menu = self.ask(ALICE, "/model")
        self.assertEqual([d for _, d in menu.buttons()], ["m:gpt-4o", "m:gpt-4o-mini"])

    def test_a_provider_without_a_models_endpoint_offers_the_default_alone(self):
        self.llm.models = None  # GET /models answers 404
        self.start_bot(OPENAI_MODEL="llama3.1")
        menu = self.ask(ALICE, "/model")
        self.assertEqual(menu.buttons(), [("✓ llama3.1", "m:llama3.1")])

    def test_a_chosen_model_the_provider_drops_sends_the_chat_back_to_the_default(self):
        self.start_bot(OPENAI_MODELS=MODELS)
        self.ask(ALICE, "/model o3-mini")
        self.llm.on(lambda r: r.body.get("model") == "o3-mini",
                    Reply(status=404, error={"message": "The model `o3-mini` does not exist",
                                             "type": "invalid_request_error", "code": "model_not_found"}))
        reply = self.ask(ALICE, "Are you there?")
        self.assertIn("o3-mini is not available", reply.text)
        self.assertIn("gpt-4o-mini", reply.text)
        self.ask(ALICE, "Trying again")
        self.assertEqual(self.model_of("Trying again"), "gpt-4o-mini")

    def test_stale_and_foreign_button_data_get_a_polite_answer(self):
        self.start_bot(OPENAI_MODELS=MODELS)
        menu = self.ask(ALICE, "/model")
        self.press(ALICE, menu, "m:gpt-3-retired")
        self.press(ALICE, menu, "zz:unknown")
        self.assertEqual(self.tg.callback_answers(), ["This button no longer works. /model shows the choice again."] * 2)
        self.ask(ALICE, "Nothing changed?")
        self.assertEqual(self.model_of("Nothing changed?"), "gpt-4o-mini")


class GroupSteerTest(SteerTestCase):
    """GROUP is allowed by its id: everyone in it may talk; only named people and admins may steer."""

    def test_a_member_allowed_through_the_group_may_not_switch(self):
        self.start_bot(OPENAI_MODELS=MODELS)
        msg = self.tg.send_group(GROUP, CAROL, "/model gpt-4o")
        reply = self.wait_reply(msg)
        self.assertIn("В этой группе это могут менять только", reply.text)
        msg = self.tg.send_group(GROUP, CAROL, "/system Говори как пират")
        self.assertIn("только", self.wait_reply(msg).text)
        msg = self.tg.send_group(GROUP, CAROL, "@tgllm_test_bot hello")
        self.wait_reply(msg)
        self.assertEqual(self.model_of("hello"), "gpt-4o-mini")
        self.assertIsNone(self.system_of("hello"))

    def test_a_member_may_not_press_the_buttons_but_an_admin_may(self):
        self.start_bot(OPENAI_MODELS=MODELS, TG_BOT_ADMINS="carol")
        menu = self.wait_reply(self.tg.send_group(GROUP, IVAN, "/model"))  # Ivan is named: he may steer
        self.press(CAROL, menu, "m:gpt-4o", chat=GROUP)  # an admin
        self.assertEqual(self.tg.callback_answers(), ["Модель: gpt-4o"])
        stranger = User(id=999009, first_name="Dan", username="dan")
        self.press(stranger, menu, "m:o3-mini", chat=GROUP)
        self.assertEqual(self.tg.callback_answers()[-1],
                         "In this group only the people the bot's owner named can change that.")
        msg = self.tg.send_group(GROUP, IVAN, "@tgllm_test_bot which model now")
        self.wait_reply(msg)
        self.assertEqual(self.model_of("which model now"), "gpt-4o")


class MenuTest(SteerTestCase):

    def test_poll_sets_the_menu_in_english_and_russian_once(self):
        bot = self.start_bot()
        self.tg.wait_for(lambda: len(self.tg.calls_of("setMyCommands", ok=True)) == 2, 10, "two setMyCommands")
        en, ru = self.tg.menus[""], self.tg.menus["ru"]
        self.assertEqual([c["command"] for c in en], ["new", "model", "system", "retry", "usage", "image", "help"])
        self.assertEqual([c["command"] for c in ru], ["new", "model", "system", "retry", "usage", "image", "help"])
        self.assertNotEqual(en, ru)
        self.assertIn("Забыть", ru[0]["description"])
        sets = [c.params.get("language_code") for c in self.tg.calls_of("setMyCommands")]
        self.assertEqual(sorted(sets, key=str), [None, "ru"])  # the default has no language_code at all
        gets = len(self.tg.calls_of("getMyCommands"))
        self.restart_bot(bot)
        self.tg.wait_for(lambda: len(self.tg.calls_of("getMyCommands")) == gets + 2, 10, "two getMyCommands")
        self.ask(ALICE, "A barrier: the menu calls went out before this answer")
        self.assertEqual(len(self.tg.calls_of("setMyCommands")), 2, "expected no setMyCommands when unchanged")

    def test_an_edited_menu_is_set_again_and_a_failing_one_does_not_stop_the_bot(self):
        self.tg.menus[""] = [{"command": "start", "description": "Someone else's menu"}]
        self.tg.fail("setMyCommands", times=2, error_code=400, description="Bad Request: nope")
        self.start_bot()
        self.tg.wait_for(lambda: len(self.tg.calls_of("setMyCommands")) == 2, 10, "two setMyCommands")
        self.ask(ALICE, "Still answering?")

    def test_set_webhook_sets_the_menu_too(self):
        from harness import run_bin
        r = run_bin(["set-webhook", "https://bot.example/hook"], self.bot_env())
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual([c["command"] for c in self.tg.menus["ru"]], ["new", "model", "system", "retry", "usage", "image", "help"])
        self.assertIn("", self.tg.menus)


class SystemTest(SteerTestCase):

    def test_set_show_and_reset(self):
        self.start_bot(SYSTEM_PROMPT="You are a helpful assistant.")
        self.assertIn("You are a helpful assistant.", self.ask(ALICE, "/system").text)
        self.assertIn("Saved", self.ask(ALICE, "/system Answer like a pirate.\x07\x1b").text)
        self.ask(ALICE, "Ahoy?")
        self.assertEqual(self.system_of("Ahoy?"), "Answer like a pirate.")
        self.ask(BOB, "Plain question")  # another chat keeps the default
        self.assertEqual(self.system_of("Plain question"), "You are a helpful assistant.")
        self.assertIn("Answer like a pirate.", self.ask(ALICE, "/system").text)
        self.assertIn("default", self.ask(ALICE, "/system reset").text)
        self.ask(ALICE, "Back to normal?")
        self.assertEqual(self.system_of("Back to normal?"), "You are a helpful assistant.")

    def test_no_system_prompt_at_all_is_said_so(self):
        self.start_bot()
        self.assertIn("has no system prompt", self.ask(ALICE, "/system").text)
        self.ask(ALICE, "No system here")
        self.assertIsNone(self.system_of("No system here"))

    def test_a_prompt_too_long_is_refused_and_nothing_changes(self):
        self.start_bot()
        reply = self.ask(ALICE, "/system " + "x" * 3501)
        self.assertIn("at most 3500 characters", reply.text)
        reply = self.ask(ALICE, "/system " + "я" * 3500)  # characters, not bytes
        self.assertIn("Saved", reply.text)
        self.ask(ALICE, "Long persona")
        self.assertEqual(self.system_of("Long persona"), "я" * 3500)
        self.assertIn("я" * 100, self.ask(ALICE, "/system").text)

    def test_works_through_handle_too(self):
        update, msg = self.handle_message(ALICE, "/system Be terse.")
        self.assertEqual(self.handle_update(update, {}), 200)
        self.assertIn("Saved", self.tg.replies_to(msg)[0].text)
        update, msg = self.handle_message(ALICE, "Terse question")
        self.assertEqual(self.handle_update(update, {}), 200)
        self.assertEqual(self.system_of("Terse question"), "Be terse.")

    def handle_message(self, user, text):
        msg = self.tg.message(Chat.private(user), user, text)
        return self.tg.update("message", msg), msg


class S3SteerTest(S3TestCase):
    """/model and /system through `handle` with the S3 store: the chat's choices are one small object,
    changed on the version read, so two choices made at once in two invocations are both kept."""

    # The chat's settings reads wait for a partner: the two invocations read the same version and collide.
    s3_options = {"pair_gets": rf"^prefix/tgllm/settings/{ALICE.id}/chat$", "pair_wait_ms": 3000}

    def test_two_choices_made_at_once_are_both_kept(self):
        self.serverless_identity()
        msgs = [self.tg.message(Chat.private(ALICE), ALICE, text) for text in ("/model gpt-4o", "/system Be terse.")]
        results = {}
        threads = [threading.Thread(target=lambda m=m: results.update(
            {m["text"]: self.handle(self.tg.update("message", m), OPENAI_MODELS=MODELS)})) for m in msgs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(set(results.values()), {200})
        key = f"{PREFIX}tgllm/settings/{ALICE.id}/chat"
        self.assertEqual(json.loads(self.s3.read_object(BUCKET, key)), {"model": "gpt-4o", "system": "Be terse."})
        statuses = [p["status"] for p in self.requests_to(key, "PUT")]
        self.assertIn(412, statuses, f"expected the two writers to collide; without it this proves nothing: "
                                     f"{statuses}")
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Who answers?")
        self.assertEqual(self.handle(self.tg.update("message", msg), OPENAI_MODELS=MODELS), 200)
        req = self.llm.requests_with("Who answers?")[0]
        self.assertEqual((req.body["model"], req.messages[0]), ("gpt-4o", {"role": "system", "content": "Be terse."}))


if __name__ == "__main__":
    main()
