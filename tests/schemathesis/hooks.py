"""Schemathesis hooks for the API contract run (see `run` beside this file).

Every operation that needs a token gets one for the run's user. The fuzzer also calls
logout and the token revocations, so a 401 makes schemathesis log in again and replay the
request once (the `retry_on` default), which keeps the rest of the run authenticated.
"""

import os

import requests
import schemathesis

BASE = os.environ["CHAT_API_BASE"]
USERNAME = os.environ["CHAT_API_USERNAME"]
PASSWORD = os.environ["CHAT_API_PASSWORD"]


@schemathesis.auth()
class TokenAuth:
    def get(self, case, ctx):
        response = requests.post(
            f"{BASE}/api/v1/login/",
            json={"username": USERNAME, "password": PASSWORD},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Token {data}"
