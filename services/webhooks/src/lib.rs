//! keytrap-webhooks: everything about an alert between the outbox row and the receiver,
//! with no storage of its own.
//!
//! | module | what |
//! |---|---|
//! | [`ssrf`] | address block list, `KEYTRAP_WEBHOOK_ALLOW_CIDRS`, URL validation at creation |
//! | [`sign`] | `whsec_` secrets, Standard Webhooks signatures and verification, secrets encrypted at rest |
//! | [`format`](mod@format) | alert bodies: standard, cloudevents, slack, discord, teams, pagerduty |
//! | [`client`] | the delivery HTTP client: filtering resolver, no redirects, no proxies, timeout |
//! | [`deliver`] | one attempt: signed POST with custom headers, recorded as an [`AttemptRecord`] |
//! | [`retry`] | outcome classification, backoff with jitter, `Retry-After`, dead letters, disabling |
//! | [`worker`] | the durable pipeline: fan-out from the outbox, leased claims, per-endpoint concurrency |
//!
//! # Plugging it in (worker loop)
//!
//! At start: `AddrPolicy::from_env()` (or from config), one [`DeliveryClient`] for the
//! process, one [`SecretCipher`] from the master key(s), a [`Schedule`] (use
//! `Schedule::scaled(f)` in tests).
//!
//! Endpoint creation (API): `client.url_policy().validate_resolved(url)`,
//! `CustomHeaders::parse(&headers)`, `Format::from_str`, `EventType::from_str` for the
//! filter; `let secret = Secret::generate()`; store `cipher.seal_secret(&secret, id)`;
//! return `secret.expose()` once. Rotation: keep the previous sealed secret with an
//! expiry and pass both to [`DeliveryRequest::secrets`] until then.
//!
//! For each claimed message (outbox row -> endpoint):
//!
//! 1. Load the incident, canary, store and hit; build an [`Alert`] (message id stable
//!    across retries, e.g. `msg_<uuid>`; `occurred_at` = the event's `created_at`).
//! 2. `render(endpoint.format, &alert, &RenderOptions { source, pagerduty_routing_key })`
//!    (a [`RenderError`] is permanent: dead-letter the message).
//! 3. `client.deliver(&DeliveryRequest { url: &format.delivery_url(&url), body,
//!    content_type, message_id, secrets: &[current, previous?], headers })`.
//! 4. Store the [`AttemptRecord`] (status, duration, excerpt, error, outcome).
//! 5. `schedule.next(attempt_number, record.outcome, now, &mut rand::rng())`:
//!    [`Next::Delivered`] done; [`Next::RetryAt`] release the lease until then;
//!    [`Next::DeadLetter`] dead-letter; [`Next::DisableEndpoint`] (410) disable the
//!    endpoint and dead-letter.
//! 6. Endpoint health: `first_failure = retry::failing_since(first_failure, outcome, now)`;
//!    if `retry::should_disable(first_failure, now, retry::DISABLE_AFTER)` disable it.
//!
//! Run attempts concurrently per endpoint (one task or semaphore per endpoint) so a slow
//! receiver, bounded by the client timeout, never holds up the others.

pub mod client;
pub mod deliver;
pub mod format;
pub mod retry;
pub mod sign;
pub mod ssrf;
pub mod worker;

pub use client::{ClientConfig, DeliveryClient};
pub use deliver::{AttemptRecord, CustomHeaders, DeliveryRequest, ErrorKind};
pub use format::{render, Alert, EventType, Format, RenderError, RenderOptions, Rendered};
pub use retry::{Next, Outcome, Schedule};
pub use sign::{Secret, SecretCipher};
pub use ssrf::{AddrPolicy, UrlPolicy};
pub use worker::{Worker, WorkerConfig};
