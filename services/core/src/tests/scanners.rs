//! Canaries are found by the public secret scanners' rules (exchanges.md §10), as
//! real keys would be: gitleaks and trufflehog patterns run with the `regex` crate on
//! rendered config lines.

use regex::Regex;

use super::{fixed_keys, v7_id};
use crate::{Credentials, Exchange};

/// gitleaks' semi-generic rule template (`generateSemiGenericRegex`).
/// ASCII classes (`\w`, `\s`), as in Go's RE2 that gitleaks uses.
pub(super) fn gitleaks(keyword: &str, secret: &str) -> Regex {
    regex::RegexBuilder::new(&format!(
        r#"(?i)[\w.-]{{0,50}}?(?:{keyword})(?:[ \t\w.-]{{0,20}})[\s'"]{{0,3}}(?:=|>|:{{1,3}}=|\|\||:|=>|\?=|,)[\x60'"\s=]{{0,5}}({secret})(?:[\x60'"\s;]|\\[nr]|$)"#
    ))
    .unicode(false)
    .build()
    .expect("valid gitleaks regex")
}

/// trufflehog's `detectors.PrefixRegex`: keyword, then up to 40 chars (newlines too).
pub(super) fn trufflehog(keyword: &str, pattern: &str) -> Regex {
    Regex::new(&format!(r"(?i:{keyword})(?:.|[\n\r]){{0,40}}?{pattern}"))
        .expect("valid trufflehog regex")
}

/// All first capture groups, like Go's `FindAllStringSubmatch(.., -1)[i][1]`.
pub(super) fn captures(re: &Regex, text: &str) -> Vec<String> {
    re.captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_owned()))
        .collect()
}

fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

pub(super) fn minted(exchange: Exchange, n: u64) -> impl Iterator<Item = Credentials> {
    let keys = fixed_keys();
    (0..n).map(move |i| keys.credentials(exchange, v7_id(1000 + i)))
}

#[test]
fn gitleaks_kucoin_rules_match_key_and_secret() {
    let access = gitleaks("kucoin", "[a-f0-9]{24}");
    let secret = gitleaks(
        "kucoin",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    );
    for c in minted(Exchange::Kucoin, 50) {
        for line in [
            format!("KUCOIN_API_KEY={}", c.api_key),
            format!("kucoin_key: \"{}\"", c.api_key),
        ] {
            assert_eq!(captures(&access, &line), [c.api_key.as_str()], "{line}");
        }
        for line in [
            format!("KUCOIN_API_SECRET={}", c.api_secret),
            format!("kucoin_secret: \"{}\"", c.api_secret),
        ] {
            assert_eq!(captures(&secret, &line), [c.api_secret.as_str()], "{line}");
        }
    }
}

#[test]
fn gitleaks_kraken_rule_matches_the_secret() {
    let rule = gitleaks("kraken", r"[a-z0-9\/=_\+\-]{80,90}");
    for c in minted(Exchange::Kraken, 50) {
        for line in [
            format!("KRAKEN_API_SECRET={}", c.api_secret),
            format!("kraken_secret: \"{}\"", c.api_secret),
            format!("kraken_private_key = '{}';", c.api_secret),
        ] {
            assert_eq!(captures(&rule, &line), [c.api_secret.as_str()], "{line}");
        }
    }
}

#[test]
fn gitleaks_private_key_rule_matches_the_coinbase_pem() {
    let rule = Regex::new(
        r"(?i)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S-]{64,}?KEY(?: BLOCK)?-----",
    )
    .expect("valid regex");
    for c in minted(Exchange::Coinbase, 10) {
        let m = rule.find(&c.api_secret).expect("PEM matches");
        assert_eq!(m.as_str(), c.api_secret.trim_end());
        // As in Coinbase's JSON download, with escaped newlines.
        let json = format!(
            "{{\"name\": \"{}\", \"privateKey\": \"{}\"}}",
            c.api_key,
            c.api_secret.replace('\n', "\\n")
        );
        assert!(rule.is_match(&json), "{json}");
    }
}

#[test]
fn gitleaks_generic_api_key_rule_fires_on_binance_keys() {
    let rule = gitleaks(
        r"access|auth|(?-i:[Aa]pi|API)|credential|creds|key|passw(?:or)?d|secret|token",
        r"[\w.=-]{10,150}|[a-z0-9][a-z0-9+/]{11,}={0,3}",
    );
    for c in minted(Exchange::Binance, 200) {
        for (line, value) in [
            (format!("BINANCE_API_KEY={}", c.api_key), &c.api_key),
            (
                format!("binance_secret: \"{}\"", c.api_secret),
                &c.api_secret,
            ),
        ] {
            let found = captures(&rule, &line);
            assert_eq!(found, [value.as_str()], "{line}");
            let entropy = shannon_entropy(&found[0]);
            assert!(entropy >= 3.5, "entropy {entropy} of {value}");
        }
    }
}

#[test]
fn trufflehog_kucoin_detector_finds_key_secret_and_passphrase() {
    let key = trufflehog("kucoin", r"\b([0-9a-f]{24})\b");
    let secret = trufflehog(
        "kucoin",
        r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b",
    );
    let passphrase = trufflehog("kucoin", r"([ \r\n]{1}[!-~]{7,32}[ \r\n]{1})");
    for c in minted(Exchange::Kucoin, 50) {
        let pass = c.passphrase.clone().expect("kucoin has a passphrase");
        let text = format!(
            "kucoin_api_key: {}\nkucoin_api_secret: {}\nkucoin_api_passphrase: {}\n",
            c.api_key, c.api_secret, pass
        );
        let trimmed = |v: Vec<String>| -> Vec<String> {
            v.into_iter().map(|s| s.trim().to_owned()).collect()
        };
        assert!(
            trimmed(captures(&key, &text)).contains(&c.api_key),
            "{text}"
        );
        assert!(
            trimmed(captures(&secret, &text)).contains(&c.api_secret),
            "{text}"
        );
        assert!(
            trimmed(captures(&passphrase, &text)).contains(&pass),
            "{text}"
        );
    }
}

#[test]
fn trufflehog_kraken_detector_finds_key_and_secret() {
    let key = trufflehog("kraken", r#"\b([0-9A-Za-z\/\+=]{56}[ "'\r\n]{1})"#);
    let secret = trufflehog("kraken", r#"\b([0-9A-Za-z\/\+=]{86,88}[ "'\r\n]{1})"#);
    for c in minted(Exchange::Kraken, 300) {
        for text in [
            format!(
                "KRAKEN_API_KEY={}\nKRAKEN_API_SECRET={}\n",
                c.api_key, c.api_secret
            ),
            format!(
                "kraken_key: \"{}\"\nkraken_secret: '{}'\n",
                c.api_key, c.api_secret
            ),
        ] {
            let strip = |v: Vec<String>| -> Vec<String> {
                v.into_iter()
                    .map(|s| s.trim_end_matches([' ', '"', '\'', '\r', '\n']).to_owned())
                    .collect()
            };
            assert!(strip(captures(&key, &text)).contains(&c.api_key), "{text}");
            assert!(
                strip(captures(&secret, &text)).contains(&c.api_secret),
                "{text}"
            );
        }
    }
}

#[test]
fn trufflehog_coinbase_detector_finds_key_name_and_parses_the_pem() {
    let key_name = Regex::new(
        r"\b(organizations\\*/\w{8}-\w{4}-\w{4}-\w{4}-\w{12}\\*/apiKeys\\*/\w{8}-\w{4}-\w{4}-\w{4}-\w{12})\b",
    )
    .expect("valid regex");
    let private_key = Regex::new(
        r"(-----BEGIN EC(?:DSA)? PRIVATE KEY-----(?:\r|\n|\\+r|\\+n)(?:[a-zA-Z0-9+/]+={0,2}(?:\r|\n|\\+r|\\+n))+-----END EC(?:DSA)? PRIVATE KEY-----(?:\r|\n|\\+r|\\+n)?)",
    )
    .expect("valid regex");
    for c in minted(Exchange::Coinbase, 10) {
        // Coinbase's key download, and the same with JSON-escaped slashes.
        let json = format!(
            "{{\n  \"name\": \"{}\",\n  \"privateKey\": \"{}\"\n}}\n",
            c.api_key,
            c.api_secret.replace('\n', "\\n")
        );
        for text in [json.clone(), json.replace('/', "\\/")] {
            let names = captures(&key_name, &text);
            assert_eq!(names.len(), 1, "{text}");
            assert_eq!(names[0].replace('\\', ""), c.api_key);
        }
        let pems = captures(&private_key, &json);
        assert_eq!(pems.len(), 1, "{json}");
        // trufflehog's keyReplacer, then x509.ParseECPrivateKey; here: SEC1 parse.
        let pem = pems[0].trim().replace("\\n", "\n");
        let parsed = p256::SecretKey::from_sec1_pem(&pem).expect("SEC1 PEM parses");
        let direct = p256::SecretKey::from_sec1_pem(&c.api_secret).expect("SEC1 PEM parses");
        assert_eq!(parsed.to_bytes(), direct.to_bytes());
        // The raw PEM as a file is matched too.
        assert_eq!(
            captures(&private_key, &c.api_secret),
            [c.api_secret.as_str()]
        );
    }
}

/// Go's `x509.ParseECPrivateKey` needs the namedCurve parameter; Coinbase's downloads
/// carry it and the public key, so the DER is 121 bytes starting `MHcCAQEE`.
#[test]
fn coinbase_pem_is_a_full_sec1_key_like_coinbase_downloads() {
    use base64::Engine as _;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    for c in minted(Exchange::Coinbase, 10) {
        let pem = &c.api_secret;
        assert!(
            pem.starts_with("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE"),
            "{pem}"
        );
        assert!(pem.ends_with("\n-----END EC PRIVATE KEY-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("PEM body is base64");
        assert_eq!(der.len(), 121);
        let key = p256::SecretKey::from_sec1_pem(pem).expect("parses");
        assert_eq!(&der[7..39], &key.to_bytes()[..]);
        // [0] namedCurve prime256v1
        assert_eq!(
            &der[39..51],
            [0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        // [1] public key, matching the private scalar
        assert_eq!(&der[51..56], [0xa1, 0x44, 0x03, 0x42, 0x00]);
        assert_eq!(
            &der[56..],
            key.public_key().to_encoded_point(false).as_bytes()
        );
        let same = p256::SecretKey::from_sec1_der(&der).expect("DER parses");
        assert_eq!(same.to_bytes(), key.to_bytes());
    }
}
