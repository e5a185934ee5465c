"""Prints KuCoin request signatures produced offline by ccxt's own sign() (no network),
with a pinned timestamp, for the Rust unit tests (kucoin.rs CCXT_VECTORS)."""
import ccxt

ex = ccxt.kucoin({'apiKey': '5c2db93503aa674c74a31734',
                  'secret': 'f03a5284-5c39-4aaa-9b20-dea10bdcf8e3',
                  'password': 'Passw0rd!x'})
ex.nonce = lambda: 1795290967216
cases = [
    ('accounts', ['private'], 'GET', {'type': 'trade'}),
    ('orders', ['private'], 'GET', {'status': 'active', 'tradeType': 'TRADE'}),
    ('orders', ['private'], 'POST', {'clientOid': 'd602d73f-5424-4751-bef0-8debce8f0a82', 'side': 'buy',
                                     'symbol': 'BTC-USDT', 'type': 'limit', 'size': '0.001', 'price': '50000'}),
    ('orders/{orderId}', ['private'], 'DELETE', {'orderId': '63c97e47d686c5000159a656'}),
    ('withdrawals', ['private'], 'POST', {'currency': 'USDT', 'toAddress': 'TXyz', 'withdrawType': 'ADDRESS',
                                          'chain': 'trx', 'amount': 5000.0, 'version': 'v3'}),
    ('account/mode', ['utaPrivate'], 'GET', {}),
    ('deposit-addresses', ['private'], 'GET', {'currency': 'USDT', 'chain': 'trx'}),
]
for path, api, method, params in cases:
    r = ex.sign(path, api, method, dict(params))
    url = r['url'].replace('https://api.kucoin.com', '')
    body = r['body'] or ''
    print('    ("%s", %s, %s, "%s"),' % (method, repr(url).replace("'", '"'),
          'r#"' + body + '"#', r['headers']['KC-API-SIGN']))
