#!/usr/bin/env python3
"""End-to-end check of the Coinbase Advanced Trade trap emulator with ccxt.

Usage:
    check_coinbase.py BASE_URL [API_KEY_NAME] [PEM_FILE]
    (or env KT_BASE_URL, KT_API_KEY, KT_API_SECRET (the PEM itself) / KT_API_SECRET_FILE)

BASE_URL is where the trap serves Coinbase, e.g. http://127.0.0.1:8701/coinbase.
Runs load_markets, fetch_balance (v2 and v3), create_order (small limit buy),
fetch_open_orders, fetch_order, cancel_order, a deposit-address listing and a withdraw
(which the trap accepts and never executes). Exits non-zero on the first failure.
"""
import os
import sys

import ccxt


def arg(i, env, default=None):
    return sys.argv[i] if len(sys.argv) > i else os.environ.get(env, default)


def main():
    base = arg(1, "KT_BASE_URL", "http://127.0.0.1:8701/coinbase").rstrip("/")
    key = arg(2, "KT_API_KEY")
    pem_file = arg(3, "KT_API_SECRET_FILE")
    secret = open(pem_file).read() if pem_file else os.environ.get("KT_API_SECRET")
    if not key or not secret:
        print(__doc__)
        return 2
    ex = ccxt.coinbase({
        "apiKey": key,
        "secret": secret,
        "urls": {"api": {"rest": base}},
        "timeout": 10000,
    })
    markets = ex.load_markets()
    assert "BTC/USD" in markets and "ETH/USDT" in markets, "markets listed"
    m = markets["BTC/USD"]
    assert m["precision"]["amount"] and m["precision"]["price"], "precision"
    print("load_markets:", len(markets), "markets; fee", m["taker"])

    bal = ex.fetch_balance()
    assert bal["total"].get("USDT", 0) > 0, "funded USDT"
    print("fetch_balance (v2):", {k: v for k, v in bal["total"].items() if v})
    bal3 = ex.fetch_balance({"v3": True})
    assert bal3["total"].get("USDT") == bal["total"].get("USDT"), "v2 and v3 agree"

    price = round(m["info"] and float(m["info"]["price"]) * 0.8, 2)
    order = ex.create_order("BTC/USD", "limit", "buy", 0.001, price)
    assert order["id"], "order id"
    print("create_order:", order["id"], order["clientOrderId"])

    opened = ex.fetch_open_orders()
    assert any(o["id"] == order["id"] for o in opened), "open order listed"
    o = ex.fetch_order(order["id"])
    assert o["status"] == "open" and o["price"] == price and o["amount"] == 0.001, o
    print("fetch_open_orders:", len(opened), "fetch_order:", o["status"], o["symbol"], o["price"])

    ex.cancel_order(order["id"])
    opened = ex.fetch_open_orders()
    assert not any(x["id"] == order["id"] for x in opened), "cancelled"
    print("cancel_order: ok")

    perms = ex.v3PrivateGetBrokerageKeyPermissions()
    assert perms["can_trade"] and perms["can_transfer"], perms
    accounts = ex.fetch_accounts()
    usdt = next(a for a in accounts if a["code"] == "USDT")
    addrs = ex.fetch_deposit_addresses_by_network("USDT", {"account_id": usdt["id"]})
    assert addrs, "deposit addresses"
    print("deposit addresses:", {k: v["address"] for k, v in addrs.items()})

    w = ex.withdraw("USDT", 25, "0x9b1ab0a7e2f8f1f7d0b1b0c4d1e2f3a4b5c6d7e8")
    assert w["id"] and w["status"] == "pending", w
    print("withdraw:", w["id"], w["status"], w["amount"], w["currency"])
    print("OK")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report any failure as non-zero exit
        print("FAILED:", type(e).__name__, e)
        sys.exit(1)
