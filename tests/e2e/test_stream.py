"""The model's answer arrives as Server-Sent Events in the shapes real
servers send; each is read into the same text."""

import sqlite3

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

    def test_surrogate_pair_split_across_events_is_joined(self):
        # "😀" is \ud83d\ude00 in UTF-16: the first event ends with one half, the next starts with the other.
        self.assertAnswerIs(Reply(pieces=["smile \ud83d", "\ude00 end"], chunks=2, ascii_escapes=True),
                            "smile 😀 end")

    def test_lone_surrogates_and_nul_become_replacement_characters(self):
        # A half whose other half never comes (at the end of a piece, and of the stream) and a
        # \u0000: each is one U+FFFD, and the text around them arrives.
        self.assertAnswerIs(Reply(pieces=["a\ud83d", " b\u0000c ", "\ude00d", " e\udbff"], chunks=4,
                                  ascii_escapes=True), "a\ufffd b\ufffdc \ufffdd e\ufffd")

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


class RequestBodyTest(BotTestCase):

    def test_answer_that_starts_before_the_request_is_read(self):
        """The bot frees a request once the answer's text has begun, but only
        when curl has sent all of it: here the server streams its first piece
        before reading a request larger than the sockets' buffers (under
        AddressSanitizer, reading a freed request aborts the bot)."""
        bot = self.start_bot()
        bot.stop()
        turns = 60
        con = sqlite3.connect(self.store.split(":", 1)[1])
        con.executemany("INSERT INTO messages (chat_id, role, content, created_at) VALUES (?, ?, ?, 0)",
                        [(ALICE.id, "user" if i % 2 == 0 else "assistant", f"{i} " + "x" * 50000)
                         for i in range(turns)])
        con.commit()
        con.close()
        self.start_bot(CONTEXT_TOKENS="5000000")
        self.llm.enqueue(answer("Early and whole", chunks=5, chunk_delay=0.05, early=True))
        got = self.ask(ALICE, "After a long history", timeout=30)
        self.assertEqual(got.text, "Early and whole")
        req = self.llm.wait_requests(1)[-1]
        self.assertEqual(len(req.messages), turns + 1, "expected the whole history in the request")
        self.assertEqual([len(m["content"]) for m in req.messages[:turns]],
                         [len(f"{i} ") + 50000 for i in range(turns)])


if __name__ == "__main__":
    main()
