-- Last nonce per canary, for exchanges whose nonce must strictly increase per key (Kraken).
CREATE TABLE trap_nonces (
    canary_id  BLOB PRIMARY KEY REFERENCES canaries (id),
    last_nonce INTEGER NOT NULL
) STRICT;
