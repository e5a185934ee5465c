#!/usr/bin/env python3
"""End-to-end: plant canaries into a users' key table, use one through real ccxt at the
trap, and see the incident and the placement name that store, table and row.

1. A SQLite database shaped like a platform's `exchange_api_keys` table, with real-looking
   rows already in it.
2. `keytrap plant db --apply` (the real CLI) inserts three Binance canaries into it and
   records the placements.
3. The script reads the planted rows back the way a thief with a dump would, and calls the
   trap with ccxt using one of them (fetch_balance, create_order).
4. keytrap must show: a store incident for `users-db`, the hits with a valid signature,
   and the placement naming the table and the row's primary key.

Environment (set by e2e/run.sh): KEYTRAP_URL, KEYTRAP_TOKEN, KEYTRAP_TRAP_URL; optional
KEYTRAP_BIN (default target/debug/keytrap). Prints "N passed, M failed".
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request

import ccxt

API = os.environ["KEYTRAP_URL"].rstrip("/")
TOKEN = os.environ["KEYTRAP_TOKEN"]
TRAP = os.environ["KEYTRAP_TRAP_URL"].rstrip("/")
BIN = os.path.abspath(os.environ.get("KEYTRAP_BIN", "target/debug/keytrap"))


def api(path):
    req = urllib.request.Request(API + path)
    req.add_header("Authorization", "Bearer " + TOKEN)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def rewrite(urls, base):
    if isinstance(urls, dict):
        return {k: rewrite(v, base) for k, v in urls.items()}
    if isinstance(urls, str):
        return re.sub(r"^https?://[^/]+", base, urls)
    return urls


def main():
    passed, failed = 0, 0

    def check(ok, what):
        nonlocal passed, failed
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if ok:
            passed += 1
        else:
            failed += 1

    d = tempfile.mkdtemp(prefix="keytrap-plant-e2e-")
    path = os.path.join(d, "users.db")
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE exchange_api_keys (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
        " exchange TEXT NOT NULL, label TEXT, api_key TEXT NOT NULL UNIQUE,"
        " api_secret TEXT NOT NULL, created_at TEXT NOT NULL)")
    for i in range(5):
        db.execute(
            "INSERT INTO exchange_api_keys (user_id, exchange, label, api_key, api_secret, created_at)"
            " VALUES (?, 'binance', 'main', ?, ?, '2026-10-0%d 12:00:00')" % (i + 1),
            (41_000 + i, "real-key-%d" % i, "real-secret-%d" % i))
    db.commit()
    db.close()

    env = dict(os.environ, KEYTRAP_URL=API, KEYTRAP_TOKEN=TOKEN)
    cmd = [BIN, "plant", "db", "--url", "sqlite://" + path, "--table", "exchange_api_keys",
           "--map", "user_id={user_id},exchange={exchange},label={label},api_key={api_key},"
                    "api_secret={api_secret},created_at={created_at}",
           "--exchange", "binance", "--store", "users-db", "--create-store", "--count", "3",
           "--apply"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, "keytrap plant db --apply exits 0 (%s)" % out.stderr.strip()[-300:])

    db = sqlite3.connect(path)
    rows = db.execute("SELECT id, api_key, api_secret FROM exchange_api_keys ORDER BY id").fetchall()
    db.close()
    planted = rows[5:]
    check(len(rows) == 8 and len(planted) == 3, "three canary rows added after the five real ones")
    if not planted:
        print("%d passed, %d failed" % (passed, failed + 1))
        sys.exit(1)
    row_id, key, secret = planted[1]

    ex = ccxt.binance({"apiKey": key, "secret": secret, "enableRateLimit": False, "timeout": 15000})
    ex.urls["api"] = rewrite(ex.urls["api"], TRAP + "/binance")
    try:
        ex.load_markets()
        bal = ex.fetch_balance()
        check(bal.get("total", {}).get("USDT", 0) > 0, "ccxt fetch_balance with the planted key sees a funded account")
        order = ex.create_order("BTC/USDT", "limit", "buy", 0.001, 20000)
        check(bool(order.get("id")), "ccxt create_order is accepted")
    except Exception as e:  # noqa: BLE001 - report any client failure as a check
        check(False, "ccxt calls with the planted key: %r" % e)

    stores = api("/v1/stores")
    store = next((s for s in stores.get("stores", stores if isinstance(stores, list) else [])
                  if s["name"] == "users-db"), None)
    check(store is not None, "store users-db exists")
    if store:
        incidents = api("/v1/incidents?store_id=" + store["id"])["incidents"]
        store_inc = [i for i in incidents if i["kind"] == "store"]
        check(len(store_inc) == 1 and store_inc[0]["severity"] == "critical",
              "a critical store incident for users-db (the order)")
        hits = api("/v1/hits?store_id=" + store["id"])["hits"]
        check(hits and all(h["signature_state"] == "valid" for h in hits), "every hit has a valid signature")
        places = api("/v1/placements?store_id=" + store["id"])["placements"]
        mine = [p for p in places if p.get("row_key") == "id=%d" % row_id]
        check(len(places) == 3, "three placements recorded")
        check(len(mine) == 1 and mine[0]["location"] == "exchange_api_keys"
              and mine[0]["canary_id"] in {h["canary_id"] for h in hits},
              "the used key's placement names the table and row id=%d" % row_id)

    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
