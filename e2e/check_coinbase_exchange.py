#!/usr/bin/env python3
"""End-to-end check of the Coinbase Exchange (legacy Pro) trap emulator with ccxt.

Usage:
    check_coinbase_exchange.py BASE_URL API_KEY SECRET PASSPHRASE
    (or env KT_BASE_URL, KT_API_KEY, KT_API_SECRET, KT_API_PASSPHRASE)

BASE_URL is where the trap serves Coinbase Exchange, e.g.
http://127.0.0.1:8701/coinbase-exchange. Runs load_markets, fetch_balance, create_order
(small limit buy), fetch_open_orders, fetch_order, cancel_order, create_deposit_address
and withdraw (accepted by the trap, never executed). Exits non-zero on failure.
"""
import os
import sys

import ccxt


def arg(i, env, default=None):
    return sys.argv[i] if len(sys.argv) > i else os.environ.get(env, default)


def main():
    base = arg(1, "KT_BASE_URL", "http://127.0.0.1:8701/coinbase-exchange").rstrip("/")
    key, secret, password = arg(2, "KT_API_KEY"), arg(3, "KT_API_SECRET"), arg(4, "KT_API_PASSPHRASE")
    if not (key and secret and password):
        print(__doc__)
        return 2
    ex = ccxt.coinbaseexchange({
        "apiKey": key, "secret": secret, "password": password,
        "urls": {"api": {"public": base, "private": base}},
        "timeout": 10000,
    })
    markets = ex.load_markets()
    assert "BTC/USD" in markets and "ETH/USDT" in markets, "markets listed"
    print("load_markets:", len(markets), "markets")
    print("fetch_time:", ex.fetch_time())

    bal = ex.fetch_balance()
    assert bal["total"].get("USDT", 0) > 0, "funded USDT"
    print("fetch_balance:", {k: v for k, v in bal["total"].items() if v})

    t = ex.fetch_ticker("BTC/USD")
    price = round(t["last"] * 0.8, 2)
    order = ex.create_order("BTC/USD", "limit", "buy", 0.001, price)
    assert order["id"], "order id"
    print("create_order:", order["id"], order["status"])

    opened = ex.fetch_open_orders()
    assert any(o["id"] == order["id"] for o in opened), "open order listed"
    o = ex.fetch_order(order["id"])
    assert o["status"] == "open" and o["price"] == price and o["amount"] == 0.001, o
    print("fetch_open_orders:", len(opened), "fetch_order:", o["status"], o["symbol"], o["price"])

    ex.cancel_order(order["id"])
    assert not any(x["id"] == order["id"] for x in ex.fetch_open_orders()), "cancelled"
    print("cancel_order: ok")

    addr = ex.create_deposit_address("USDT")
    assert addr["address"], addr
    print("deposit address:", addr["address"])

    w = ex.withdraw("USDT", 25, "0x9b1ab0a7e2f8f1f7d0b1b0c4d1e2f3a4b5c6d7e8")
    assert w["id"], w
    print("withdraw:", w["id"], w["status"], w["amount"], w["currency"])
    print("OK")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report any failure as non-zero exit
        print("FAILED:", type(e).__name__, e)
        sys.exit(1)
