#!/usr/bin/env python3
"""End-to-end: the exchanges' own Python SDKs (from PyPI) against a running keytrap.

For each exchange given on the command line: create a store, mint a canary through the
API, point the exchange's official SDK at the trap, then read the balance, create a limit
order, find it among the open orders, cancel it and see it gone. Check that the trap
recorded hits with signature_state=valid, the right store and the read, trade and cancel
action classes, and a critical incident. Then the same key with a wrong secret: the SDK
must report the exchange's authentication error and the trap must record a low hit.

How each SDK is pointed at the trap (only where it sends requests changes):
- binance-sdk-spot: ConfigurationRestAPI(base_path=TRAP/binance); also its deprecated but
  still widely used predecessor binance-connector, Spot(base_url=TRAP/binance).
- python-okx: the `domain` argument, TRAP/okx.
- kucoin-universal-sdk: ClientOptionBuilder.set_spot_endpoint(TRAP/kucoin).
- coinbase-advanced-py: RESTClient(base_url=HOST:PORT/coinbase). The SDK always prepends
  "https://", so the run puts a TLS front (sdk_tls.py, self-signed, trusted through
  REQUESTS_CA_BUNDLE) before the trap, as a TLS-terminating proxy does in production.
- pybit: has no base-URL option (it builds https://api.{domain}.{tld} from its `domain`
  and `tld` arguments), so the run sets the `endpoint` attribute that every request of
  the session is built from, after construction.
- Kraken publishes no official Python SDK. krakenex (the long-standing, most used
  Python client) is pointed by its `uri` attribute (no constructor option). python-kraken-sdk
  (community, typed errors) has a `url` option but joins it with urljoin, which drops a
  path prefix, so it reaches the trap by Host: KEYTRAP_TRAP_HOSTS=localhost=kraken and
  url=http://localhost:PORT. It needs websockets>=14 while coinbase-advanced-py needs
  <14, so it runs from a venv of its own and is not in the default list; name it as
  `kraken/python-kraken-sdk`.
Coinbase Exchange has no official Python SDK on PyPI (cbpro and coinbasepro are
unofficial and unmaintained); ccxt_e2e.py covers it. Naming it here fails the run.

Environment: KEYTRAP_URL (API), KEYTRAP_TOKEN (admin token), KEYTRAP_TRAP_URL (trap).
Prints "N passed, M failed" and exits non-zero if anything failed.
"""

import base64
import json
import os
import secrets
import sys
import time
import traceback
import urllib.parse
import urllib.request
import uuid

API = os.environ["KEYTRAP_URL"].rstrip("/")
TOKEN = os.environ["KEYTRAP_TOKEN"]
TRAP = os.environ["KEYTRAP_TRAP_URL"].rstrip("/")


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def hits_for(canary_id):
    return api("GET", "/v1/hits?limit=1000&canary_id=" + canary_id)["hits"]


def wrong(exchange, creds):
    """The same key with a secret that is not the canary's."""
    bad = dict(creds)
    if exchange == "coinbase":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        bad["api_secret"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
    elif exchange == "kraken":
        bad["api_secret"] = base64.b64encode(secrets.token_bytes(64)).decode()
    else:
        s = creds["api_secret"]
        bad["api_secret"] = s[:-1] + ("0" if s[-1] != "0" else "1")
    return bad


def positive(x):
    try:
        return float(x) > 0
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- Binance: binance-sdk-spot


def binance_client(creds):
    from binance_sdk_spot.spot import ConfigurationRestAPI, Spot

    conf = ConfigurationRestAPI(
        api_key=creds["api_key"],
        api_secret=creds["api_secret"],
        base_path=TRAP + "/binance",
        timeout=15000,
        retries=0,
    )
    return Spot(config_rest_api=conf).rest_api


def binance_run(creds):
    c = binance_client(creds)
    account = c.get_account().data()
    assert any(positive(b.free) for b in account.balances), "empty balance: %r" % account
    order = c.new_order(
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        time_in_force="GTC",
        quantity=0.01,
        price=20000.0,
    ).data()
    oid = order.order_id
    assert oid, "order without id: %r" % order
    opens = c.get_open_orders(symbol="BTCUSDT").data()
    assert oid in [o.order_id for o in opens], "order not among open orders"
    cancelled = c.delete_order(symbol="BTCUSDT", order_id=oid).data()
    assert cancelled.status == "CANCELED", "cancel answered %r" % cancelled
    opens = c.get_open_orders(symbol="BTCUSDT").data()
    assert oid not in [o.order_id for o in opens], "cancelled order still open"


def binance_bad(creds):
    from binance_common.errors import BadRequestError

    try:
        binance_client(creds).get_account()
    except BadRequestError as e:
        # -1022: "Signature for this request is not valid."
        assert e.status_code == -1022, "error code %r" % e.status_code
        return
    raise AssertionError("get_account with a wrong secret succeeded")


# ------------------------------ Binance: binance-connector (official, deprecated, common)


def binance_connector_client(creds):
    from binance.spot import Spot

    return Spot(
        api_key=creds["api_key"], api_secret=creds["api_secret"], base_url=TRAP + "/binance"
    )


def binance_connector_run(creds):
    c = binance_connector_client(creds)
    account = c.account()
    assert any(positive(b["free"]) for b in account["balances"]), "empty balance"
    order = c.new_order(
        symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity=0.01, price=20000
    )
    oid = order["orderId"]
    assert [o["orderId"] for o in c.get_open_orders(symbol="BTCUSDT")] == [oid], "open orders"
    cancelled = c.cancel_order(symbol="BTCUSDT", orderId=oid)
    assert cancelled["status"] == "CANCELED", "cancel answered %r" % cancelled
    assert c.get_open_orders(symbol="BTCUSDT") == [], "cancelled order still open"


def binance_connector_bad(creds):
    from binance.error import ClientError

    try:
        binance_connector_client(creds).account()
    except ClientError as e:
        assert e.error_code == -1022, "error code %r" % e.error_code
        return
    raise AssertionError("account with a wrong secret succeeded")


# ---------------------------------------------------------------- Bybit: pybit


def bybit_client(creds):
    from pybit.unified_trading import HTTP

    s = HTTP(api_key=creds["api_key"], api_secret=creds["api_secret"], max_retries=1)
    s.endpoint = TRAP + "/bybit"
    return s


def bybit_run(creds):
    s = bybit_client(creds)
    wallet = s.get_wallet_balance(accountType="UNIFIED")["result"]["list"]
    coins = [c for acct in wallet for c in acct["coin"]]
    assert any(positive(c["walletBalance"]) for c in coins), "empty balance: %r" % wallet
    order = s.place_order(
        category="spot", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.01", price="20000"
    )["result"]
    oid = order["orderId"]
    assert oid, "order without id: %r" % order
    opens = s.get_open_orders(category="spot", symbol="BTCUSDT")["result"]["list"]
    assert oid in [o["orderId"] for o in opens], "order not among open orders"
    s.cancel_order(category="spot", symbol="BTCUSDT", orderId=oid)
    opens = s.get_open_orders(category="spot", symbol="BTCUSDT")["result"]["list"]
    assert oid not in [o["orderId"] for o in opens], "cancelled order still open"


def bybit_bad(creds):
    from pybit.exceptions import FailedRequestError, InvalidRequestError

    try:
        bybit_client(creds).get_wallet_balance(accountType="UNIFIED")
    except (InvalidRequestError, FailedRequestError) as e:
        # 10004: "Error sign, please check your signature generation algorithm."
        assert "10004" in str(e) or "Error sign" in str(e), "unexpected error %s" % e
        return
    raise AssertionError("get_wallet_balance with a wrong secret succeeded")


# ---------------------------------------------------------------- OKX: python-okx


def okx_clients(creds):
    import okx.Account
    import okx.Trade

    args = dict(
        api_key=creds["api_key"],
        api_secret_key=creds["api_secret"],
        passphrase=creds["passphrase"],
        flag="0",  # live trading; "1" would add x-simulated-trading
        domain=TRAP + "/okx",
        debug=False,
    )
    return okx.Account.AccountAPI(**args), okx.Trade.TradeAPI(**args)


def okx_ok(r):
    assert r.get("code") == "0", "OKX answered %r" % r
    return r["data"]


def okx_run(creds):
    account, trade = okx_clients(creds)
    bal = okx_ok(account.get_account_balance())
    details = [d for b in bal for d in b["details"]]
    assert any(positive(d.get("availBal") or d.get("cashBal")) for d in details), bal
    placed = okx_ok(
        trade.place_order(
            instId="BTC-USDT", tdMode="cash", side="buy", ordType="limit", sz="0.01", px="20000"
        )
    )
    oid = placed[0]["ordId"]
    assert oid and placed[0]["sCode"] == "0", "order answered %r" % placed
    opens = okx_ok(trade.get_order_list(instType="SPOT", instId="BTC-USDT"))
    assert oid in [o["ordId"] for o in opens], "order not among open orders"
    cancelled = okx_ok(trade.cancel_order(instId="BTC-USDT", ordId=oid))
    assert cancelled[0]["sCode"] == "0", "cancel answered %r" % cancelled
    opens = okx_ok(trade.get_order_list(instType="SPOT", instId="BTC-USDT"))
    assert oid not in [o["ordId"] for o in opens], "cancelled order still open"


def okx_bad(creds):
    # python-okx does not raise on an error answer: it returns OKX's envelope.
    account, _ = okx_clients(creds)
    r = account.get_account_balance()
    assert r.get("code") == "50113", "wrong secret answered %r" % r  # Invalid Sign


# ---------------------------------------------------------------- KuCoin: kucoin-universal-sdk


def kucoin_client(creds):
    from kucoin_universal_sdk.api.client import DefaultClient
    from kucoin_universal_sdk.model.client_option import ClientOptionBuilder
    from kucoin_universal_sdk.model.transport_option import TransportOptionBuilder

    transport = TransportOptionBuilder().set_keep_alive(True).set_max_retries(0).build()
    option = (
        ClientOptionBuilder()
        .set_key(creds["api_key"])
        .set_secret(creds["api_secret"])
        .set_passphrase(creds["passphrase"])
        .set_spot_endpoint(TRAP + "/kucoin")
        .set_futures_endpoint(TRAP + "/kucoin")
        .set_broker_endpoint(TRAP + "/kucoin")
        .set_transport_option(transport)
        .build()
    )
    return DefaultClient(option).rest_service()


def kucoin_run(creds):
    from kucoin_universal_sdk.generate.account.account import (
        GetSpotAccountListReq,
        GetSpotAccountListReqBuilder,
    )
    from kucoin_universal_sdk.generate.spot.order import (
        AddOrderReq,
        AddOrderReqBuilder,
        CancelOrderByOrderIdReqBuilder,
        GetOpenOrdersReqBuilder,
    )

    rest = kucoin_client(creds)
    accounts = (
        rest.get_account_service()
        .get_account_api()
        .get_spot_account_list(
            GetSpotAccountListReqBuilder().set_type(GetSpotAccountListReq.TypeEnum.TRADE).build()
        )
    )
    assert any(positive(a.available) for a in accounts.data), "empty balance: %r" % accounts
    orders = rest.get_spot_service().get_order_api()
    placed = orders.add_order(
        AddOrderReqBuilder()
        .set_client_oid(str(uuid.uuid4()))
        .set_side(AddOrderReq.SideEnum.BUY)
        .set_symbol("BTC-USDT")
        .set_type(AddOrderReq.TypeEnum.LIMIT)
        .set_price("20000")
        .set_size("0.01")
        .build()
    )
    oid = placed.order_id
    assert oid, "order without id: %r" % placed
    opens = orders.get_open_orders(GetOpenOrdersReqBuilder().set_symbol("BTC-USDT").build())
    assert oid in [o.id for o in opens.data], "order not among open orders"
    cancelled = orders.cancel_order_by_order_id(
        CancelOrderByOrderIdReqBuilder().set_order_id(oid).set_symbol("BTC-USDT").build()
    )
    assert cancelled.order_id == oid, "cancel answered %r" % cancelled
    opens = orders.get_open_orders(GetOpenOrdersReqBuilder().set_symbol("BTC-USDT").build())
    assert oid not in [o.id for o in opens.data or []], "cancelled order still open"


def kucoin_bad(creds):
    from kucoin_universal_sdk.generate.account.account import (
        GetSpotAccountListReq,
        GetSpotAccountListReqBuilder,
    )
    from kucoin_universal_sdk.model.common import RestError

    try:
        kucoin_client(creds).get_account_service().get_account_api().get_spot_account_list(
            GetSpotAccountListReqBuilder().set_type(GetSpotAccountListReq.TypeEnum.TRADE).build()
        )
    except RestError as e:
        # Key version 2 signs the passphrase header with the secret too, so a wrong secret
        # fails there first: 400004 "Invalid KC-API-PASSPHRASE" (or 400005, bad sign).
        assert "400004" in str(e) or "400005" in str(e), "unexpected error %s" % e
        return
    raise AssertionError("get_spot_account_list with a wrong secret succeeded")


# ---------------------------------------------------------------- Coinbase: coinbase-advanced-py

TLS = None  # the TLS front, started on first use


def coinbase_client(creds):
    global TLS
    from sdk_tls import TlsFront

    if TLS is None:
        u = urllib.parse.urlsplit(TRAP)
        TLS = TlsFront(u.hostname, u.port)
        os.environ["REQUESTS_CA_BUNDLE"] = TLS.cert
    from coinbase.rest import RESTClient

    return RESTClient(
        api_key=creds["api_key"],
        api_secret=creds["api_secret"],
        base_url="127.0.0.1:%d/coinbase" % TLS.port,
        timeout=15,
    )


def coinbase_run(creds):
    c = coinbase_client(creds)
    accounts = c.get_accounts().accounts
    assert any(positive(a.available_balance["value"]) for a in accounts), "empty balance"
    placed = c.limit_order_gtc_buy(
        client_order_id=str(uuid.uuid4()),
        product_id="BTC-USDT",
        base_size="0.01",
        limit_price="20000",
    )
    assert placed.success, "order answered %r" % placed.to_dict()
    oid = placed.success_response["order_id"]
    opens = c.list_orders(order_status=["OPEN"], product_ids=["BTC-USDT"]).orders
    assert oid in [o.order_id for o in opens], "order not among open orders"
    results = c.cancel_orders(order_ids=[oid]).results
    assert [r["success"] for r in results] == [True], "cancel answered %r" % results
    opens = c.list_orders(order_status=["OPEN"], product_ids=["BTC-USDT"]).orders
    assert oid not in [o.order_id for o in opens], "cancelled order still open"


def coinbase_bad(creds):
    import logging

    import requests

    # The SDK logs every HTTP error at ERROR level; this one is expected.
    logging.getLogger("coinbase.RESTClient").setLevel(logging.CRITICAL)
    try:
        coinbase_client(creds).get_accounts()
    except requests.exceptions.HTTPError as e:
        assert e.response.status_code == 401, "status %r" % e.response.status_code
        return
    raise AssertionError("get_accounts with a wrong key succeeded")


# ---------------------------------------------------------------- Kraken: krakenex


def kraken_client(creds):
    import krakenex

    k = krakenex.API(key=creds["api_key"], secret=creds["api_secret"])
    k.uri = TRAP + "/kraken"
    return k


def kraken_ok(r):
    assert not r.get("error"), "Kraken answered %r" % r
    return r["result"]


def kraken_run(creds):
    k = kraken_client(creds)
    balance = kraken_ok(k.query_private("Balance"))
    assert any(positive(v) for v in balance.values()), "empty balance: %r" % balance
    placed = kraken_ok(
        k.query_private(
            "AddOrder",
            {
                "pair": "XBTUSDT",
                "type": "buy",
                "ordertype": "limit",
                "price": "20000",
                "volume": "0.01",
            },
        )
    )
    (txid,) = placed["txid"]
    opens = kraken_ok(k.query_private("OpenOrders"))["open"]
    assert txid in opens, "order not among open orders"
    cancelled = kraken_ok(k.query_private("CancelOrder", {"txid": txid}))
    assert cancelled["count"] == 1, "cancel answered %r" % cancelled
    opens = kraken_ok(k.query_private("OpenOrders"))["open"]
    assert txid not in opens, "cancelled order still open"
    k.close()


def kraken_bad(creds):
    # krakenex returns Kraken's envelope; the error is in its "error" list.
    r = kraken_client(creds).query_private("Balance")
    assert r.get("error") == ["EAPI:Invalid signature"], "wrong secret answered %r" % r


# ------------------------------------- Kraken: python-kraken-sdk (host-routed trap)


def kraken_sdk_url():
    """python-kraken-sdk joins its `url` option and "/0/private/..." with urljoin, which
    drops any path prefix, so it reaches the trap by Host instead: the run sets
    KEYTRAP_TRAP_HOSTS=localhost=kraken and the client gets http://localhost:PORT."""
    hosts = os.environ.get("KEYTRAP_TRAP_HOSTS", "")
    if "localhost=kraken" not in hosts.split(","):
        raise AssertionError("run with KEYTRAP_TRAP_HOSTS=localhost=kraken")
    return "http://localhost:%d" % urllib.parse.urlsplit(TRAP).port


def kraken_sdk_run(creds):
    from kraken.spot import Trade, User

    user = User(key=creds["api_key"], secret=creds["api_secret"], url=kraken_sdk_url())
    trade = Trade(key=creds["api_key"], secret=creds["api_secret"], url=kraken_sdk_url())
    balance = user.get_account_balance()
    assert any(positive(v) for v in balance.values()), "empty balance: %r" % balance
    placed = trade.create_order(
        ordertype="limit", side="buy", pair="XBTUSDT", volume="0.01", price="20000"
    )
    (txid,) = placed["txid"]
    assert txid in user.get_open_orders()["open"], "order not among open orders"
    cancelled = trade.cancel_order(txid=txid)
    assert cancelled["count"] == 1, "cancel answered %r" % cancelled
    assert txid not in user.get_open_orders()["open"], "cancelled order still open"


def kraken_sdk_bad(creds):
    from kraken.exceptions import KrakenInvalidSignatureError
    from kraken.spot import User

    try:
        user = User(key=creds["api_key"], secret=creds["api_secret"], url=kraken_sdk_url())
        user.get_account_balance()
    except KrakenInvalidSignatureError:
        return
    raise AssertionError("get_account_balance with a wrong secret succeeded")


# name -> (PyPI package, run, wrong-secret run, what its requests' User-Agent starts
# with: the recorded evidence must show which client it was).
SDKS = {
    "binance": ("binance-sdk-spot", binance_run, binance_bad, "binance-sdk-spot/"),
    "binance/binance-connector": (
        "binance-connector",
        binance_connector_run,
        binance_connector_bad,
        "binance-connector-python/",
    ),
    "bybit": ("pybit", bybit_run, bybit_bad, "python-requests/"),  # pybit sets none
    "okx": ("python-okx", okx_run, okx_bad, "python-httpx/"),  # python-okx sets none
    "kucoin": ("kucoin-universal-sdk", kucoin_run, kucoin_bad, "Kucoin-Universal-Python-SDK/"),
    "coinbase": ("coinbase-advanced-py", coinbase_run, coinbase_bad, "coinbase-advanced-py/"),
    "kraken": ("krakenex", kraken_run, kraken_bad, "krakenex/"),
    # Not in the default list: it needs websockets>=14, coinbase-advanced-py <14, so it
    # runs from its own venv (see e2e/README or .ci/run).
    "kraken/python-kraken-sdk": (
        "python-kraken-sdk",
        kraken_sdk_run,
        kraken_sdk_bad,
        "btschwertfeger/python-kraken-sdk",
    ),
}
DEFAULT = ["binance", "binance/binance-connector", "bybit", "okx", "kucoin", "coinbase", "kraken"]


def check(name):
    _, run, bad, agent = SDKS[name]
    exchange = name.split("/")[0]
    store = api(
        "POST",
        "/v1/stores",
        {"name": "sdk-e2e-%s-%d" % (exchange, time.time_ns()), "kind": "database"},
    )
    canary = api("POST", "/v1/canaries", {"exchange": exchange, "store_id": store["id"]})[
        "canaries"
    ][0]
    creds = canary["credentials"]

    run(creds)

    hits = hits_for(canary["id"])
    assert hits, "no hits recorded"
    states = {h["signature_state"] for h in hits}
    assert states == {"valid"}, "signature states %r" % states
    assert {h["store_id"] for h in hits} == {store["id"]}
    classes = {h["action_class"] for h in hits}
    for c in ("read", "trade", "cancel"):
        assert c in classes, "no %s hit among %r" % (c, classes)
    agents = {h["user_agent"] for h in hits}
    assert all(a and a.startswith(agent) for a in agents), "user agents %r" % agents
    trades = [h for h in hits if h["action_class"] == "trade"]
    assert len(trades) == 1, "%d trade hits" % len(trades)
    params = json.dumps(trades[0]["action_params"])
    assert ("BTC" in params or "XBT" in params) and "20000" in params, "order params " + params
    incidents = api("GET", "/v1/incidents?store_id=" + store["id"])["incidents"]
    kinds = {(i["kind"], i["severity"]) for i in incidents}
    assert ("canary", "critical") in kinds and ("store", "critical") in kinds, kinds

    bad(wrong(exchange, creds))
    low = [h for h in hits_for(canary["id"]) if h["signature_state"] != "valid"]
    assert low and all(h["severity"] == "low" for h in low), "no low hit for the wrong secret"
    return len(hits)


def main(exchanges):
    passed = failed = 0
    for x in exchanges:
        if x not in SDKS:
            print("FAIL %s: no official Python SDK is tested for it" % x, flush=True)
            failed += 1
            continue
        try:
            n = check(x)
            print("PASS %s with %s (%d valid hits)" % (x, SDKS[x][0], n), flush=True)
            passed += 1
        except Exception:
            print("FAIL %s with %s" % (x, SDKS[x][0]), flush=True)
            traceback.print_exc()
            failed += 1
    if TLS is not None:
        TLS.close()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1:] or DEFAULT))
