"""Who gets answers: the TG_BOT_CHATS allowlist in private chats."""

from fake_telegram import User
from harness import ALICE, BOB, ERIN, MALLORY, NONAME, BotTestCase, main


class AllowlistTest(BotTestCase):

    def test_username_with_at_sign_in_another_case_is_allowed(self):
        # DEFAULT_ALLOWLIST has "@ALICE"; Alice's username is "alice".
        self.start_bot()
        self.assertEqual(self.ask(ALICE, "Let me in").text, "Echo: Let me in")

    def test_username_without_at_sign_is_allowed(self):
        # DEFAULT_ALLOWLIST has "bob_builder"; Bob's username is "Bob_Builder".
        self.start_bot()
        self.assertEqual(self.ask(BOB, "Hello from Bob").text, "Echo: Hello from Bob")

    def test_user_without_username_is_matched_by_id(self):
        self.start_bot()
        self.assertEqual(self.ask(NONAME, "I have no username").text, "Echo: I have no username")

    def test_numeric_user_id_allows_a_user_who_has_a_username(self):
        self.start_bot(TG_BOT_CHATS=f"{MALLORY.id}")
        self.assertEqual(self.ask(MALLORY, "Known by my id").text, "Echo: Known by my id")

    def test_star_allows_everyone(self):
        self.start_bot(TG_BOT_CHATS="*")
        self.assertEqual(self.ask(MALLORY, "Anyone home").text, "Echo: Anyone home")
        stranger = User(id=5550555, first_name="Stranger")
        self.assertEqual(self.ask(stranger, "Me too").text, "Echo: Me too")

    def test_stranger_gets_one_refusal_with_their_id_and_nothing_else(self):
        self.start_bot()
        self.tg.send_private(MALLORY, "mallory-secret-plan-one")
        refusal = self.wait_messages(MALLORY.id, 1)[0]
        self.assertIn(str(MALLORY.id), refusal.text, "expected the refusal to tell the user their numeric id")

        second = self.tg.send_private(MALLORY, "mallory-secret-plan-two")
        self.ask(ALICE, "alice-note-for-the-store")
        self.wait_handled(second)
        self.assertEqual(len(self.tg.messages_in(MALLORY.id)), 1,
                         f"expected one refusal per hour; the stranger got {self.tg.texts_in(MALLORY.id)!r}")
        self.assertEqual(self.tg.calls_of("sendChatAction", chat_id=MALLORY.id), [],
                         "expected no typing for a stranger")
        self.assertNoModelRequest("mallory-secret-plan")

        self.assertEqual(self.bots[-1].stop(), 0)
        self.assertTrue(self.store_contains("alice-note-for-the-store"),
                        "control: expected an allowed user's message in the store")
        self.assertFalse(self.store_contains("mallory-secret-plan"),
                         "expected nothing of a stranger's messages stored")

    def test_each_stranger_gets_their_own_refusal(self):
        self.start_bot()
        self.tg.send_private(MALLORY, "hi")
        self.tg.send_private(ERIN, "hi")
        self.assertIn(str(MALLORY.id), self.wait_messages(MALLORY.id, 1)[0].text)
        self.assertIn(str(ERIN.id), self.wait_messages(ERIN.id, 1)[0].text)
        self.assertEqual(self.llm.requests, [])

    def test_refusal_limit_survives_a_restart_within_the_hour(self):
        # "At most once per hour per user" holds for the person, whatever the process does.
        bot = self.start_bot()
        self.tg.send_private(MALLORY, "first try")
        self.wait_messages(MALLORY.id, 1)
        self.restart_bot(bot)
        second = self.tg.send_private(MALLORY, "second try")
        self.wait_handled(second)
        self.assertEqual(len(self.tg.messages_in(MALLORY.id)), 1,
                         f"expected no second refusal within the hour; got {self.tg.texts_in(MALLORY.id)!r}")


if __name__ == "__main__":
    main()
