"""A Standard Webhooks sender built on the spec authors' own Python package, as a Svix-style
sender would behave: it signs each attempt afresh and retries a message with the same
`webhook-id` and body when it got no 2xx. Prints one JSON line per attempt: status and body.

usage: standard_webhooks_sender.py URL SECRET
"""

import json
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook


def send(url, hook, msg_id, body):
    now = datetime.now(timezone.utc)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": hook.sign(msg_id, now, body),
    }
    req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def main():
    url, secret = sys.argv[1], sys.argv[2]
    hook = Webhook(secret)
    first = json.dumps({"id": "swh-1", "type": "contact.created",
                        "contact": {"email": "jan@example.com"}})
    other = json.dumps({"id": "swh-2", "type": "contact.created",
                        "contact": {"email": "eva@example.com"}})
    for msg_id, body in [("msg_py_1", first), ("msg_py_1", first), ("msg_py_1", other)]:
        status, answer = send(url, hook, msg_id, body)
        print(json.dumps({"status": status, "answer": answer}), flush=True)


if __name__ == "__main__":
    main()
