//! One delivery attempt: POST the rendered body, signed, with the endpoint's custom
//! headers, and record what happened. Never returns an error: every failure is part of
//! the [`AttemptRecord`], so the worker stores it and asks [`crate::retry`] what's next.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use url::Url;

use crate::client::{blocked_in, error_chain, read_capped, DeliveryClient, MAX_RESPONSE_BYTES};
use crate::retry::{self, Outcome};
use crate::sign::{self, Secret};
use crate::ssrf::UrlError;

/// Most custom headers an endpoint may set.
pub const MAX_CUSTOM_HEADERS: usize = 20;
const MAX_HEADER_VALUE: usize = 4096;

/// Headers an endpoint may not set: hop-by-hop, framing, and the ones we sign or own.
const FORBIDDEN: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "expect",
];

/// Why custom headers were refused (at creation; delivery re-checks them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("at most {MAX_CUSTOM_HEADERS} custom headers")]
    TooMany,
    #[error("{0:?} is not a valid header name")]
    BadName(String),
    #[error("header {0:?} may not be set: keytrap sets it or it is hop-by-hop")]
    Forbidden(String),
    #[error(
        "value of header {0:?} is not valid (control characters, or over {MAX_HEADER_VALUE} bytes)"
    )]
    BadValue(String),
}

/// An endpoint's validated custom headers (e.g. `Authorization` for the receiver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomHeaders(Vec<(HeaderName, HeaderValue)>);

impl CustomHeaders {
    /// Validates `name -> value` pairs as stored with the endpoint.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Self, HeaderError> {
        if map.len() > MAX_CUSTOM_HEADERS {
            return Err(HeaderError::TooMany);
        }
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| HeaderError::BadName(k.clone()))?;
            let lower = name.as_str();
            if FORBIDDEN.contains(&lower) || lower.starts_with("webhook-") {
                return Err(HeaderError::Forbidden(k.clone()));
            }
            if v.len() > MAX_HEADER_VALUE {
                return Err(HeaderError::BadValue(k.clone()));
            }
            let value = HeaderValue::from_str(v).map_err(|_| HeaderError::BadValue(k.clone()))?;
            out.push((name, value));
        }
        Ok(CustomHeaders(out))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Everything one attempt needs.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryRequest<'a> {
    /// The endpoint URL as stored; Discord's `?wait=true` is added by
    /// [`crate::format::Format::delivery_url`] before calling.
    pub url: &'a Url,
    pub body: &'a [u8],
    pub content_type: &'a str,
    /// `webhook-id`: the message id, the same on every retry.
    pub message_id: &'a str,
    /// Current secret first; during rotation also the previous one (both signatures sent).
    pub secrets: &'a [Secret],
    pub headers: &'a CustomHeaders,
}

/// Why an attempt got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The URL or every address it resolves to is refused by the SSRF policy; nothing
    /// was sent.
    Blocked,
    /// No answer within the timeout.
    Timeout,
    /// DNS failure, connection refused or reset, TLS failure.
    Connect,
    /// Anything else (e.g. the connection dropped mid-response).
    Other,
}

/// What one attempt did, ready to be stored as a `webhook_attempts` row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// The `webhook-timestamp` it was signed with.
    pub signed_timestamp: i64,
    /// HTTP status, if a response arrived.
    pub status: Option<u16>,
    pub duration_ms: u64,
    /// The first [`MAX_RESPONSE_BYTES`] of the response body (lossy UTF-8).
    pub response_excerpt: Option<String>,
    /// The response body was longer than the excerpt.
    pub response_truncated: bool,
    /// Why there was no (complete) response.
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    /// What the result means; feed it to [`crate::retry::Schedule::next`].
    pub outcome: Outcome,
}

/// Longest error text kept.
const MAX_ERROR: usize = 1024;

impl DeliveryClient {
    /// Makes one attempt now.
    pub async fn deliver(&self, req: &DeliveryRequest<'_>) -> AttemptRecord {
        let started_at = Utc::now();
        let t0 = Instant::now();
        let ts = started_at.timestamp();
        let mut rec = AttemptRecord {
            started_at,
            signed_timestamp: ts,
            status: None,
            duration_ms: 0,
            response_excerpt: None,
            response_truncated: false,
            error: None,
            error_kind: None,
            outcome: Outcome::Failure { retry_after: None },
        };

        // Scheme, user info and IP-literal hosts (which never reach the resolver).
        if let Err(e) = self.urls.validate(req.url.as_str()) {
            rec.error_kind = Some(match e {
                UrlError::Blocked(_) => ErrorKind::Blocked,
                _ => ErrorKind::Other,
            });
            rec.error = Some(e.to_string());
            return rec;
        }

        let mut headers = HeaderMap::with_capacity(req.headers.len() + 4);
        for (k, v) in &req.headers.0 {
            headers.append(k.clone(), v.clone());
        }
        match HeaderValue::from_str(req.content_type) {
            Ok(v) => {
                headers.insert(CONTENT_TYPE, v);
            }
            Err(_) => {
                rec.error_kind = Some(ErrorKind::Other);
                rec.error = Some("content type is not a valid header value".into());
                return rec;
            }
        }
        for (name, value) in sign::headers(req.secrets, req.message_id, ts, req.body) {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(_) => {
                    rec.error_kind = Some(ErrorKind::Other);
                    rec.error = Some(format!("{name} is not a valid header value"));
                    return rec;
                }
            }
        }

        let sent = self
            .http
            .post(req.url.clone())
            .headers(headers)
            .body(req.body.to_vec())
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                rec.duration_ms = t0.elapsed().as_millis() as u64;
                rec.error_kind = Some(kind_of(&e));
                rec.error = Some(crate::format::bound(&error_chain(&e), MAX_ERROR));
                return rec;
            }
        };
        let status = resp.status().as_u16();
        rec.status = Some(status);
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match read_capped(&mut resp, MAX_RESPONSE_BYTES).await {
            Ok((bytes, truncated)) => {
                rec.response_excerpt = Some(excerpt(&bytes));
                rec.response_truncated = truncated;
                rec.outcome = retry::classify(Some(status), retry_after.as_deref(), Utc::now());
            }
            Err(e) => {
                // A status arrived but the body did not: a 2xx is not trusted as
                // delivered (the receiver may have failed mid-way), anything else keeps
                // its meaning.
                rec.error_kind = Some(kind_of(&e));
                rec.error = Some(crate::format::bound(&error_chain(&e), MAX_ERROR));
                rec.outcome =
                    match retry::classify(Some(status), retry_after.as_deref(), Utc::now()) {
                        Outcome::Success => Outcome::Failure { retry_after: None },
                        o => o,
                    };
            }
        }
        rec.duration_ms = t0.elapsed().as_millis() as u64;
        rec
    }
}

fn kind_of(e: &reqwest::Error) -> ErrorKind {
    if blocked_in(e).is_some() {
        ErrorKind::Blocked
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    }
}

/// Lossy UTF-8 of at most [`MAX_RESPONSE_BYTES`] bytes, cut on a character boundary.
fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut end = s.len().min(MAX_RESPONSE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_headers() {
        let mut m = BTreeMap::new();
        m.insert("Authorization".to_string(), "Bearer abc".to_string());
        m.insert("X-Team".to_string(), "sec".to_string());
        assert_eq!(CustomHeaders::parse(&m).expect("ok").len(), 2);
        for bad in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "TE",
            "Proxy-Authorization",
            "Content-Type",
            "webhook-signature",
            "Webhook-Id",
        ] {
            let m = BTreeMap::from([(bad.to_string(), "x".to_string())]);
            assert_eq!(
                CustomHeaders::parse(&m),
                Err(HeaderError::Forbidden(bad.to_string())),
                "{bad}"
            );
        }
        let m = BTreeMap::from([("Bad Name".to_string(), "x".to_string())]);
        assert!(matches!(
            CustomHeaders::parse(&m),
            Err(HeaderError::BadName(_))
        ));
        let m = BTreeMap::from([("X-A".to_string(), "a\r\nHost: evil".to_string())]);
        assert!(matches!(
            CustomHeaders::parse(&m),
            Err(HeaderError::BadValue(_))
        ));
        let m = BTreeMap::from([("X-A".to_string(), "v".repeat(5000))]);
        assert!(matches!(
            CustomHeaders::parse(&m),
            Err(HeaderError::BadValue(_))
        ));
        let many: BTreeMap<String, String> =
            (0..21).map(|i| (format!("X-{i}"), "v".into())).collect();
        assert_eq!(CustomHeaders::parse(&many), Err(HeaderError::TooMany));
    }

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        let s = "é".repeat(MAX_RESPONSE_BYTES);
        let e = excerpt(&s.as_bytes()[..MAX_RESPONSE_BYTES]);
        assert!(e.len() <= MAX_RESPONSE_BYTES);
        assert!(e.chars().all(|c| c == 'é'));
        // Invalid UTF-8 becomes replacement characters and still respects the cap.
        let junk = vec![0xffu8; MAX_RESPONSE_BYTES];
        assert!(excerpt(&junk).len() <= MAX_RESPONSE_BYTES);
    }
}
