#!/usr/bin/env python3
"""Runs ccxt's Binance client against a keytrap trap and checks it carries on unchanged.

Usage:
    check_binance.py BASE_URL API_KEY SECRET [PASSPHRASE]
or with KT_BASE_URL, KT_API_KEY, KT_API_SECRET in the environment.

BASE_URL is where the trap serves Binance, e.g. http://127.0.0.1:8701/binance (prefix
routing) or http://binance.trap.example:8701 (host routing). The passphrase is ignored
(Binance has none). Exits non-zero on the first failure.

Sequence (what an attacker with a stolen key does): load_markets() (signed sapi calls
inside), fetch_balance(), create_order() (a small limit buy well under the market),
fetch_open_orders(), cancel_order(), plus the checks attackers make: API key restrictions
and a deposit address.
"""

import os
import sys

import ccxt


def arg(i, env):
    if len(sys.argv) > i:
        return sys.argv[i]
    v = os.environ.get(env)
    if not v:
        sys.exit(f"usage: {sys.argv[0]} BASE_URL API_KEY SECRET [PASSPHRASE] (or ${env})")
    return v


def client(base, key, secret):
    base = base.rstrip("/")
    ex = ccxt.binance({"apiKey": key, "secret": secret, "enableRateLimit": False})
    # ccxt deep-merges urls: override every Binance API base it may use, so nothing
    # reaches the real exchange.
    api = ex.urls["api"]
    for name, url in list(api.items()):
        if not isinstance(url, str):
            continue
        # https://api.binance.com/api/v3 -> BASE/api/v3, https://fapi.binance.com/fapi/v1 -> BASE/fapi/v1
        rest = url.split("://", 1)[1].split("/", 1)
        api[name] = base + ("/" + rest[1] if len(rest) > 1 else "")
    return ex


def main():
    base = arg(1, "KT_BASE_URL")
    key = arg(2, "KT_API_KEY")
    secret = arg(3, "KT_API_SECRET")
    ex = client(base, key, secret)

    def check(cond, what):
        if not cond:
            print(f"FAIL: {what}")
            sys.exit(1)
        print(f"ok   {what}")

    server_time = ex.fetch_time()
    check(isinstance(server_time, int) and server_time > 1_600_000_000_000, "fetch_time")

    markets = ex.load_markets()
    check("BTC/USDT" in markets and markets["BTC/USDT"]["active"], "load_markets: BTC/USDT active")
    check(markets["BTC/USDT"]["precision"]["price"] is not None, "load_markets: precision")
    check("USDT" in ex.currencies and ex.currencies["USDT"]["networks"], "load_markets: currencies with networks")

    balance = ex.fetch_balance()
    usdt = balance.get("USDT", {}).get("free") or 0
    check(usdt > 0, f"fetch_balance: USDT free {usdt}")

    ticker = ex.fetch_ticker("BTC/USDT")
    check(ticker["last"] and ticker["last"] > 0, f"fetch_ticker: last {ticker['last']}")

    price = float(ex.price_to_precision("BTC/USDT", ticker["last"] * 0.5))
    amount = float(ex.amount_to_precision("BTC/USDT", 20 / price))
    order = ex.create_order("BTC/USDT", "limit", "buy", amount, price)
    check(order["id"] and order["status"] == "open", f"create_order: id {order['id']} status {order['status']}")

    open_orders = ex.fetch_open_orders("BTC/USDT")
    check(any(o["id"] == order["id"] for o in open_orders), f"fetch_open_orders: {len(open_orders)} open")

    fetched = ex.fetch_order(order["id"], "BTC/USDT")
    check(fetched["id"] == order["id"] and fetched["amount"] == amount, "fetch_order")

    cancelled = ex.cancel_order(order["id"], "BTC/USDT")
    check(cancelled["status"] == "canceled", f"cancel_order: {cancelled['status']}")
    check(not any(o["id"] == order["id"] for o in ex.fetch_open_orders("BTC/USDT")), "order gone from open orders")

    restrictions = ex.sapi_get_account_apirestrictions()
    check(restrictions.get("enableWithdrawals") is True, "apiRestrictions: withdrawals enabled")

    address = ex.fetch_deposit_address("USDT", {"network": "TRC20"})
    check(address["address"], f"fetch_deposit_address: {address['address']}")

    trades = ex.fetch_my_trades("BTC/USDT")
    check(isinstance(trades, list), "fetch_my_trades")

    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except ccxt.BaseError as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        sys.exit(1)
