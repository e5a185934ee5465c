-- Last nonce per canary, for exchanges whose nonce must strictly increase per key (Kraken).
CREATE TABLE trap_nonces (
    canary_id  UUID PRIMARY KEY REFERENCES canaries (id),
    last_nonce BIGINT NOT NULL
);
