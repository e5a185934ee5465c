//! Renderers: every template for every exchange, escaping, and the scanners' rules
//! (exchanges.md §10) firing on the rendered text.

use base64::Engine as _;
use regex::Regex;

use super::scanners::{captures, gitleaks, minted, trufflehog};
use crate::render::{
    expand_value, quote_literal, render, CcxtLanguage, ColumnMapping, RenderInput, RenderSpec,
    SqlDialect, SqlValue, Template,
};
use crate::{Credentials, Exchange};

fn one(exchange: Exchange) -> Credentials {
    minted(exchange, 1).next().unwrap()
}

fn spec(t: Template) -> RenderSpec {
    RenderSpec::new(t)
}

fn sql_spec(dialect: SqlDialect) -> RenderSpec {
    RenderSpec {
        template: Some(Template::Sql),
        table: Some("exchange_api_keys".into()),
        columns: ColumnMapping::parse_list(
            "user_id={user_id},exchange={exchange},api_key={api_key},api_secret={api_secret},passphrase={passphrase},label={label}",
        )
        .unwrap(),
        dialect,
        ..Default::default()
    }
}

#[test]
fn every_template_renders_every_exchange_with_the_key_in_it() {
    for ex in Exchange::ALL {
        let c = one(ex);
        let mut input = RenderInput::new(ex, &c);
        input.label = Some("nightly 2026-11-20");
        input.user_id = Some("4711");
        input.base_url = Some("http://127.0.0.1:8701/binance");
        for t in Template::ALL {
            let s = match t {
                Template::Sql => sql_spec(SqlDialect::Postgres),
                t => spec(t),
            };
            let out = render(&s, &input);
            if t == Template::Cdp && ex != Exchange::Coinbase {
                let e = out.unwrap_err();
                assert!(e.0.contains("coinbase"), "{e}");
                continue;
            }
            let out = out.unwrap_or_else(|e| panic!("{t:?} {ex}: {e}"));
            assert!(out.ends_with('\n'));
            let needle = if t == Template::K8s {
                base64::engine::general_purpose::STANDARD.encode(&c.api_key)
            } else {
                c.api_key.clone()
            };
            assert!(out.contains(&needle), "{t:?} {ex}: {out}");
            assert!(!out.to_lowercase().contains("keytrap"), "{out}");
            assert!(!out.to_lowercase().contains("canary"), "{out}");
        }
    }
}

#[test]
fn json_yaml_and_ccxt_json_parse_back_to_the_credentials() {
    for ex in Exchange::ALL {
        let c = one(ex);
        let mut input = RenderInput::new(ex, &c);
        input.base_url = Some("http://127.0.0.1:8701");
        let prefix = ex.as_str().replace('-', "_");
        let j: serde_json::Value =
            serde_json::from_str(&render(&spec(Template::Json), &input).unwrap()).unwrap();
        assert_eq!(j[format!("{prefix}_api_key")], c.api_key.as_str());
        assert_eq!(j[format!("{prefix}_api_secret")], c.api_secret.as_str());
        assert_eq!(
            j.get(format!("{prefix}_api_passphrase"))
                .and_then(|v| v.as_str()),
            c.passphrase.as_deref()
        );
        assert_eq!(j["base_url"], "http://127.0.0.1:8701");
        let yaml = render(&spec(Template::Yaml), &input).unwrap();
        // Each YAML line is `key: "json string"`.
        for line in yaml.lines() {
            let (k, v) = line.split_once(": ").unwrap();
            let v: String = serde_json::from_str(v).unwrap();
            assert_eq!(j[k], v.as_str(), "{line}");
        }
        let s = RenderSpec {
            ccxt_language: CcxtLanguage::Json,
            ..spec(Template::Ccxt)
        };
        let cc: serde_json::Value = serde_json::from_str(&render(&s, &input).unwrap()).unwrap();
        assert_eq!(cc["apiKey"], c.api_key.as_str());
        assert_eq!(cc["secret"], c.api_secret.as_str());
        assert_eq!(
            cc.get("password").and_then(|v| v.as_str()),
            c.passphrase.as_deref()
        );
    }
}

#[test]
fn gitleaks_kucoin_rules_fire_on_env_json_and_yaml() {
    let access = gitleaks("kucoin", "[a-f0-9]{24}");
    let secret = gitleaks(
        "kucoin",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    );
    for c in minted(Exchange::Kucoin, 30) {
        let input = RenderInput::new(Exchange::Kucoin, &c);
        for t in [Template::Env, Template::Json, Template::Yaml] {
            let text = render(&spec(t), &input).unwrap();
            assert!(captures(&access, &text).contains(&c.api_key), "{text}");
            assert!(captures(&secret, &text).contains(&c.api_secret), "{text}");
        }
    }
}

#[test]
fn trufflehog_kucoin_and_kraken_detectors_fire_on_env_json_yaml_and_ccxt() {
    let kkey = trufflehog("kucoin", r"\b([0-9a-f]{24})\b");
    let ksecret = trufflehog(
        "kucoin",
        r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b",
    );
    let rkey = trufflehog("kraken", r#"\b([0-9A-Za-z\/\+=]{56}[ "'\r\n]{1})"#);
    let rsecret = trufflehog("kraken", r#"\b([0-9A-Za-z\/\+=]{86,88}[ "'\r\n]{1})"#);
    let strip = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|s| s.trim_end_matches([' ', '"', '\'', '\r', '\n']).to_owned())
            .collect()
    };
    let templates = [
        Template::Env,
        Template::Json,
        Template::Yaml,
        Template::Ccxt,
    ];
    for c in minted(Exchange::Kucoin, 20) {
        for t in templates {
            let text = render(&spec(t), &RenderInput::new(Exchange::Kucoin, &c)).unwrap();
            assert!(captures(&kkey, &text).contains(&c.api_key), "{t:?} {text}");
            // In a ccxt snippet the secret sits past trufflehog's 40-char window after
            // the keyword: only the key is found there (as for a real key).
            if t != Template::Ccxt {
                assert!(captures(&ksecret, &text).contains(&c.api_secret), "{text}");
            }
        }
    }
    for c in minted(Exchange::Kraken, 100) {
        for t in templates {
            let text = render(&spec(t), &RenderInput::new(Exchange::Kraken, &c)).unwrap();
            assert!(
                strip(captures(&rkey, &text)).contains(&c.api_key),
                "{t:?} {text}"
            );
            if t != Template::Ccxt {
                assert!(
                    strip(captures(&rsecret, &text)).contains(&c.api_secret),
                    "{t:?} {text}"
                );
            }
        }
    }
}

#[test]
fn gitleaks_kraken_and_generic_rules_fire_on_env_and_yaml() {
    let kraken = gitleaks("kraken", r"[a-z0-9\/=_\+\-]{80,90}");
    let generic = gitleaks(
        r"access|auth|(?-i:[Aa]pi|API)|credential|creds|key|passw(?:or)?d|secret|token",
        r"[\w.=-]{10,150}|[a-z0-9][a-z0-9+/]{11,}={0,3}",
    );
    for t in [Template::Env, Template::Yaml, Template::Json] {
        for c in minted(Exchange::Kraken, 30) {
            let text = render(&spec(t), &RenderInput::new(Exchange::Kraken, &c)).unwrap();
            assert!(captures(&kraken, &text).contains(&c.api_secret), "{text}");
        }
        for c in minted(Exchange::Binance, 30) {
            let text = render(&spec(t), &RenderInput::new(Exchange::Binance, &c)).unwrap();
            let found = captures(&generic, &text);
            assert!(found.contains(&c.api_key), "{t:?} {text}");
            assert!(found.contains(&c.api_secret), "{t:?} {text}");
        }
    }
}

#[test]
fn cdp_file_is_coinbase_shaped_and_found_by_both_scanners() {
    let key_name = Regex::new(
        r"\b(organizations\\*/\w{8}-\w{4}-\w{4}-\w{4}-\w{12}\\*/apiKeys\\*/\w{8}-\w{4}-\w{4}-\w{4}-\w{12})\b",
    )
    .unwrap();
    let th_pem = Regex::new(
        r"(-----BEGIN EC(?:DSA)? PRIVATE KEY-----(?:\r|\n|\\+r|\\+n)(?:[a-zA-Z0-9+/]+={0,2}(?:\r|\n|\\+r|\\+n))+-----END EC(?:DSA)? PRIVATE KEY-----(?:\r|\n|\\+r|\\+n)?)",
    )
    .unwrap();
    let gl_pem = Regex::new(
        r"(?i)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S-]{64,}?KEY(?: BLOCK)?-----",
    )
    .unwrap();
    for c in minted(Exchange::Coinbase, 5) {
        let input = RenderInput::new(Exchange::Coinbase, &c);
        let cdp = render(&spec(Template::Cdp), &input).unwrap();
        let v: serde_json::Value = serde_json::from_str(&cdp).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 2);
        assert_eq!(v["name"], c.api_key.as_str());
        assert_eq!(v["privateKey"], c.api_secret.as_str());
        for t in [Template::Cdp, Template::Json, Template::Env, Template::Yaml] {
            let text = render(&spec(t), &input).unwrap();
            assert_eq!(captures(&key_name, &text), [c.api_key.as_str()], "{text}");
            let pems = captures(&th_pem, &text);
            assert_eq!(pems.len(), 1, "{t:?} {text}");
            let pem = pems[0].trim().replace("\\n", "\n");
            assert!(p256::SecretKey::from_sec1_pem(&pem).is_ok(), "{pem}");
            assert!(gl_pem.is_match(&text), "{text}");
        }
    }
}

#[test]
fn sql_insert_quotes_names_and_escapes_values_per_dialect() {
    let c = one(Exchange::Kucoin);
    let mut input = RenderInput::new(Exchange::Kucoin, &c);
    input.label = Some(r"O'Brien \ main");
    input.user_id = Some("42");
    let pg = render(&sql_spec(SqlDialect::Postgres), &input).unwrap();
    assert!(pg.starts_with(
        "INSERT INTO \"exchange_api_keys\" (\"user_id\", \"exchange\", \"api_key\", \"api_secret\", \"passphrase\", \"label\") VALUES ('42', 'kucoin', '"
    ), "{pg}");
    assert!(pg.ends_with("'O''Brien \\ main');\n"), "{pg}");
    let my = render(&sql_spec(SqlDialect::Mysql), &input).unwrap();
    assert!(
        my.starts_with("INSERT INTO `exchange_api_keys` (`user_id`"),
        "{my}"
    );
    assert!(my.ends_with("'O''Brien \\\\ main');\n"), "{my}");

    // Binance has no passphrase: the column gets NULL.
    let b = one(Exchange::Binance);
    let mut input = RenderInput::new(Exchange::Binance, &b);
    input.user_id = Some("1");
    let out = render(&sql_spec(SqlDialect::Sqlite), &input).unwrap();
    assert!(out.ends_with("NULL, NULL);\n"), "{out}");
}

#[test]
fn sql_refuses_bad_names_and_placeholders_clearly() {
    let c = one(Exchange::Okx);
    let input = RenderInput::new(Exchange::Okx, &c);
    let with = |table: &str, map: &str| RenderSpec {
        template: Some(Template::Sql),
        table: Some(table.into()),
        columns: ColumnMapping::parse_list(map).unwrap(),
        ..Default::default()
    };
    let e = render(&with("keys; DROP TABLE x", "k={api_key}"), &input).unwrap_err();
    assert!(e.0.contains("not a plain SQL name"), "{e}");
    let e = render(&with("keys", "k\"={api_key}"), &input).unwrap_err();
    assert!(e.0.contains("not a plain SQL name"), "{e}");
    let e = render(&with("keys", "k={apikey}"), &input).unwrap_err();
    assert!(e.0.contains("unknown placeholder {apikey}"), "{e}");
    let e = render(&with("keys", "k={api_key},K={api_secret}"), &input).unwrap_err();
    assert!(e.0.contains("mapped twice"), "{e}");
    let e = render(&with("keys", "k=u-{user_id}"), &input).unwrap_err();
    assert!(e.0.contains("{user_id} has no value"), "{e}");
    let e = render(&RenderSpec::new(Template::Sql), &input).unwrap_err();
    assert!(e.0.contains("needs table"), "{e}");
    assert!(ColumnMapping::parse_list("api_key").is_err());
    assert!(quote_literal(SqlDialect::Postgres, "a\0b").is_err());
}

#[test]
fn placeholders_expand_with_literal_braces() {
    let c = one(Exchange::Bybit);
    let mut input = RenderInput::new(Exchange::Bybit, &c);
    input.label = Some("L");
    assert_eq!(
        expand_value("{{x}}-{label}-{exchange}", &input).unwrap(),
        SqlValue::Text("{x}-L-bybit".into())
    );
    assert_eq!(expand_value("{user_id}", &input).unwrap(), SqlValue::Null);
    assert!(expand_value("{label", &input).is_err());
    assert!(expand_value("a}b", &input).is_err());
}

#[test]
fn k8s_secret_decodes_to_the_credentials_and_checks_names() {
    let c = one(Exchange::Okx);
    let input = RenderInput::new(Exchange::Okx, &c);
    let s = RenderSpec {
        name: Some("trading-engine".into()),
        namespace: Some("prod".into()),
        ..spec(Template::K8s)
    };
    let out = render(&s, &input).unwrap();
    assert!(out.contains("kind: Secret\nmetadata:\n  name: trading-engine\n  namespace: prod\n"));
    let get = |k: &str| {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{k}: ")))
            .unwrap();
        let v = line.split_once(": ").unwrap().1;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap()
    };
    assert_eq!(get("OKX_API_KEY"), c.api_key);
    assert_eq!(get("OKX_API_SECRET"), c.api_secret);
    assert_eq!(Some(get("OKX_API_PASSPHRASE")), c.passphrase);
    let bad = RenderSpec {
        name: Some("Bad_Name".into()),
        ..spec(Template::K8s)
    };
    assert!(render(&bad, &input).unwrap_err().0.contains("Secret name"));
    let bad = RenderSpec {
        prefix: Some("1X".into()),
        ..spec(Template::Env)
    };
    assert!(render(&bad, &input).unwrap_err().0.contains("prefix"));
}

#[test]
fn env_quotes_multiline_and_csv_round_trips() {
    let c = one(Exchange::Coinbase);
    let input = RenderInput::new(Exchange::Coinbase, &c);
    let env = render(&spec(Template::Env), &input).unwrap();
    let secret_line = env
        .lines()
        .find(|l| l.starts_with("COINBASE_API_SECRET="))
        .unwrap();
    assert_eq!(
        secret_line,
        format!(
            "COINBASE_API_SECRET=\"{}\"",
            c.api_secret.replace('\n', "\\n")
        )
    );
    let csv = render(
        &RenderSpec {
            header: true,
            ..spec(Template::Csv)
        },
        &input,
    )
    .unwrap();
    assert!(csv.starts_with("exchange,label,user_id,api_key,api_secret,"));
    // The PEM is quoted, newlines kept inside the field.
    assert!(csv.contains(&format!("\"{}\"", c.api_secret)), "{csv}");
    let missing = render(&RenderSpec::default(), &input).unwrap_err();
    assert!(missing.0.contains("template is required"));
}
