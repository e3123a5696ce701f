"""A small, faithful reference of the original bot tgllm continues
(docs: /work/shared/DESIGN.md, "Compatibility with the original serverless
bot"), for figure 1's ratio: a Yandex Cloud Functions Python handler behind
API Gateway, the history of a chat in Object Storage as <chat_id>.json (a
JSON array of {"role","content"}, read and written with boto3), the model
through ProxyAPI's OpenAI-compatible API, and Telegram over HTTP.

One deviation, said here: the original calls the model with the `openai`
package (client.chat.completions.create, not streamed), which Debian does not
package; this file sends the same request the library sends (POST
<base>/chat/completions, JSON, Authorization: Bearer) with `requests`, which
is what the library does underneath (httpx there). The cost of importing
`openai` itself (~0.3 s more, pydantic included) is therefore left out, to
the original's advantage.

Run as the platform does on a cold start: a new python3 process imports the
module (clients built at import time, as the original does), calls
handler(event, context) once with the event on stdin, prints the response.

Environment, as the original: TG_BOT_TOKEN, TG_BOT_CHATS, PROXY_API_KEY,
YANDEX_KEY_ID, YANDEX_KEY_SECRET, YANDEX_BUCKET; and for the fakes
S3_ENDPOINT, OPENAI_BASE_URL, TELEGRAM_API_BASE.
"""
import json
import os
import sys

import boto3
import requests

TOKEN = os.environ["TG_BOT_TOKEN"]
ALLOWED = {c.strip().lstrip("@") for c in os.environ.get("TG_BOT_CHATS", "").split(",") if c.strip()}
BUCKET = os.environ["YANDEX_BUCKET"]
MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
API_BASE = os.environ.get("OPENAI_BASE_URL", "https://api.proxyapi.ru/openai/v1")
TG_BASE = os.environ.get("TELEGRAM_API_BASE", "https://api.telegram.org")

s3 = boto3.session.Session().client(
    service_name="s3",
    endpoint_url=os.environ.get("S3_ENDPOINT", "https://storage.yandexcloud.net"),
    region_name=os.environ.get("S3_REGION", "ru-central1"),
    aws_access_key_id=os.environ["YANDEX_KEY_ID"],
    aws_secret_access_key=os.environ["YANDEX_KEY_SECRET"],
)
http = requests.Session()


def tg(method, **params):
    return http.post(f"{TG_BASE}/bot{TOKEN}/{method}", json=params, timeout=30)


def get_history(chat_id):
    try:
        obj = s3.get_object(Bucket=BUCKET, Key=f"{chat_id}.json")
        return json.loads(obj["Body"].read())
    except s3.exceptions.NoSuchKey:
        return []


def save_history(chat_id, history):
    s3.put_object(Bucket=BUCKET, Key=f"{chat_id}.json", Body=json.dumps(history),
                  ContentType="application/json")


def ask_model(messages):
    r = http.post(f"{API_BASE}/chat/completions", timeout=120,
                  headers={"Authorization": f"Bearer {os.environ['PROXY_API_KEY']}"},
                  json={"model": MODEL, "messages": messages})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def handler(event, context):
    update = json.loads(event["body"])
    message = update.get("message")
    if not message or "text" not in message:
        return {"statusCode": 200, "body": ""}
    chat_id = message["chat"]["id"]
    username = message["from"].get("username", "")
    if "*" not in ALLOWED and username not in ALLOWED:
        tg("sendMessage", chat_id=chat_id, text="Sorry, this bot is private.")
        return {"statusCode": 200, "body": ""}
    text = message["text"]
    if text == "/new":
        s3.delete_object(Bucket=BUCKET, Key=f"{chat_id}.json")
        tg("sendMessage", chat_id=chat_id, text="Started a new conversation.")
        return {"statusCode": 200, "body": ""}
    tg("sendChatAction", chat_id=chat_id, action="typing")
    history = get_history(chat_id)
    history.append({"role": "user", "content": text})
    answer = ask_model(history)
    history.append({"role": "assistant", "content": answer})
    save_history(chat_id, history)
    tg("sendMessage", chat_id=chat_id, text=answer)
    return {"statusCode": 200, "body": ""}


if __name__ == "__main__":
    print(json.dumps(handler(json.load(sys.stdin), None)))
