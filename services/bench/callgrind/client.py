# Client of unknown_keys.sh: N signed unknown-key requests over one keep-alive connection.
import hmac, hashlib, http.client, random, string, sys, time
port=int(sys.argv[1]); n=int(sys.argv[2])
rnd=random.Random(7)
keys=[(''.join(rnd.choice(string.ascii_letters+string.digits) for _ in range(64)),
       ''.join(rnd.choice(string.ascii_letters+string.digits) for _ in range(64))) for _ in range(50)]
bkeys=[(''.join(rnd.choice(string.ascii_letters+string.digits) for _ in range(18)),
       ''.join(rnd.choice(string.ascii_letters+string.digits) for _ in range(36))) for _ in range(50)]
c=http.client.HTTPConnection('127.0.0.1',port)
ok=0
for i in range(n):
    now=int(time.time()*1000)
    if i%2==0:
        k,s=keys[i%50]
        q=f"timestamp={now}&recvWindow=10000"
        sig=hmac.new(s.encode(),q.encode(),hashlib.sha256).hexdigest()
        c.request('GET',f"/binance/api/v3/account?{q}&signature={sig}",headers={'X-MBX-APIKEY':k,'User-Agent':'keytrap-bench/0.1'})
    else:
        k,s=bkeys[i%50]
        q="accountType=UNIFIED"
        sig=hmac.new(s.encode(),f"{now}{k}5000{q}".encode(),hashlib.sha256).hexdigest()
        c.request('GET',f"/bybit/v5/account/wallet-balance?{q}",headers={'X-BAPI-API-KEY':k,'X-BAPI-TIMESTAMP':str(now),'X-BAPI-RECV-WINDOW':'5000','X-BAPI-SIGN':sig,'User-Agent':'keytrap-bench/0.1'})
    r=c.getresponse(); b=r.read()
    ok+= (r.status==401 and b'-2015' in b) or (r.status==200 and b'10003' in b)
print("ok",ok,"of",n)
