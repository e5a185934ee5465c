#!/usr/bin/env python3
"""Drives the trap's KuCoin emulator with the real ccxt client, unchanged except for
the base URL: load_markets, fetch_balance, create_order (small limit buy),
fetch_open_orders, fetch_order, cancel_order, and with --extra fetch_my_trades,
fetch_deposit_address and withdraw. Exits non-zero on the first failure.

    check_kucoin.py BASE_URL API_KEY SECRET PASSPHRASE [--extra]
    (or KT_BASE_URL, KT_API_KEY, KT_SECRET, KT_PASSPHRASE in the environment)

BASE_URL is where the trap serves KuCoin, e.g. http://127.0.0.1:8701/kucoin.
"""
import os
import sys
import traceback

import ccxt


def arg(i, env):
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    v = args[i] if len(args) > i else os.environ.get(env)
    if not v:
        sys.exit(f'usage: {sys.argv[0]} BASE_URL API_KEY SECRET PASSPHRASE [--extra]')
    return v


def main():
    base = arg(0, 'KT_BASE_URL').rstrip('/')
    ex = ccxt.kucoin({
        'apiKey': arg(1, 'KT_API_KEY'),
        'secret': arg(2, 'KT_SECRET'),
        'password': arg(3, 'KT_PASSPHRASE'),
        'timeout': 15000,
    })
    # Every KuCoin API URL key moves to the trap (futures too: load_markets asks there).
    for k in ['public', 'private', 'futuresPublic', 'futuresPrivate', 'uta', 'utaV2',
              'utaPrivate', 'earn', 'broker', 'webExchange']:
        ex.urls['api'][k] = base
    extra = '--extra' in sys.argv

    markets = ex.load_markets()
    assert 'BTC/USDT' in markets, 'BTC/USDT listed'
    m = markets['BTC/USDT']
    assert m['precision']['amount'] and m['precision']['price'], m['precision']
    print('load_markets:', len(markets), 'markets,', len(ex.currencies), 'currencies')

    bal = ex.fetch_balance()
    assert bal['total'].get('USDT', 0) > 0, bal['total']
    print('fetch_balance:', {k: v for k, v in bal['total'].items() if v})

    price = round(ex.fetch_ticker('BTC/USDT')['last'] * 0.5, 1)
    order = ex.create_order('BTC/USDT', 'limit', 'buy', 0.001, price)
    assert order['id'], order
    print('create_order:', order['id'])

    opened = ex.fetch_open_orders()
    assert any(o['id'] == order['id'] for o in opened), opened
    o = [o for o in opened if o['id'] == order['id']][0]
    assert o['status'] == 'open' and o['symbol'] == 'BTC/USDT' and o['amount'] == 0.001, o
    print('fetch_open_orders:', [(o['id'], o['symbol'], o['side'], o['price']) for o in opened])

    fetched = ex.fetch_order(order['id'])
    assert fetched['id'] == order['id'] and fetched['status'] == 'open', fetched
    print('fetch_order:', fetched['status'])

    cancelled = ex.cancel_order(order['id'], 'BTC/USDT')
    assert cancelled['id'] == order['id'], cancelled
    assert not any(o['id'] == order['id'] for o in ex.fetch_open_orders()), 'still open'
    print('cancel_order:', cancelled['id'])

    if extra:
        print('fetch_my_trades:', ex.fetch_my_trades())
        addr = ex.fetch_deposit_address('USDT', {'network': 'TRC20'})
        assert addr['address'] and addr['network'] == 'TRC20', addr
        print('fetch_deposit_address:', addr['address'], addr['network'])
        w = ex.withdraw('USDT', 25, 'TQrZ9wBzHTbHbEjUm4BwNmDzZ3gD8yWCWh', params={'network': 'TRC20'})
        assert w['id'], w
        print('withdraw:', w['id'])
    print('OK')


if __name__ == '__main__':
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
