"""Reads a bucket with boto3, an S3 client that is not tgllm's: run with
Debian's /usr/bin/python3 (python3-boto3) by test_store_s3.py.

    s3_client_check.py ENDPOINT REGION BUCKET PREFIX

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Prints
{"keys": [...], "objects": {key: parsed JSON}} for the *.json objects
directly under PREFIX (the histories).
"""

import json
import sys

import boto3
from botocore.config import Config


def main():
    endpoint, region, bucket, prefix = sys.argv[1:5]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                      config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                    retries={"max_attempts": 1}))
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    objects = {}
    for key in keys:
        rest = key[len(prefix):]
        if "/" not in rest and rest.endswith(".json"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            objects[key] = json.loads(body)
    json.dump({"keys": keys, "objects": objects}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
