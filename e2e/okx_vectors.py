"""Prints OKX request signatures produced offline by ccxt's own sign() (no network),
with a pinned timestamp, for the Rust unit tests (okx.rs CCXT_VECTORS)."""
import ccxt

ex = ccxt.okx({'apiKey': 'a1b2c3d4-1111-4222-8333-444455556666',
               'secret': '0123456789ABCDEF0123456789ABCDEF',
               'password': 'Passw0rd!x'})
ex.options['timeDifference'] = 0
ex.nonce = lambda: 1795290000000  # 2026-11-21T19:40:00.000Z
ex.uuid16 = lambda: '0123456789abcdef'
cases = [
    ('asset/currencies', ['private'], 'GET', {}),
    ('account/balance', ['private'], 'GET', {'ccy': 'BTC,ETH'}),
    ('trade/batch-orders', ['private'], 'POST', [{'instId': 'BTC-USDT', 'side': 'buy', 'ordType': 'limit',
                                                  'sz': '0.001', 'px': '50000', 'tdMode': 'cash'}]),
    ('trade/cancel-order', ['private'], 'POST', {'instId': 'BTC-USDT', 'ordId': '312269865356374016'}),
    ('trade/orders-pending', ['private'], 'GET', {'instId': 'BTC-USDT'}),
    ('asset/withdrawal', ['private'], 'POST', {'ccy': 'USDT', 'toAddr': 'TXyz', 'dest': '4', 'amt': '5000',
                                               'chain': 'USDT-TRC20'}),
    ('asset/deposit-address', ['private'], 'GET', {'ccy': 'USDT'}),
]
for path, api, method, params in cases:
    r = ex.sign(path, api, method, params)
    url = r['url'].replace('https://www.okx.com', '')
    body = r['body'] or ''
    assert r['headers']['OK-ACCESS-TIMESTAMP'] == '2026-11-21T19:40:00.000Z'
    print('        ("%s", "%s", %s, "%s"),' % (method, url, 'r#"' + body + '"#', r['headers']['OK-ACCESS-SIGN']))
