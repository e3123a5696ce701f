"""The model's answer arrives as Server-Sent Events in the shapes real
servers send; each is read into the same text."""

from fake_openai import Reply, answer
from harness import ALICE, BotTestCase, main


class StreamParsingTest(BotTestCase):

    def assertAnswerIs(self, reply: Reply, expected: str):
        self.start_bot()
        self.llm.enqueue(reply)
        got = self.ask(ALICE, "Say it", timeout=15)
        self.assertEqual(got.text, expected)
        self.assertEqual(self.tg.texts_in(ALICE.id), [expected], "expected exactly one message")

    def test_default_stream_with_usage_chunk_and_done(self):
        self.assertAnswerIs(answer("Plain streamed answer", chunks=4), "Plain streamed answer")

    def test_comment_lines_are_ignored(self):
        self.assertAnswerIs(answer("Answer among pings", comments=True), "Answer among pings")

    def test_crlf_line_ends(self):
        self.assertAnswerIs(answer("Answer with CRLF", crlf=True), "Answer with CRLF")

    def test_crlf_and_comments_together(self):
        self.assertAnswerIs(answer("Both at once", crlf=True, comments=True), "Both at once")

    def test_multi_line_data_events(self):
        self.assertAnswerIs(answer("Spread over lines", multiline_data=True), "Spread over lines")

    def test_stream_in_tiny_pieces_keeps_utf8_intact(self):
        text = "Привет, мир. Ёжик 👋 и 🦔 живут тут"
        self.assertAnswerIs(answer(text, tiny_writes=True, chunks=7), text)

    def test_slow_stream_is_assembled_in_order(self):
        self.assertAnswerIs(answer("one two three four five six", chunks=6, chunk_delay=0.3),
                            "one two three four five six")

    def test_non_streaming_json_answer_is_accepted(self):
        self.assertAnswerIs(Reply(text="Not streamed at all", force_json=True), "Not streamed at all")

    def test_streamed_answer_is_stored_whole(self):
        self.start_bot()
        self.llm.enqueue(answer("Stored in pieces", chunks=5, comments=True, crlf=True))
        self.ask(ALICE, "First")
        self.ask(ALICE, "Second")
        self.assertEqual(self.llm.requests[-1].contents(), ["First", "Stored in pieces", "Second"])


if __name__ == "__main__":
    main()
