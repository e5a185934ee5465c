"""Regenerates the ccxt-signed test vectors of services/trap/src/coinbase.rs (JWTs) and
coinbase_exchange.rs (CB-ACCESS-SIGN), offline: no network. Run with the ccxt venv."""
import ccxt, json
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import serialization
k = ec.generate_private_key(ec.SECP256R1())
pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()).decode()
name = 'organizations/0d5c3e2a-7a39-4a43-9f0e-52b0e5f3b8a1/apiKeys/4b8a7e61-2c1d-4e9f-8a3b-6d5e4f3a2b1c'
ex = ccxt.coinbase({'apiKey': name, 'secret': pem, 'urls': {'api': {'rest': 'http://127.0.0.1:8701/coinbase'}}})
ex.seconds = lambda: 1700000000
out = {'pem': pem, 'name': name, 'vectors': []}
for path, api, method, params in [
    ('brokerage/transaction_summary', ['v3','private'], 'GET', {}),
    ('accounts', ['v2','private'], 'GET', {'limit': 250}),
    ('brokerage/orders', ['v3','private'], 'POST', {'client_order_id':'ccxt-1b4e28ba-2fa1-11d2-883f-0016d3cca427','product_id':'BTC-USD','side':'BUY','order_configuration':{'limit_limit_gtc':{'base_size':'0.001','limit_price':'50000','post_only':False}}}),
    ('brokerage/orders/historical/batch', ['v3','private'], 'GET', {'order_status':'OPEN','limit':100}),
]:
    r = ex.sign(path, api, method, params)
    out['vectors'].append({'method': method, 'url': r['url'], 'body': r['body'], 'auth': r['headers']['Authorization']})
print(json.dumps(out, indent=1))


# --- Coinbase Exchange ---
import base64
secret = base64.b64encode(bytes(range(64))).decode()
ex = ccxt.coinbaseexchange({'apiKey': '3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d', 'secret': secret, 'password': 'k3j9x0q2m1z',
   'urls': {'api': {'public': 'http://127.0.0.1:8701/coinbase-exchange', 'private': 'http://127.0.0.1:8701/coinbase-exchange'}}})
ex.nonce = lambda: 1700000000
out = {'secret': secret, 'vectors': []}
for path, api, method, params in [
    ('accounts', ['private'], 'GET', {}),
    ('orders', ['private'], 'POST', {'type':'limit','side':'buy','product_id':'BTC-USD','price':'50000','size':'0.001'}),
    ('orders', ['private'], 'GET', {'status':'open','limit':100}),
    ('orders/{id}', ['private'], 'DELETE', {'id':'d0c5340b-6d6c-49d9-b567-48c4bfca13d2'}),
]:
    r = ex.sign(path, api, method, params)
    out['vectors'].append({'method': method, 'url': r['url'], 'body': r['body'] or '', 'headers': r['headers']})
print(json.dumps(out, indent=1))
