"""Voice notes, photos and documents: the bot downloads the file (getFile, then
the file URL), makes it a user turn (a transcript, content parts, the text of
a file) and answers it; too big, unreadable and failing files get a short reply
and nothing is stored."""

import base64
import json
import os
import sqlite3
import sys

from fake_openai import PNG_PICTURE, ImageReply
from fake_telegram import Chat, User
from harness import ALICE, IVAN, MALLORY, OPEN_GROUP, BotTestCase, main
from test_store_s3 import BUCKET, PREFIX, S3TestCase

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) * 4 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"

TEXT_FILE_TOO_BIG = "This file is over 20 MB, the most a bot may download from Telegram. Please send a smaller one."
TEXT_FILE_FAILED = "I could not download this file from Telegram. Please send it again."
TEXT_PICTURE_TOO_BIG = ("This picture or PDF is over 5 MB, more than I keep in a conversation. Please send a "
                        "smaller one.")
TEXT_FILE_UNSUPPORTED = "I cannot read this kind of file. I understand voice messages, photos and text files."
TEXT_PHOTO_QUESTION = "What is in this picture?"
TEXT_PHOTO_QUESTION_RU = "Что на этой картинке?"
TEXT_NO_VISION = "This model cannot look at pictures or read files. /model lets you pick another one."
TEXT_IMAGE_REFUSED = "The picture model refused this description. Please try describing it differently."
TEXT_IMAGE_FAILED = "I could not draw this picture right now. Please try again in a minute."
TEXT_VOICE_EMPTY = "I could not make out any words in this recording."
TEXT_VOICE_FAILED = ("I could not turn this recording into text right now. Please try again, or type your "
                     "message.")


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


class MediaTestCase(BotTestCase):

    def stored_turns(self, chat_id: int) -> list:
        """(role, content, is_parts) of the chat's stored turns (SQLite), oldest first."""
        path = self.store.split(":", 1)[1]
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return [tuple(r) for r in con.execute(
                "SELECT role, content, is_parts FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))]
        finally:
            con.close()

    def assertNotStored(self, chat_id: int):
        self.assertEqual(self.stored_turns(chat_id), [], "expected nothing stored for a file that failed")


class PhotoTest(MediaTestCase):

    def test_photo_goes_to_the_model_as_content_parts_and_stays_in_context(self):
        self.start_bot()
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", JPEG)
        reply = self.wait_reply(msg)
        self.assertEqual(reply.text, "Echo: " + TEXT_PHOTO_QUESTION)
        req = self.llm.requests[-1]
        self.assertEqual(req.messages[-1], {"role": "user", "content": [
            {"type": "text", "text": TEXT_PHOTO_QUESTION},
            {"type": "image_url", "image_url": {"url": data_url("image/jpeg", JPEG)}},
        ]}, "expected the photo as a data URL of its bytes with the default question")
        # The largest size was downloaded, once, with the token in the path only.
        self.assertEqual([p for ok, p in self.tg.downloads], [self.tg.calls_of("getFile")[0].response["result"]
                                                               ["file_path"]])
        self.assertTrue(self.tg.downloads[0][1].startswith("photos/file_"))
        self.wait_handled(msg)
        turns = self.stored_turns(ALICE.id)
        self.assertEqual([(r, p) for r, _, p in turns], [("user", 1), ("assistant", 0)])

        # The next question sees the picture still.
        self.ask(ALICE, "And what colour is it?")
        messages = self.llm.requests[-1].messages
        self.assertEqual(messages[0]["content"][1]["image_url"]["url"], data_url("image/jpeg", JPEG))
        self.assertEqual(messages[-1], {"role": "user", "content": "And what colour is it?"})

    def test_caption_is_the_question_and_an_image_document_keeps_its_type(self):
        self.start_bot()
        msg = self.tg.send_file(Chat.private(IVAN), IVAN, "document", PNG, mime_type="image/png",
                                file_name="chart.png", caption="Что на графике?")
        self.assertEqual(self.wait_reply(msg).text, "Echo: Что на графике?")
        self.assertEqual(self.llm.requests[-1].messages[-1]["content"][1]["image_url"]["url"],
                         data_url("image/png", PNG))
        photo = self.tg.send_file(Chat.private(IVAN), IVAN, "photo", JPEG)
        self.assertEqual(self.wait_reply(photo).text, "Echo: " + TEXT_PHOTO_QUESTION_RU)

    def test_in_a_group_a_photo_is_answered_only_when_addressed(self):
        self.start_bot()
        ignored = self.tg.send_file(OPEN_GROUP, ALICE, "photo", JPEG, caption="look, a cat")
        asked = self.tg.send_file(OPEN_GROUP, ALICE, "photo", JPEG, caption="@tgllm_test_bot what breed?")
        self.assertEqual(self.wait_reply(asked).text, "Echo: Alice: @tgllm_test_bot what breed?")
        self.wait_handled(ignored)
        self.assertEqual(self.tg.replies_to(ignored), [])
        self.assertEqual(len(self.tg.calls_of("getFile")), 1, "expected only the addressed photo downloaded")

    def test_a_model_without_vision_is_said_so_and_nothing_is_stored(self):
        self.llm.no_vision = True
        self.start_bot()
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", JPEG, caption="What is this?")
        self.assertEqual(self.wait_reply(msg).text, TEXT_NO_VISION)
        self.wait_handled(msg)
        self.assertNotStored(ALICE.id)
        self.ask(ALICE, "Hello")
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user", "content": "Hello"}])

    def test_a_file_that_is_not_what_it_says_is_refused(self):
        self.start_bot()
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", b"<html>not a picture</html>")
        self.assertEqual(self.wait_reply(msg).text, TEXT_FILE_UNSUPPORTED)
        self.wait_handled(msg)
        self.assertEqual(self.llm.requests, [])
        self.assertNotStored(ALICE.id)

    def test_old_pictures_leave_the_prompt_before_text(self):
        # ~800 tokens a picture: a budget of 1000 holds the newest picture, not two.
        self.start_bot(CONTEXT_TOKENS="1000")
        first = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", JPEG, caption="first picture")
        self.wait_reply(first)
        self.wait_handled(first)
        second = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", JPEG, caption="second picture")
        self.wait_reply(second)
        messages = self.llm.requests[-1].messages
        self.assertEqual(messages[0], {"role": "user", "content": "first picture\n[picture]"},
                         "expected the old picture left out and its words kept")
        self.assertEqual(messages[1], {"role": "assistant", "content": "Echo: first picture"})
        self.assertEqual(messages[2]["content"][0], {"type": "text", "text": "second picture"})
        # The store keeps both pictures.
        self.wait_handled(second)
        self.assertEqual([p for _, _, p in self.stored_turns(ALICE.id)], [1, 0, 1, 0])


class FileLimitTest(MediaTestCase):

    def test_a_file_over_20_mb_is_refused_without_a_download(self):
        self.start_bot()
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "document", b"x", file_name="movie.txt",
                                file_size=25 * 1024 * 1024)
        self.assertEqual(self.wait_reply(msg).text, TEXT_FILE_TOO_BIG)
        self.wait_handled(msg)
        self.assertEqual(self.tg.calls_of("getFile"), [])
        self.assertEqual(self.tg.downloads, [])
        self.assertNotStored(ALICE.id)

    def test_a_picture_over_5_mb_is_refused_without_a_download(self):
        self.start_bot()
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "document", PNG, mime_type="image/png",
                                file_name="huge.png", file_size=6 * 1024 * 1024)
        self.assertEqual(self.wait_reply(msg).text, TEXT_PICTURE_TOO_BIG)
        self.wait_handled(msg)
        self.assertEqual(self.tg.downloads, [])
        self.assertNotStored(ALICE.id)

    def test_a_failed_download_is_told_and_the_bot_goes_on(self):
        bot = self.start_bot()
        self.tg.fail("download", error_code=500)
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", JPEG)
        self.assertEqual(self.wait_reply(msg).text, TEXT_FILE_FAILED)
        self.wait_handled(msg)
        self.assertNotStored(ALICE.id)
        self.assertEqual(self.ask(ALICE, "still there?").text, "Echo: still there?")
        self.assertBotRunning(bot)

    def test_at_most_four_files_come_in_at_once_and_the_rest_wait(self):
        self.tg.download_delay = 0.3
        self.start_bot(TG_BOT_CHATS="*")
        users = [ALICE, IVAN] + [User(id=900000 + i, first_name=f"U{i}", username=f"u{i}") for i in range(5)]
        msgs = [self.tg.send_file(Chat.private(u), u, "photo", JPEG) for u in users]
        for m in msgs:
            self.assertIn(self.wait_reply(m, timeout=20).text, ("Echo: " + TEXT_PHOTO_QUESTION, "Echo: " + TEXT_PHOTO_QUESTION_RU))
        self.assertEqual(len(self.tg.downloads), 7)
        self.assertEqual(self.tg.max_downloads_in_flight, 4,
                         "expected the downloads bounded to 4 at once, and that bound reached")

    def test_a_stranger_file_is_refused_without_a_download(self):
        self.start_bot()
        msg = self.tg.send_file(Chat.private(MALLORY), MALLORY, "voice", b"hello")
        self.assertIn("private", self.wait_reply(msg).text)
        self.assertEqual(self.tg.calls_of("getFile"), [])


class VoiceTest(MediaTestCase):

    def test_voice_is_transcribed_shown_answered_and_stored_as_text(self):
        self.start_bot(TRANSCRIBE_MODEL="whisper-large")
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "voice", b"What is the capital of France?")
        heard, answer = self.wait_messages(ALICE.id, 2)
        self.assertEqual(heard.text, "🎙 Heard: “What is the capital of France?”")
        self.assertEqual(answer.text, "Echo: What is the capital of France?")
        t = self.llm.transcriptions[0]
        self.assertEqual(t.fields.get("model"), "whisper-large")
        self.assertEqual(t.file.filename, "voice.ogg", "expected a voice note's .oga sent as voice.ogg")
        self.assertEqual(t.file.data, b"What is the capital of France?")
        self.assertEqual(t.headers.get("authorization"), "Bearer " + self.bot_env()["OPENAI_API_KEY"])
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user",
                                                           "content": "What is the capital of France?"}])
        self.wait_handled(msg)
        self.assertEqual(self.stored_turns(ALICE.id), [("user", "What is the capital of France?", 0),
                                                       ("assistant", "Echo: What is the capital of France?", 0)])

    def test_audio_and_video_notes_in_a_group_name_the_speaker(self):
        self.start_bot()
        reply_to_bot = {"message_id": 1, "chat": OPEN_GROUP.to_json(), "date": 0,
                        "from": self.tg.bot.to_json(), "text": "hi"}
        msg = self.tg.send_file(OPEN_GROUP, IVAN, "video_note", "Привет, бот".encode(), reply_to=reply_to_bot)
        self.wait_text(OPEN_GROUP.id, "Echo: Иван: Привет, бот")
        self.assertEqual(self.llm.transcriptions[0].file.filename, "audio.mp4")
        self.assertIn("Распознано", self.tg.texts_in(OPEN_GROUP.id)[0])
        self.wait_handled(msg)
        audio = self.tg.send_file(Chat.private(ALICE), ALICE, "audio", b"a song", mime_type="audio/mpeg")
        self.wait_text(ALICE.id, "Echo: a song")
        self.assertEqual(self.llm.transcriptions[1].file.filename, "audio.mp3")
        self.wait_handled(audio)

    def test_silence_and_a_failing_service_are_told_and_nothing_is_stored(self):
        self.start_bot()
        self.llm.transcribe_next("  ", (500, "boom"), (503, "still down"))
        silent = self.tg.send_file(Chat.private(ALICE), ALICE, "voice", b"...")
        self.assertEqual(self.wait_reply(silent).text, TEXT_VOICE_EMPTY)
        failing = self.tg.send_file(Chat.private(ALICE), ALICE, "voice", b"...")
        self.assertEqual(self.wait_reply(failing).text, TEXT_VOICE_FAILED)
        self.wait_handled(silent, failing)
        self.assertEqual(len(self.llm.transcriptions), 3, "expected one retry after a 5xx")
        self.assertEqual(self.llm.requests, [])
        self.assertNotStored(ALICE.id)
        self.assertLogged(r"transcription failed")


class DocumentTest(MediaTestCase):

    def test_a_text_file_is_read_with_its_name_and_caption(self):
        self.start_bot()
        code = "def add(a, b):\n    return a + b\n"
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "document", code.encode(), file_name="add.py",
                                mime_type="text/x-python", caption="Review this")
        self.wait_reply(msg)
        self.assertEqual(self.llm.requests[-1].messages[-1]["content"],
                         f"Review this\n\n--- add.py ---\n{code}\n--- end of add.py ---")
        # Any UTF-8 is text, whatever Telegram says its type is; other bytes are not.
        notes = self.tg.send_file(Chat.private(ALICE), ALICE, "document", "заметки".encode(), file_name="notes",
                                  mime_type="application/octet-stream")
        self.wait_reply(notes)
        self.assertIn("заметки", self.llm.requests[-1].messages[-1]["content"])
        binary = self.tg.send_file(Chat.private(ALICE), ALICE, "document", b"\x00\x01\xfe\xff",
                                   file_name="blob.bin", mime_type="application/octet-stream")
        self.assertEqual(self.wait_reply(binary).text, TEXT_FILE_UNSUPPORTED)
        zipped = self.tg.send_file(Chat.private(ALICE), ALICE, "document", b"PK\x03\x04", file_name="a.zip",
                                   mime_type="application/zip")
        self.assertEqual(self.wait_reply(zipped).text, TEXT_FILE_UNSUPPORTED)
        self.wait_handled(zipped)
        self.assertEqual(len(self.tg.calls_of("getFile")), 3, "expected a zip refused by its type, undownloaded")

    def test_a_text_file_too_long_for_the_prompt_names_the_limit(self):
        self.start_bot(CONTEXT_TOKENS="1000")
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "document", b"word " * 2000, file_name="long.txt",
                                mime_type="text/plain")
        text = self.wait_reply(msg).text
        self.assertRegex(text, r"^This file is too long for the model: at most about \d+ KB of text fit\.")
        self.wait_handled(msg)
        self.assertEqual(self.llm.requests, [])
        self.assertNotStored(ALICE.id)

    def test_a_pdf_is_a_file_part(self):
        self.start_bot()
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "document", PDF, file_name="paper.pdf",
                                mime_type="application/pdf", caption="Summarise")
        self.assertEqual(self.wait_reply(msg).text, "Echo: Summarise")
        self.assertEqual(self.llm.requests[-1].messages[-1]["content"], [
            {"type": "text", "text": "Summarise"},
            {"type": "file", "file": {"filename": "paper.pdf", "file_data": data_url("application/pdf", PDF)}},
        ])
        bare = self.tg.send_file(Chat.private(IVAN), IVAN, "document", PDF, file_name="статья.pdf",
                                 mime_type="application/pdf")
        self.assertEqual(self.wait_reply(bare).text, "Echo: О чём этот документ?")
        self.assertEqual(self.llm.requests[-1].messages[-1]["content"][1]["file"]["filename"], "статья.pdf")


class ImageTest(MediaTestCase):

    def test_image_draws_and_uploads_a_photo_with_the_prompt(self):
        self.start_bot(IMAGE_MODEL="gpt-image-1", IMAGE_SIZE="1536x1024")
        msg = self.tg.send_private(ALICE, "/image a red fox in the snow")
        photo = self.wait_reply(msg)
        self.assertEqual(photo.text, "a red fox in the snow", "expected the prompt as the caption")
        upload = photo.params["_photo"]
        self.assertIsNotNone(upload, "expected the bytes uploaded (multipart), never a provider URL")
        self.assertEqual(upload.data, PNG_PICTURE)
        self.assertEqual(upload.content_type, "image/png")
        self.assertEqual(self.llm.image_requests, [{"model": "gpt-image-1", "prompt": "a red fox in the snow",
                                                    "n": 1, "size": "1536x1024"}],
                         "expected no response_format for a gpt-image model, and the size sent")
        self.assertIn("upload_photo", [c.params.get("action") for c in self.tg.calls_of("sendChatAction")])
        self.wait_handled(msg)
        self.assertEqual(self.llm.requests, [], "expected no chat completion for a drawing")
        self.assertEqual(self.stored_turns(ALICE.id), [], "expected a drawing not to enter the history")

    def test_img_with_a_url_answer_and_a_revised_prompt_of_dall_e(self):
        self.llm.draw_next(ImageReply(as_url=True, revised_prompt="R" * 1500))
        self.start_bot(IMAGE_MODEL="dall-e-3")
        msg = self.tg.send_private(IVAN, "/img кот")
        photo = self.wait_reply(msg)
        self.assertEqual(photo.text, "R" * 1024, "expected the revised prompt cut to 1024 characters")
        self.assertEqual(photo.params["_photo"].data, PNG_PICTURE)
        self.assertEqual(self.llm.image_requests[0].get("response_format"), "b64_json")
        self.assertNotIn("authorization", self.llm.file_gets[0],
                         "expected the picture's URL fetched without the API key")

    def test_image_alone_explains_itself_and_refusals_are_told(self):
        self.start_bot()
        usage = self.tg.send_private(ALICE, "/image")
        self.assertIn("/image draws a picture", self.wait_reply(usage).text)
        self.llm.draw_next(ImageReply(status=400, message="Your request was rejected by the safety system.",
                                      code="content_policy_violation"),
                           ImageReply(status=500, message="boom"))
        refused = self.tg.send_private(ALICE, "/image something forbidden")
        self.assertEqual(self.wait_reply(refused).text, TEXT_IMAGE_REFUSED)
        failed = self.tg.send_private(ALICE, "/image a cat")
        self.assertEqual(self.wait_reply(failed).text, TEXT_IMAGE_FAILED)
        self.wait_handled(usage, refused, failed)
        self.assertEqual(len(self.llm.image_requests), 2)
        self.assertEqual(self.tg.calls_of("sendPhoto"), [])
        self.assertLogged(r"no picture .*content_policy_violation")

    def test_in_a_group_image_is_a_command_for_the_bot(self):
        self.start_bot()
        msg = self.tg.send_group(OPEN_GROUP, ALICE, "/image@tgllm_test_bot a lighthouse")
        self.assertEqual(self.wait_reply(msg).text, "a lighthouse")
        self.assertEqual(self.tg.calls_of("sendPhoto")[0].chat_id(), OPEN_GROUP.id)


class MediaHandleTest(MediaTestCase):
    """`tgllm handle`: one update a process, the same downloads."""

    def test_a_photo_and_a_voice_note_through_handle(self):
        self.tg.bot = self.tg.bot.__class__(id=int(self.tg.token.split(":")[0]), first_name="Test Bot",
                                            username=self.tg.bot.username, is_bot=True)
        msg = self.tg.message(Chat.private(ALICE), ALICE, None, extra={"photo": [
            {"file_id": self.tg.add_file(JPEG, "photos/h.jpg"), "width": 10, "height": 10,
             "file_size": len(JPEG)}]})
        self.assertEqual(self.handle_update(self.tg.update("message", msg), {}), 200)
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: " + TEXT_PHOTO_QUESTION])
        voice = self.tg.message(Chat.private(ALICE), ALICE, None, extra={"voice": {
            "file_id": self.tg.add_file(b"and this?", "voice/h.oga"), "file_size": 9, "duration": 1}})
        self.assertEqual(self.handle_update(self.tg.update("message", voice), {}), 200)
        self.assertEqual(self.tg.texts_in(ALICE.id)[-1], "Echo: and this?")
        messages = self.llm.requests[-1].messages
        self.assertEqual(messages[0]["content"][1]["image_url"]["url"], data_url("image/jpeg", JPEG))
        self.assertEqual(messages[-1], {"role": "user", "content": "and this?"})


class MediaS3Test(S3TestCase):
    """The S3 store keeps a picture in the original bot's layout: content is an array of parts."""

    def test_a_photo_is_stored_as_parts_and_a_python_bot_picture_is_read(self):
        # What the Python bot wrote: a picture turn as content parts.
        py = [{"role": "user", "content": [{"type": "text", "text": "old picture"},
                                           {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}]},
              {"role": "assistant", "content": "A chart."}]
        self.s3.put_object(BUCKET, f"{PREFIX}{ALICE.id}.json", json.dumps(py).encode())
        self.start_bot(**self.s3_env())
        msg = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", JPEG, caption="and this one?")
        self.wait_reply(msg)
        self.assertEqual(self.llm.requests[-1].messages[:2], py, "expected the stored picture sent as it was")
        stored = self.wait_history(ALICE.id, 4)
        self.assertEqual(stored[:2], py)
        self.assertEqual(stored[2], {"role": "user", "content": [
            {"type": "text", "text": "and this one?"},
            {"type": "image_url", "image_url": {"url": data_url("image/jpeg", JPEG)}}]})
        self.assertEqual(stored[3], {"role": "assistant", "content": "Echo: and this one?"})

    def test_a_voice_note_in_a_group_through_handle_is_stored_as_its_transcript(self):
        self.serverless_identity()
        reply_to_bot = {"message_id": 1, "chat": OPEN_GROUP.to_json(), "date": 0,
                        "from": self.tg.bot.to_json(), "text": "hi"}
        msg = self.tg.message(OPEN_GROUP, ALICE, None, reply_to=reply_to_bot, extra={"voice": {
            "file_id": self.tg.add_file(b"Tell us a joke", "voice/g.oga"), "file_size": 14, "duration": 1,
            "mime_type": "audio/ogg"}})
        self.assertEqual(self.handle(self.tg.update("message", msg)), 200)
        self.assertEqual(self.tg.texts_in(OPEN_GROUP.id), ["🎙 Heard: “Tell us a joke”", "Echo: Alice: Tell us a joke"])
        self.assertEqual(self.wait_history(OPEN_GROUP.id, 2), [
            {"role": "user", "content": "Alice: Tell us a joke"},
            {"role": "assistant", "content": "Echo: Alice: Tell us a joke"}])
        self.assertEqual(self.llm.transcriptions[0].file.filename, "voice.ogg")


if __name__ == "__main__":
    main()
