#!/usr/bin/env python3
"""bench/media.py: the figures of files (issue 16), with the e2e fakes.

  voice: bot CPU (user + system, from /proc) per voice note, end to end: the
         update, getFile, the download, the transcription (multipart), the
         transcript shown, the answer streamed and stored; the fakes run in
         this process and are not counted.
  photos: the bot's peak RSS (VmHWM) with 100 photos in flight at once: 100
         private chats each send a ~300 KB JPEG; the model holds every answer
         3 s, so all 100 jobs hold their picture (downloaded, as content
         parts, in the request) at the same time.

    TGLLM_BIN=build-rel/tgllm python3 bench/media.py [VOICE_NOTES] [PHOTOS]

A Release build gives the figures bench/README.md records; a Debug/ASan one
works but measures the sanitizers.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from fake_openai import FakeOpenAI, Reply  # noqa: E402
from fake_telegram import Chat, FakeTelegram, User  # noqa: E402
from harness import API_KEY, TOKEN, BotProcess  # noqa: E402


def vm(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def start(tg, llm, tmp: Path) -> BotProcess:
    env = {"TG_BOT_TOKEN": TOKEN, "TG_BOT_CHATS": "*", "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": llm.base_url,
           "TELEGRAM_API_BASE": tg.base_url, "STORE": f"sqlite:{tmp / 'tgllm.db'}", "LOG_LEVEL": "warn",
           "TELEGRAM_PACING": "0,0,0"}
    bot = BotProcess(env, tmp / "bot.stderr")
    tg.wait_for(lambda: tg.calls_of("getUpdates"), 15, "the bot to poll")
    return bot


def voice(n: int, as_text: bool = False) -> float:
    with tempfile.TemporaryDirectory() as d:
        tg, llm = FakeTelegram().start(), FakeOpenAI().start()
        try:
            bot = start(tg, llm, Path(d))
            user = User(id=5001, first_name="V", username="v")
            audio = b"What is the weather like in Moscow today?" + b" " * 20000  # ~20 KB, as a 5 s Opus note
            per = 1 if as_text else 2  # a voice note's transcript, then its answer

            def send():
                if as_text:
                    return tg.send_private(user, "What is the weather like in Moscow today?")
                return tg.send_file(Chat.private(user), user, "voice", audio)
            warm = send()
            tg.wait_for(lambda: len(tg.messages_in(user.id)) >= per, 20, "the warm-up answer")
            before = bot.cpu_seconds()
            for i in range(n):
                send()
                tg.wait_for(lambda: len(tg.messages_in(user.id)) >= per * (i + 2), 20, f"answer {i}")
            used = bot.cpu_seconds() - before
            bot.stop()
            del warm
            return used / n * 1000
        finally:
            tg.stop()
            llm.stop()


def photos(n: int) -> tuple:
    with tempfile.TemporaryDirectory() as d:
        tg, llm = FakeTelegram().start(), FakeOpenAI().start()
        try:
            bot = start(tg, llm, Path(d))
            idle = vm(bot.pid, "VmRSS")
            jpeg = b"\xff\xd8\xff\xe0" + os.urandom(300 * 1024)
            llm.default = Reply(delay=3.0)
            users = [User(id=7000 + i, first_name=f"P{i}", username=f"p{i}") for i in range(n)]
            for u in users:
                tg.send_file(Chat.private(u), u, "photo", jpeg)
            for u in users:
                tg.wait_for(lambda u=u: tg.messages_in(u.id), 120, f"the answer to {u.id}")
            time.sleep(1)  # the exchanges stored, the jobs freed
            peak = vm(bot.pid, "VmHWM")
            after = vm(bot.pid, "VmRSS")
            bot.stop()
            return idle, peak, after, tg.max_downloads_in_flight
        finally:
            tg.stop()
            llm.stop()


def main():
    n_voice = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    n_photos = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    ms = voice(n_voice)
    text = voice(n_voice, as_text=True)
    print(f"voice note end to end: {ms:.2f} ms of bot CPU per voice note ({n_voice} notes; "
          f"the same question typed: {text:.2f} ms)")
    idle, peak, after, most = photos(n_photos)
    print(f"{n_photos} photos in flight (~300 KB each): peak RSS {peak / 1024:.1f} MB "
          f"(idle {idle / 1024:.1f} MB, {after / 1024:.1f} MB after); at most {most} downloads at once")


if __name__ == "__main__":
    main()
