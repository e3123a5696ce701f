"""Runs a command beside the S3 emulator (s3_server.py): CTest runs the
store's unit test so against the S3 store (unit/test_store_s3_cases).

    with_s3.py COMMAND [ARG...]

sets TGLLM_TEST_S3 to the emulator's endpoint, TGLLM_TEST_S3_KEY_ID and
TGLLM_TEST_S3_SECRET to its key pair (bucket "bucket"); exit status is
COMMAND's, or 77 (a skip for CTest) when the emulator cannot be had and CI
is not true.
"""

import os
import subprocess
import sys
import unittest

from s3_server import S3Server


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    s3 = S3Server()
    try:
        s3.start()
    except unittest.SkipTest as e:
        if os.environ.get("CI") == "true":
            print("with_s3.py: CI: %s" % e, file=sys.stderr)
            return 1
        print("with_s3.py: skipped: %s" % e, file=sys.stderr)
        return 77
    try:
        env = dict(os.environ, TGLLM_TEST_S3=s3.endpoint, TGLLM_TEST_S3_KEY_ID=s3.access_key,
                   TGLLM_TEST_S3_SECRET=s3.secret_key)
        return subprocess.call(sys.argv[1:], env=env)
    finally:
        s3.stop()


if __name__ == "__main__":
    sys.exit(main())
