#!/usr/bin/env python3
"""Crash test: kill -9 keytrap while canary hits stream in; no acknowledged hit is lost.

Starts a real `keytrap serve` (SQLite, or PostgreSQL with --postgres URL), mints Binance
canaries through the API, and drives signed requests at the trap from several threads;
every request carries a unique marker in its query. In the middle of the stream the
server is killed with SIGKILL (no shutdown, no flush), restarted on the same database,
and this is repeated. At the end every marker whose response the client received (HTTP
200, a validly signed canary request) must appear in a recorded hit.

With --alerts, a webhook endpoint pointing at a local receiver (which verifies every
delivery with the `standardwebhooks` package) is registered too, and open incidents are
resolved before each round so every round opens new ones (their alerts are in flight
when the kill comes). After the last restart, within a bounded wait, the incident of
every acknowledged hit must have had its `incident.opened` delivered and every store
incident its `store.compromised`.

Usage: crash_test.py BINARY [--postgres URL] [--rounds 3] [--seconds 2] [--alerts]
Prints "N passed, M failed"; exits non-zero on failure.
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Keytrap:
    def __init__(self, binary, env, workdir):
        self.binary, self.env, self.workdir = binary, env, workdir
        self.proc = None
        self.api = "http://" + env["KEYTRAP_API_LISTEN"]
        self.trap = "http://" + env["KEYTRAP_TRAP_LISTEN"]

    def start(self):
        log = open(os.path.join(self.workdir, "stderr.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve"], env=self.env, cwd=self.workdir,
            stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("keytrap exited at start; see " + log.name)
            try:
                with urllib.request.urlopen(self.api + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise SystemExit("keytrap did not become ready")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.env["KEYTRAP_ADMIN_TOKEN"])
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


def signed_query(secret, marker):
    q = "recvWindow=10000&timestamp=%d&marker=%s" % (int(time.time() * 1000), marker)
    sig = hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
    return q + "&signature=" + sig


def hammer(trap, canaries, stop, acked, sent, lock, tid):
    """Sends signed account reads until told to stop or the server dies."""
    seq = 0
    while not stop.is_set():
        key, secret = random.choice(canaries)
        marker = "m%d_%d_%d" % (tid, seq, random.getrandbits(32))
        seq += 1
        req = urllib.request.Request(
            trap + "/binance/api/v3/account?" + signed_query(secret, marker))
        req.add_header("X-MBX-APIKEY", key)
        with lock:
            sent[0] += 1
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
                if r.status == 200 and b"balances" in body:
                    with lock:
                        acked.add(marker)
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            # The server died mid-request: no answer, no promise.
            time.sleep(0.01)


def recorded_markers(kt, canary_ids, per_incident=None):
    """marker -> the incident id of its hit; counts every hit per incident into
    `per_incident` when given."""
    found = {}
    for cid in canary_ids:
        after = None
        while True:
            path = "/v1/hits?limit=1000&canary_id=" + cid + ("&after=" + after if after else "")
            page = kt.call("GET", path)
            for h in page["hits"]:
                if per_incident is not None:
                    per_incident[h.get("incident_id")] = per_incident.get(h.get("incident_id"), 0) + 1
                for part in (h.get("query") or "").split("&"):
                    if part.startswith("marker="):
                        found[part[len("marker="):]] = h.get("incident_id")
            after = page.get("next_after")
            if not after:
                break
    return found


def check_alerts(rx, acked, found, incidents, wait):
    """Every acknowledged hit's incident has its incident.opened delivered, every store
    incident its store.compromised (waits up to `wait` seconds for the worker)."""
    canary_incidents = {found[m] for m in acked if found.get(m)}
    store_incidents = {i["id"] for i in incidents if i["kind"] == "store"}
    if not canary_incidents:
        return False, "FAIL: acknowledged hits carry no incident"

    def delivered(kind):
        return {(p.get("data") or {}).get("incident", {}).get("id")
                for _, p, _ in rx.verified() if p.get("type") == kind}

    def missing():
        return (canary_incidents - delivered("incident.opened"),
                store_incidents - delivered("store.compromised"))

    deadline = time.time() + wait
    while time.time() < deadline and any(missing()):
        time.sleep(0.2)
    m_canary, m_store = missing()
    if rx.failures:
        return False, "FAIL: deliveries failed verification: %r" % rx.failures[:3]
    if m_canary or m_store:
        return False, ("FAIL: alerts not delivered within %.0fs: %d incident.opened, %d store.compromised"
                       % (wait, len(m_canary), len(m_store)))
    ids = [h for h, _, _ in rx.verified()]
    return True, ("alerts: %d incidents of acknowledged hits and %d store incidents all delivered "
                  "(%d verified deliveries, %d distinct webhook-ids)"
                  % (len(canary_incidents), len(store_incidents), len(ids), len(set(ids))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--postgres")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--alerts", action="store_true")
    ap.add_argument("--alert-wait", type=float, default=90.0)
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)

    workdir = tempfile.mkdtemp(prefix="keytrap-crash-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTRAP_")}
    env.update({
        "KEYTRAP_API_LISTEN": "127.0.0.1:%d" % free_port(),
        "KEYTRAP_TRAP_LISTEN": "127.0.0.1:%d" % free_port(),
        "KEYTRAP_ADMIN_TOKEN": "keytrap_crash_" + os.urandom(16).hex(),
        "KEYTRAP_MASTER_KEY": subprocess.check_output([args.binary, "gen-master-key"]).decode().strip(),
        "KEYTRAP_DATABASE_URL": args.postgres or "sqlite://" + os.path.join(workdir, "keytrap.db"),
        "KEYTRAP_LOG": "warn",
    })
    rx = None
    if args.alerts:
        from webhook_receiver import Receiver

        rx = Receiver()
        # The receiver is on loopback; retries fast so the bounded wait stays short.
        env["KEYTRAP_WEBHOOK_ALLOW_CIDRS"] = "127.0.0.0/8"
        env["KEYTRAP_WEBHOOK_RETRY_SCALE"] = "0.01"
    kt = Keytrap(args.binary, env, workdir)
    passed = failed = 0
    try:
        kt.start()
        store = kt.call("POST", "/v1/stores", {"name": "crash-store", "kind": "database"})
        minted = kt.call("POST", "/v1/canaries",
                         {"exchange": "binance", "store_id": store["id"], "count": 4})
        canaries = [(c["credentials"]["api_key"], c["credentials"]["api_secret"])
                    for c in minted["canaries"]]
        ids = [c["id"] for c in minted["canaries"]]
        if rx:
            hook = kt.call("POST", "/v1/webhooks", {"url": rx.url})
            rx.secret = hook["secret"]
        acked, sent, lock = set(), [0], threading.Lock()
        for rnd in range(args.rounds):
            if rx:
                for i in kt.call("GET", "/v1/incidents?status=open&limit=1000")["incidents"]:
                    kt.call("POST", "/v1/incidents/%s/resolve" % i["id"], {})
            stop = threading.Event()
            threads = [threading.Thread(target=hammer,
                                        args=(kt.trap, canaries, stop, acked, sent, lock, i))
                       for i in range(args.threads)]
            for t in threads:
                t.start()
            # Kill at a random moment inside the stream.
            time.sleep(args.seconds * random.uniform(0.5, 1.0))
            kt.kill9()
            stop.set()
            for t in threads:
                t.join()
            print("round %d: killed -9 with %d requests sent, %d acknowledged so far"
                  % (rnd + 1, sent[0], len(acked)), flush=True)
            kt.start()
        per_incident = {}
        found = recorded_markers(kt, ids, per_incident)
        lost = acked - set(found)
        print("acknowledged hits: %d, recorded: %d, lost: %d" % (len(acked), len(found), len(lost)))
        if not acked:
            print("FAIL: no request was acknowledged; the test proved nothing")
            failed += 1
        elif lost:
            print("FAIL: acknowledged but not recorded: %s" % sorted(lost)[:10])
            failed += 1
        else:
            passed += 1
        # Hits recorded but not acknowledged are fine (the answer was lost in the kill).
        incidents = kt.call("GET", "/v1/incidents?limit=1000")["incidents"]
        if any(i["kind"] == "store" and i["store_id"] == store["id"] for i in incidents):
            passed += 1
        else:
            print("FAIL: no store incident for the crash store")
            failed += 1
        # Every canary incident counts exactly its hits, whatever the kills interrupted
        # (on SQLite: counts folded under load are recounted at the next start).
        wrong = [(i["id"], i["hit_count"], per_incident.get(i["id"], 0))
                 for i in incidents if i["kind"] == "canary"
                 and i["hit_count"] != per_incident.get(i["id"], 0)]
        if wrong:
            print("FAIL: canary incidents whose hit_count is not their hits' (id, count, hits): %s"
                  % wrong[:5])
            failed += 1
        else:
            print("incident counts: %d canary incidents, each counting exactly its hits"
                  % sum(1 for i in incidents if i["kind"] == "canary"))
            passed += 1
        if rx:
            ok, why = check_alerts(rx, acked, found, incidents, args.alert_wait)
            print(why, flush=True)
            passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)
    finally:
        kt.stop()
        if rx:
            rx.close()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
