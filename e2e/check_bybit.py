#!/usr/bin/env python3
"""ccxt against the keytrap Bybit emulator: the trap is right when ccxt works unchanged.

Usage: check_bybit.py BASE_URL API_KEY SECRET
   or: KEYTRAP_BASE_URL=... KEYTRAP_API_KEY=... KEYTRAP_API_SECRET=... check_bybit.py
BASE_URL is the trap's Bybit base, e.g. http://127.0.0.1:8701/bybit.

Runs load_markets, fetch_balance, create_order (a small limit buy), fetch_open_orders,
cancel_order, plus fetch_time, fetch_deposit_address and a wrong-secret call that must
fail with AuthenticationError. Exits non-zero on the first failure.
"""

import os
import sys

import ccxt


def arg(i, env):
    if len(sys.argv) > i:
        return sys.argv[i]
    v = os.environ.get(env)
    if not v:
        sys.exit(f"usage: {sys.argv[0]} BASE_URL API_KEY SECRET (or ${env})")
    return v


def client(base, key, secret):
    ex = ccxt.bybit({"apiKey": key, "secret": secret, "timeout": 20000})
    # Every ccxt URL key of Bybit points at the trap (ccxt deep-merges urls).
    ex.urls["api"] = {k: base for k in ex.urls["api"]}
    return ex


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok  {what}")


def main():
    base = arg(1, "KEYTRAP_BASE_URL").rstrip("/")
    key = arg(2, "KEYTRAP_API_KEY")
    secret = arg(3, "KEYTRAP_API_SECRET")
    ex = client(base, key, secret)

    t = ex.fetch_time()
    check(abs(t - ex.milliseconds()) < 60_000, f"fetch_time {t}")

    markets = ex.load_markets()
    check("BTC/USDT" in markets, f"load_markets: {len(markets)} markets, BTC/USDT present")
    m = markets["BTC/USDT"]
    check(m["precision"]["amount"] and m["precision"]["price"], "BTC/USDT precision")
    check("USDT" in ex.currencies, f"currencies: {len(ex.currencies)}")

    bal = ex.fetch_balance()
    usdt = bal.get("USDT", {}).get("total") or 0
    check(usdt > 0, f"fetch_balance: USDT total {usdt}")

    order = ex.create_order("BTC/USDT", "limit", "buy", 0.001, 50000)
    oid = order["id"]
    check(bool(oid), f"create_order id {oid}")

    open_orders = ex.fetch_open_orders("BTC/USDT")
    mine = [o for o in open_orders if o["id"] == oid]
    check(len(mine) == 1, f"fetch_open_orders: {len(open_orders)} open, ours present")
    o = mine[0]
    check(o["symbol"] == "BTC/USDT" and o["side"] == "buy" and o["status"] == "open",
          f"open order parsed: {o['symbol']} {o['side']} {o['amount']} @ {o['price']} {o['status']}")

    ex.cancel_order(oid, "BTC/USDT")
    left = [o for o in ex.fetch_open_orders("BTC/USDT") if o["id"] == oid]
    check(not left, "cancel_order: order no longer open")

    addr = ex.fetch_deposit_address("USDT", {"network": "TRC20"})
    check(addr["address"].startswith("T"), f"fetch_deposit_address USDT/TRC20 {addr['address']}")

    bad = client(base, key, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    bad.markets, bad.currencies = ex.markets, ex.currencies
    bad.markets_by_id, bad.currencies_by_id = ex.markets_by_id, ex.currencies_by_id
    try:
        bad.fetch_balance()
        check(False, "wrong secret must be refused")
    except ccxt.AuthenticationError as e:
        check(True, f"wrong secret refused: {str(e)[:90]}")

    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        print(f"FAIL {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
