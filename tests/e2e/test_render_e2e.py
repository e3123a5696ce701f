"""The model answers in Markdown; the chat sees plain text with Telegram
entities (offsets in UTF-16 units), never parse_mode. The fake Telegram
checks entities as the real one does, and a refused formatting still
delivers the text. Reasoning (<think>) is hidden, or quoted on request."""

import json
import unittest
import urllib.error
import urllib.request

from fake_openai import answer, streamed
from fake_telegram import TOKEN, FakeTelegram
from harness import ALICE, OPEN_GROUP, BotTestCase, main, utf16_len

MENTION = "@tgllm_test_bot "


def utf16_slice(text: str, offset: int, length: int) -> str:
    """The characters an entity covers (offset and length in UTF-16 units)."""
    b = text.encode("utf-16-le")
    return b[2 * offset:2 * (offset + length)].decode("utf-16-le")


def entity(text: str, type_: str, covered: str, nth: int = 0, **extra) -> dict:
    """The entity of type_ covering the nth occurrence of covered in text."""
    i = -1
    for _ in range(nth + 1):
        i = text.index(covered, i + 1)
    return {"type": type_, "offset": utf16_len(text[:i]), "length": utf16_len(covered), **extra}


def normalized(entities: list) -> list:
    """Entities in a stable order, with only the fields that mean something."""
    out = []
    for e in entities:
        d = {k: e[k] for k in ("type", "offset", "length", "url", "language") if e.get(k) is not None}
        out.append(d)
    return sorted(out, key=lambda d: (d["offset"], -d["length"], d["type"]))


def spans(m) -> list:
    """(type, covered text) of every entity of a BotMessage."""
    return [(e["type"], utf16_slice(m.text, e["offset"], e["length"])) for e in normalized(m.entities)]


class RenderTestCase(BotTestCase):

    def answer_for(self, markdown: str, **start) -> object:
        """Alice asks; the model answers markdown; returns the bot's final message."""
        self.start_bot(**start)
        self.llm.enqueue(answer(markdown))
        msg = self.tg.send_private(ALICE, "Format something for me")
        self.wait_reply(msg, timeout=15)
        self.wait_handled(msg)
        msgs = self.tg.messages_in(ALICE.id)
        self.assertEqual(len(msgs), 1, f"expected one message, got {[m.text for m in msgs]}")
        return msgs[0]

    def assertEntities(self, m, expected: list):
        self.assertEqual(normalized(m.entities), normalized(expected),
                         f"expected entities covering {[(e['type'], utf16_slice(m.text, e['offset'], e['length'])) for e in normalized(expected)]}, "
                         f"got {spans(m)}")

    def assertNoParseMode(self):
        with_mode = [(c.method, c.params.get("parse_mode")) for c in self.tg.calls if "parse_mode" in c.params]
        self.assertEqual(with_mode, [], "expected entities, never parse_mode")


class MarkdownEntitiesTest(RenderTestCase):

    def test_inline_styles_code_block_and_link_arrive_as_entities(self):
        md = ("**Bold** and _italic_ and ~~gone~~ and `code`.\n\n"
              "```python\nprint('hi')\n```\n\n"
              "See [the docs](https://example.com/docs).")
        m = self.answer_for(md)
        text = "Bold and italic and gone and code.\n\nprint('hi')\n\nSee the docs."
        self.assertEqual(m.text, text)
        self.assertEntities(m, [
            entity(text, "bold", "Bold"),
            entity(text, "italic", "italic"),
            entity(text, "strikethrough", "gone"),
            entity(text, "code", "code"),
            entity(text, "pre", "print('hi')", language="python"),
            entity(text, "text_link", "the docs", url="https://example.com/docs"),
        ])
        self.assertNotIn("parse_mode", m.params)

    def test_offsets_after_cyrillic_and_emoji_are_counted_in_utf16_units(self):
        md = "Привет 👋 **мир**! Код: `x = 1` 😀 [ссылка](https://example.com/a) и ~~старое~~ 🦔 _конец_"
        m = self.answer_for(md)
        text = "Привет 👋 мир! Код: x = 1 😀 ссылка и старое 🦔 конец"
        self.assertEqual(m.text, text)
        bold = [e for e in m.entities if e["type"] == "bold"]
        # "Привет " is 7 units, 👋 2 more, then a space: "мир" starts at 10, not at 9 (code points)
        # or 20 (UTF-8 bytes).
        self.assertEqual([(e["offset"], e["length"]) for e in bold], [(10, 3)],
                         f"expected bold at UTF-16 offset 10, length 3; got {bold}")
        self.assertEntities(m, [
            entity(text, "bold", "мир"),
            entity(text, "code", "x = 1"),
            entity(text, "text_link", "ссылка", url="https://example.com/a"),
            entity(text, "strikethrough", "старое"),
            entity(text, "italic", "конец"),
        ])

    def test_headings_lists_quotes_and_tables_are_rendered_as_text_and_entities(self):
        md = ("# Title\n\nIntro line.\n\n- one\n- two\n\n1. first\n2. second\n\n> quoted words\n\n"
              "| name | qty |\n|------|-----|\n| pear | 12 |\n")
        m = self.answer_for(md)
        for piece in ("Title", "Intro line.", "• one\n• two", "1. first\n2. second", "quoted words"):
            self.assertIn(piece, m.text, f"expected {piece!r} in the rendered text {m.text!r}")
        self.assertNotIn("#", m.text, "expected the heading marker gone")
        self.assertNotIn("> ", m.text, "expected the quote marker gone")
        got = spans(m)
        self.assertIn(("bold", "Title"), got, "expected the heading as a bold line")
        self.assertIn(("blockquote", "quoted words"), got, "expected a blockquote")
        tables = [s for t, s in got if t == "pre"]
        self.assertEqual(len(tables), 1, f"expected the table as one pre block, got {got}")
        rows = tables[0].splitlines()
        self.assertTrue(any("name" in r and "qty" in r for r in rows) and any("pear" in r and "12" in r for r in rows),
                        f"expected the table's rows in the pre block, got {tables[0]!r}")

    def test_long_quote_becomes_an_expandable_blockquote(self):
        md = "Look:\n\n" + "\n".join(f"> line {i} of a long quotation" for i in range(8))
        m = self.answer_for(md)
        kinds = [t for t, _ in spans(m)]
        self.assertIn("expandable_blockquote", kinds, f"expected an 8-line quote to be expandable, got {spans(m)}")
        self.assertNotIn("blockquote", kinds)

    def test_no_call_ever_has_parse_mode_while_streaming_or_finishing(self):
        md = "Some **bold** text, then `code`, then a [link](https://example.com).\n\n" + \
             "\n".join(f"- item **{i}** with _style_" for i in range(20))
        self.start_bot()
        # Streams of ~1.2 s and ~2.4 s: drafts come at once, a group's first edit after 1 s.
        self.llm.enqueue(answer(md, chunks=8, chunk_delay=0.15), answer(md, chunks=8, chunk_delay=0.3))
        private = self.tg.send_private(ALICE, "Stream formatted text")
        self.wait_reply(private, timeout=20)
        msg = self.tg.send_group(OPEN_GROUP, ALICE, MENTION + "stream formatted text here too")
        self.wait_reply(msg, timeout=20)
        self.wait_handled(private, msg)
        self.assertEqual(self.tg.texts_in(OPEN_GROUP.id), self.tg.texts_in(ALICE.id),
                         "expected the group answer to reach the same final text")
        self.assertTrue(self.tg.drafts_in(ALICE.id), "expected drafts in the private chat")
        self.assertTrue(self.tg.calls_of("editMessageText", chat_id=OPEN_GROUP.id), "expected edits in the group")
        self.assertNoParseMode()
        refused = [(c.method, c.response.get("description")) for c in self.tg.calls
                   if c.status == 400 and isinstance(c.response, dict)]
        self.assertEqual(refused, [], "expected every frame's and part's entities accepted")
        for chat in (ALICE.id, OPEN_GROUP.id):
            [m] = self.tg.messages_in(chat)
            self.assertIn(("text_link", "link"), spans(m))
            self.assertEqual(sum(1 for t, _ in spans(m) if t == "bold"), 21, f"expected 21 bold spans, got {spans(m)}")


class EntitiesTelegramAcceptsTest(RenderTestCase):

    def test_answer_with_300_bold_words_is_split_so_no_message_has_more_than_100_entities(self):
        md = " ".join(f"**b{i}**" for i in range(300))
        self.start_bot()
        self.llm.enqueue(answer(md))
        msg = self.tg.send_private(ALICE, "Bold everything")
        words = [f"b{i}" for i in range(300)]
        self.wait_handled(msg, timeout=20)
        self.assertEqual(" ".join(self.tg.texts_in(ALICE.id)).split(), words,
                         f"expected all 300 words in the chat; it has "
                         f"{[len(t.split()) for t in self.tg.texts_in(ALICE.id)]} words in its messages")
        parts = self.tg.messages_in(ALICE.id)
        self.assertGreaterEqual(len(parts), 3, "expected 300 entities in at least 3 messages")
        self.assertEqual([m.reply_to for m in parts], [msg["message_id"]] + [None] * (len(parts) - 1))
        bold = []
        for i, m in enumerate(parts):
            self.assertLessEqual(len(m.entities), 100, f"expected at most 100 entities in part {i}, "
                                                       f"got {len(m.entities)}")
            bold += [s for t, s in spans(m) if t == "bold"]
        self.assertEqual(bold, words, "expected every word bold, each once")

    def test_every_frame_of_a_streamed_markdown_answer_is_accepted(self):
        md = ("## Résumé 👋\n\nПривет, **жирный _и курсив_ вместе** и `код 😀`, ~~зачёркнуто~~.\n\n"
              "> цитата с **выделением** и [ссылкой](https://example.com/q)\n\n"
              "1. первый `x`\n2. второй **y**\n   - вложенный _z_\n\n"
              "```c\nint main(void) { return 0; } /* 😀 */\n```\n\n"
              "| a | б |\n|---|---|\n| 1 | 2 |\n\nКонец **совсем**.")
        self.start_bot()
        self.llm.enqueue(answer(md, chunks=60, chunk_delay=0.04))       # cut at many places, ~2.4 s
        msg = self.tg.send_private(ALICE, "Everything at once")
        reply = self.wait_reply(msg, timeout=20)
        self.wait_handled(msg)
        drafts = self.tg.calls_of("sendMessageDraft", chat_id=ALICE.id)
        self.assertGreaterEqual(len(drafts), 3, f"expected several drafts, got {len(drafts)}")
        refused = [(c.method, c.params.get("text"), c.response.get("description")) for c in self.tg.calls
                   if c.status == 400 and isinstance(c.response, dict)]
        self.assertEqual(refused, [], "expected Telegram to accept every frame's entities")
        self.assertNoParseMode()
        for marker in ("**", "~~", "```", "##", "](", "> "):
            self.assertNotIn(marker, reply.text, f"expected no Markdown marker {marker!r} in the final text")
        self.assertIn(("text_link", "ссылкой"), spans(reply))
        self.assertIn(("pre", "int main(void) { return 0; } /* 😀 */"), spans(reply))


class RefusedEntitiesTest(RenderTestCase):

    def test_refused_entities_are_sent_again_as_the_same_plain_text(self):
        self.start_bot()
        self.tg.reject_entities(times=1, methods=("sendMessage",), chat_id=ALICE.id)
        self.llm.enqueue(answer("Some **bold** and `code` here."))
        msg = self.tg.send_private(ALICE, "Format it")
        reply = self.wait_reply(msg, timeout=15)
        self.wait_handled(msg)
        text = "Some bold and code here."
        self.assertEqual(reply.text, text)
        sends = self.tg.calls_of("sendMessage", chat_id=ALICE.id)
        self.assertEqual([(c.status, c.params.get("text"), bool(c.params.get("entities"))) for c in sends],
                         [(400, text, True), (200, text, False)],
                         "expected the refused message sent once more, same text, without entities")
        self.assertEqual(self.tg.texts_in(ALICE.id), [text], "expected the answer exactly once")
        self.assertEqual(reply.reply_to, msg["message_id"], "expected the plain message still to be the reply")

    def test_group_answer_whose_formatting_is_always_refused_arrives_as_plain_text(self):
        self.start_bot()
        self.tg.reject_entities(times=1000, methods=("sendMessage", "editMessageText"), chat_id=OPEN_GROUP.id)
        md = "Start **bold** " + " ".join(f"w{i}" for i in range(40)) + " and `code` at the end."
        text = "Start bold " + " ".join(f"w{i}" for i in range(40)) + " and code at the end."
        self.llm.enqueue(answer(md, chunks=8, chunk_delay=0.3))        # ~2.4 s: sent, then edited
        msg = self.tg.send_group(OPEN_GROUP, ALICE, MENTION + "format it")
        self.wait_handled(msg, timeout=30)
        self.assertEqual(self.tg.texts_in(OPEN_GROUP.id), [text], "expected the answer once, as plain text")
        self.assertTrue([c for c in self.tg.calls if c.chat_id() == OPEN_GROUP.id and c.status == 400],
                        "control: expected Telegram to have refused the formatting")


class ReasoningTest(RenderTestCase):

    PIECES = ["<think>I should", " greet them politely", " and briefly.</think>", "Hello **there**", ", friend."]

    def test_reasoning_is_hidden_by_default_even_while_streaming(self):
        self.start_bot()
        self.llm.enqueue(streamed(self.PIECES, chunk_delay=0.3))       # a draft after (nearly) every piece
        msg = self.tg.send_private(ALICE, "Greet me")
        reply = self.wait_reply(msg, timeout=20)
        self.wait_handled(msg)
        text = "Hello there, friend."
        self.assertEqual(reply.text, text)
        self.assertEntities(reply, [entity(text, "bold", "there")])
        leaked = [(c.method, c.params.get("text")) for c in self.tg.calls
                  if isinstance(c.params.get("text"), str) and ("greet" in c.params["text"] or "think>" in c.params["text"])]
        self.assertEqual(leaked, [], "expected the reasoning in no call, drafts included")

    def test_reasoning_is_quoted_as_an_expandable_blockquote_with_reasoning_quote(self):
        self.start_bot(REASONING="quote")
        self.llm.enqueue(streamed(self.PIECES, chunk_delay=0.3))
        msg = self.tg.send_private(ALICE, "Greet me")
        reply = self.wait_reply(msg, timeout=20)
        self.wait_handled(msg)
        reasoning = "I should greet them politely and briefly."
        self.assertTrue(reply.text.startswith(reasoning), f"expected the reasoning first, got {reply.text!r}")
        self.assertTrue(reply.text.endswith("Hello there, friend."), f"expected the answer after it, got {reply.text!r}")
        self.assertNotIn("think>", reply.text)
        quotes = [e for e in reply.entities if e["type"] == "expandable_blockquote"]
        self.assertEqual(len(quotes), 1, f"expected one expandable_blockquote, got {spans(reply)}")
        self.assertEqual(quotes[0]["offset"], 0)
        self.assertEqual(utf16_slice(reply.text, 0, quotes[0]["length"]).strip(), reasoning,
                         "expected the quote to cover exactly the reasoning")
        self.assertIn(entity(reply.text, "bold", "there"), normalized(reply.entities))


class FakeTelegramChecksEntitiesTest(unittest.TestCase):
    """The fake refuses entities as Telegram does (no bot involved)."""

    def setUp(self):
        self.tg = FakeTelegram().start()
        self.addCleanup(self.tg.stop)

    def call(self, method: str, params: dict):
        req = urllib.request.Request(f"{self.tg.base_url}/bot{TOKEN}/{method}", data=json.dumps(params).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_invalid_entities_are_refused_with_cant_parse_entities(self):
        text = "a😀b"  # 4 UTF-16 units
        bad = [
            {"type": "shiny", "offset": 0, "length": 1},
            {"type": "bold", "offset": "0", "length": 1},
            {"type": "bold", "offset": 0, "length": 1.5},
            {"type": "bold", "offset": 0, "length": 0},
            {"type": "bold", "offset": -1, "length": 2},
            {"type": "bold", "offset": 1, "length": 4},
            {"type": "text_link", "offset": 0, "length": 1},
            {"type": "pre", "offset": 0, "length": 1, "language": 5},
        ]
        for method, extra in (("sendMessage", {}), ("sendMessageDraft", {"draft_id": 7})):
            for e in bad:
                status, body = self.call(method, {"chat_id": 5, "text": text, "entities": [e], **extra})
                self.assertEqual(status, 400, f"expected {method} to refuse {e}, got {status} {body}")
                self.assertTrue(body["description"].startswith("Bad Request: can't parse entities: "),
                                f"expected \"can't parse entities\", got {body['description']!r}")
            good = [{"type": "bold", "offset": 1, "length": 3},
                    {"type": "text_link", "offset": 0, "length": 4, "url": "https://example.com"},
                    {"type": "pre", "offset": 3, "length": 1, "language": "c"}]
            status, body = self.call(method, {"chat_id": 5, "text": text, "entities": good, **extra})
            self.assertEqual(status, 200, f"expected {method} to accept {good}, got {body}")

    def test_reject_entities_refuses_only_formatted_calls_the_given_times(self):
        self.tg.reject_entities(times=1)
        ents = [{"type": "bold", "offset": 0, "length": 2}]
        self.assertEqual(self.call("sendMessage", {"chat_id": 5, "text": "hi"})[0], 200)
        status, body = self.call("sendMessage", {"chat_id": 5, "text": "hi", "entities": ents})
        self.assertEqual(status, 400)
        self.assertIn("can't parse entities", body["description"])
        self.assertEqual(self.call("sendMessage", {"chat_id": 5, "text": "hi", "entities": ents})[0], 200)
        self.assertEqual(self.tg.messages_in(5)[-1].entities, ents)

    def test_drafts_need_a_non_zero_draft_id_and_text(self):
        self.assertEqual(self.call("sendMessageDraft", {"chat_id": 5, "draft_id": 0, "text": "x"})[0], 400)
        self.assertEqual(self.call("sendMessageDraft", {"chat_id": 5, "draft_id": 3, "text": ""})[0], 400)
        self.assertEqual(self.call("sendMessageDraft", {"chat_id": 5, "draft_id": 3, "text": "x" * 4097})[0], 400)
        self.assertEqual(self.call("sendMessageDraft", {"chat_id": 5, "draft_id": 3, "text": "x"})[0], 200)
        self.assertEqual(self.tg.drafts_in(5), [{"chat_id": 5, "draft_id": 3, "text": "x"}])

    def test_an_edit_that_only_changes_entities_is_a_modification(self):
        _, body = self.call("sendMessage", {"chat_id": 5, "text": "hello"})
        mid = body["result"]["message_id"]
        ents = [{"type": "bold", "offset": 0, "length": 5}]
        edit = {"chat_id": 5, "message_id": mid, "text": "hello", "entities": ents}
        self.assertEqual(self.call("editMessageText", edit)[0], 200)
        status, body = self.call("editMessageText", edit)
        self.assertEqual(status, 400)
        self.assertIn("message is not modified", body["description"])
        self.assertEqual(self.tg.messages_in(5)[0].entities, ents)


if __name__ == "__main__":
    main()
