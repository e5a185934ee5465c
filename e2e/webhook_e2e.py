#!/usr/bin/env python3
"""End-to-end alerts: a running `keytrap serve` (worker role included), a webhook to a
local receiver that verifies every delivery with the reference `standardwebhooks`
package, and the real ccxt using a Binance canary against the trap. The verified alerts
must arrive and name the right store, canary and incident.

The receiver answers 503 to its very first request, so the first alert is retried with
the same webhook-id. Needs KEYTRAP_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8 in keytrap's
environment (the receiver is on loopback, which the SSRF guard otherwise refuses).

Environment: KEYTRAP_URL, KEYTRAP_TOKEN, KEYTRAP_TRAP_URL (as e2e/run.sh sets them).
"""

import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.request

import ccxt

from webhook_receiver import Receiver

API = os.environ["KEYTRAP_URL"].rstrip("/")
TOKEN = os.environ["KEYTRAP_TOKEN"]
TRAP = os.environ["KEYTRAP_TRAP_URL"].rstrip("/")
WAIT = float(os.environ.get("E2E_ALERT_WAIT_SECS", "60"))


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def rewrite(urls, base):
    if isinstance(urls, dict):
        return {k: rewrite(v, base) for k, v in urls.items()}
    if isinstance(urls, str):
        return re.sub(r"^https?://[^/]+", base, urls)
    return urls


def main():
    rx = Receiver(fail_first=1)
    checks = []

    def ok(name):
        checks.append(name)
        print("PASS", name, flush=True)

    # The SSRF guard refuses internal targets at creation, with a clear 400.
    s, v = api("POST", "/v1/webhooks", {"url": "http://169.254.169.254/latest/meta-data/"})
    assert s == 400 and v["error"]["code"] == "invalid_request", (s, v)
    ok("metadata address refused at creation")

    s, v = api("POST", "/v1/webhooks", {"url": rx.url})
    assert s == 201, (s, v)
    rx.secret = v["secret"]
    hook = v["id"]
    assert rx.secret.startswith("whsec_")
    s, got = api("GET", "/v1/webhooks/" + hook)
    assert s == 200 and rx.secret not in json.dumps(got), got
    ok("webhook registered; secret shown once")

    s, v = api("POST", "/v1/webhooks/%s/test" % hook)
    assert s == 202, (s, v)
    test_id = v["webhook_id"]
    rx.wait(lambda d: any(h == test_id for h, _, _ in d), WAIT, "webhook.test")
    ok("webhook.test delivered and verified")

    store_name = "e2e-prod-users-db-%d" % time.time_ns()
    s, store = api("POST", "/v1/stores", {"name": store_name, "kind": "database"})
    assert s == 201, store
    s, minted = api("POST", "/v1/canaries", {"exchange": "binance", "store_id": store["id"]})
    assert s == 201, minted
    canary = minted["canaries"][0]
    creds = canary["credentials"]
    ex = ccxt.binance(
        {"apiKey": creds["api_key"], "secret": creds["api_secret"], "enableRateLimit": False, "timeout": 15000}
    )
    ex.urls["api"] = rewrite(ex.urls["api"], TRAP + "/binance")
    ex.fetch_balance()
    answered = time.time()
    ok("ccxt fetch_balance with the canary")

    def about_store(d):
        return [
            (h, p, t)
            for h, p, t in d
            if p.get("type") in ("incident.opened", "store.compromised")
            and (p.get("data") or {}).get("store", {}).get("id") == store["id"]
        ]

    got = rx.wait(lambda d: {p["type"] for _, p, _ in about_store(d)} >= {"incident.opened", "store.compromised"},
                  WAIT, "incident.opened and store.compromised for " + store_name)
    alerts = about_store(got)
    for h, p, t in alerts:
        data = p["data"]
        assert data["store"]["name"] == store_name, data["store"]
        assert store_name in data["summary"], data["summary"]
        assert "Binance" in data["summary"], data["summary"]
        assert data["canary"]["id"] == canary["id"], data["canary"]
        assert creds["api_secret"] not in json.dumps(p), "the canary secret leaked into an alert"
        assert data["hit"]["signature_state"] == "valid", data["hit"]
        assert data["incident"]["store_id"] == store["id"]
    first = min(t for _, _, t in alerts)
    ok("verified alerts name store %s (first receipt %+.0f ms from the return of the ccxt call; the trap may hold its answer, see docs/trap.md)"
       % (store_name, (first - answered) * 1000))

    # The 503 answered first was retried with the same webhook-id.
    first_id = rx.requests[0][0]
    assert rx.requests[0][1] == 503
    assert any(h == first_id for h, _, _ in rx.verified()), "the 503'd message was never redelivered"
    s, d = api("GET", "/v1/webhooks/%s/deliveries" % hook)
    assert s == 200, d
    by_id = {m["webhook_id"]: m for m in d["deliveries"]}
    m = by_id[first_id]
    assert m["status"] == "delivered", m
    assert [a["status_code"] for a in m["attempts"]][:2] == [503, 200], m["attempts"]
    ok("503 retried with the same webhook-id; attempts recorded")

    assert not rx.failures, "deliveries that failed verification: %r" % rx.failures
    ok("every delivery verified by standardwebhooks (%d)" % len(rx.verified()))
    rx.close()
    return checks


if __name__ == "__main__":
    try:
        n = main()
        print("%d passed, 0 failed" % len(n))
        sys.exit(0)
    except Exception:
        traceback.print_exc()
        print("FAILED")
        sys.exit(1)
