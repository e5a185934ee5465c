//! Webhook verification against the reference Standard Webhooks implementation.
#![allow(clippy::unwrap_used)]

use keytrap_sdk::webhook::{Verifier, WebhookError};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn lookup<'a>(h: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<&'a str> {
    move |name| h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
}

#[test]
fn reference_signatures_verify_and_tampering_does_not() {
    let reference = standardwebhooks::Webhook::new(SECRET).unwrap();
    let v = Verifier::new(SECRET).unwrap();
    let body = br#"{"type":"incident.opened","data":{"store":"users-db","x":"\u00e9"}}"#;
    let now = chrono::Utc::now().timestamp();
    let sig = reference.sign("msg_2Xo", now, body).unwrap();
    assert_eq!(v.sign("msg_2Xo", now, body), sig);
    let headers = vec![
        ("webhook-id", "msg_2Xo".to_string()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", sig.clone()),
    ];
    assert_eq!(v.verify(lookup(&headers), body), Ok(()));
    assert_eq!(
        v.verify(lookup(&headers), b"{}"),
        Err(WebhookError::NoMatch)
    );

    // During rotation two signatures are sent; either secret verifies.
    let old = Verifier::new("whsec_dGhlIG9sZCBzZWNyZXQgb2YgdGhlIGVuZHBvaW50").unwrap();
    let rotated = vec![
        ("webhook-id", "msg_2Xo".to_string()),
        ("webhook-timestamp", now.to_string()),
        (
            "webhook-signature",
            format!("{} {}", old.sign("msg_2Xo", now, body), sig),
        ),
    ];
    assert_eq!(v.verify(lookup(&rotated), body), Ok(()));
    assert_eq!(old.verify(lookup(&rotated), body), Ok(()));

    // Another id, a stale or future timestamp, missing or garbled headers.
    let mut other_id = headers.clone();
    other_id[0].1 = "msg_other".into();
    assert_eq!(
        v.verify(lookup(&other_id), body),
        Err(WebhookError::NoMatch)
    );
    assert_eq!(
        v.verify_at(lookup(&headers), body, now + 301),
        Err(WebhookError::Stale)
    );
    assert_eq!(
        v.verify_at(lookup(&headers), body, now - 301),
        Err(WebhookError::Stale)
    );
    assert_eq!(v.verify_at(lookup(&headers), body, now + 300), Ok(()));
    assert_eq!(
        v.clone()
            .with_tolerance(10)
            .verify_at(lookup(&headers), body, now + 11),
        Err(WebhookError::Stale)
    );
    let missing = vec![headers[0].clone(), headers[1].clone()];
    assert_eq!(
        v.verify(lookup(&missing), body),
        Err(WebhookError::Missing("webhook-signature"))
    );
    let mut bad_ts = headers.clone();
    bad_ts[1].1 = "yesterday".into();
    assert_eq!(
        v.verify(lookup(&bad_ts), body),
        Err(WebhookError::BadTimestamp)
    );
    let mut v2 = headers.clone();
    v2[2].1 = sig.replacen("v1,", "v2,", 1);
    assert_eq!(v.verify(lookup(&v2), body), Err(WebhookError::NoMatch));
    let mut garbage = headers;
    garbage[2].1 = "v1,!!!not-base64 v1".into();
    assert_eq!(v.verify(lookup(&garbage), body), Err(WebhookError::NoMatch));
}

#[test]
fn secrets_must_be_whsec_base64() {
    assert_eq!(
        Verifier::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
        WebhookError::BadSecret
    );
    assert_eq!(
        Verifier::new("whsec_***").unwrap_err(),
        WebhookError::BadSecret
    );
    assert_eq!(
        Verifier::new("whsec_").unwrap_err(),
        WebhookError::BadSecret
    );
    assert!(!format!("{:?}", Verifier::new(SECRET).unwrap()).contains("MfKQ"));
}
