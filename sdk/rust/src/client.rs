//! The typed management API client.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keytrap_core::render::{RenderSpec, Template};
use keytrap_core::Exchange;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Detector;

pub use keytrap_core::Credentials;

/// What can go wrong talking to keytrap.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base URL is not an absolute http(s) URL.
    #[error("invalid keytrap URL: {0}")]
    Url(String),
    /// The request did not get an answer (connection refused, timeout, TLS...).
    #[error("cannot reach keytrap: {0}")]
    Http(#[from] reqwest::Error),
    /// keytrap answered with an error (`{"error":{"code","message"}}`).
    #[error("keytrap answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code: `invalid_request`, `forbidden`, `not_found`, `conflict`, ...
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from keytrap: {0}")]
    Decode(String),
    /// The detection key the server returned does not parse.
    #[error("bad detection key: {0}")]
    Key(#[from] keytrap_core::KeyError),
}

impl Error {
    /// The API error code, if keytrap answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A place canaries are planted in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// `database`, `backup`, `bucket`, `file`, `kubernetes-secret`, `config-store`, `other`.
    pub kind: String,
    pub location: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

/// A store to create.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewStore {
    pub name: String,
    /// See [`Store::kind`].
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A canary; `credentials` only when minted or revealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub id: Uuid,
    pub exchange: Exchange,
    pub store_id: Uuid,
    pub memo: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `active`, `disabled` or `expired`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub credentials: Option<Credentials>,
}

/// Canaries to mint.
#[derive(Debug, Clone, Serialize)]
pub struct MintRequest {
    pub exchange: Exchange,
    pub store_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// 1..=10000.
    pub count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl MintRequest {
    /// One canary of `exchange` for `store_id`.
    pub fn new(exchange: Exchange, store_id: Uuid) -> Self {
        MintRequest {
            exchange,
            store_id,
            memo: None,
            labels: BTreeMap::new(),
            count: 1,
            expires_at: None,
        }
    }
}

/// Filter for [`Client::list_canaries`].
#[derive(Debug, Clone, Default)]
pub struct CanaryFilter {
    pub store_id: Option<Uuid>,
    pub exchange: Option<Exchange>,
    /// `active`, `disabled`, `expired`.
    pub status: Option<String>,
    /// `key:value`.
    pub label: Option<String>,
    /// Include credentials (needs `mint`; audited).
    pub reveal: bool,
    pub after: Option<Uuid>,
    pub limit: Option<u32>,
}

/// A use of a canary recorded by the trap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: Uuid,
    pub canary_id: Uuid,
    pub store_id: Uuid,
    pub incident_id: Option<Uuid>,
    pub exchange: Exchange,
    pub method: String,
    pub path: String,
    pub source_ip: String,
    pub user_agent: Option<String>,
    pub client_fingerprint: Option<String>,
    /// `valid`, `invalid`, `missing`, ...
    pub signature_state: String,
    /// `read`, `trade`, `withdraw`, ...
    pub action_class: String,
    #[serde(default)]
    pub action_params: serde_json::Value,
    pub severity: String,
    pub received_at: DateTime<Utc>,
}

/// Filter for [`Client::list_hits`].
#[derive(Debug, Clone, Default)]
pub struct HitFilter {
    pub canary_id: Option<Uuid>,
    pub store_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub after: Option<Uuid>,
    pub limit: Option<u32>,
}

/// An incident: the hits of one canary (or one store) grouped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: Uuid,
    pub kind: String,
    pub canary_id: Option<Uuid>,
    pub store_id: Uuid,
    /// `open`, `acknowledged`, `resolved`.
    pub status: String,
    pub severity: String,
    pub hit_count: i64,
    pub canary_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Filter for [`Client::list_incidents`].
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub store_id: Option<Uuid>,
    pub after: Option<Uuid>,
    pub limit: Option<u32>,
}

/// Where a canary was planted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub id: Uuid,
    pub canary_id: Uuid,
    pub store_id: Uuid,
    /// `database` or `file`.
    pub kind: String,
    pub target: String,
    pub location: String,
    pub row_key: Option<String>,
    pub snapshot: Option<String>,
    #[serde(default)]
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A placement to record.
#[derive(Debug, Clone, Serialize)]
pub struct NewPlacement {
    pub canary_id: Uuid,
    /// `database` or `file`.
    pub kind: String,
    pub target: String,
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub details: serde_json::Value,
}

/// Filter for [`Client::list_placements`].
#[derive(Debug, Clone, Default)]
pub struct PlacementFilter {
    pub store_id: Option<Uuid>,
    pub canary_id: Option<Uuid>,
    pub after: Option<Uuid>,
    pub limit: Option<u32>,
}

/// A webhook endpoint as the API shows it (never its secret or header values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// `standard`, `cloudevents`, `slack`, `discord`, `teams` or `pagerduty`.
    pub format: String,
    /// Subscribed events; empty means the three incident events.
    pub events: Vec<String>,
    pub min_severity: Option<String>,
    pub store_ids: Vec<Uuid>,
    pub exchanges: Vec<String>,
    pub header_names: Vec<String>,
    pub has_routing_key: bool,
    pub secret_version: i32,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    /// `api`, `gone` (the receiver answered 410), `failing` (5 days without success).
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/webhooks`. Only `url` is required.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewWebhook {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// `low`, `high` or `critical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub store_ids: Vec<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<String>,
    /// Extra request headers for the receiver (e.g. `Authorization`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// PagerDuty Events API v2 integration key (required for `pagerduty`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

/// A created endpoint: its id and its `whsec_` signing secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookCreated {
    pub id: Uuid,
    pub secret: String,
}

/// A rotated secret: the new `whsec_` secret (shown once) and the endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRotated {
    pub secret: String,
    pub webhook: Webhook,
}

/// A queued test message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestQueued {
    pub message_id: Uuid,
    /// The `webhook-id` header the receiver will see.
    pub webhook_id: String,
}

/// One alert for an endpoint, with every delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub webhook_id: String,
    pub incident_id: Option<Uuid>,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Empty in the answer to [`Client::retry_delivery`].
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub attempt: i32,
    /// `success`, `failure` or `gone`.
    pub outcome: String,
    pub status_code: Option<i32>,
    pub duration_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// A rendered canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendered {
    pub canary_id: Uuid,
    pub template: Template,
    pub text: String,
}

/// `GET /v1/detection-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectionKeyInfo {
    /// Base64, 32 bytes.
    pub detection_key: String,
    pub derivation_version: u16,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// The management API client. Cheap to clone (one connection pool).
///
/// ```no_run
/// # async fn run() -> Result<(), keytrap_sdk::Error> {
/// use keytrap_sdk::{Client, Exchange, MintRequest, NewStore};
///
/// let c = Client::new("http://127.0.0.1:8700", std::env::var("KEYTRAP_TOKEN").unwrap_or_default())?;
/// let store = c
///     .create_store(&NewStore { name: "users-db".into(), kind: "database".into(), ..Default::default() })
///     .await?;
/// let minted = c.mint(&MintRequest::new(Exchange::Kucoin, store.id)).await?;
/// println!("{}", minted[0].credentials.as_ref().map(|x| x.api_key.as_str()).unwrap_or(""));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    auth: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// keytrap's `{"error":{code,message}}` answer as an [`Error`] (or the raw text, bounded).
fn api_error(status: reqwest::StatusCode, bytes: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => Error::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            code: "http".into(),
            message: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        },
    }
}

fn push<T: ToString>(q: &mut Vec<(&'static str, String)>, k: &'static str, v: Option<T>) {
    if let Some(v) = v {
        q.push((k, v.to_string()));
    }
}

impl Client {
    /// A client for the API at `base_url` (e.g. `http://127.0.0.1:8700`) with an API
    /// token. Requests time out after 60 seconds.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Self::with_http(base_url, token, http)
    }

    /// As [`Client::new`], with your own `reqwest::Client` (proxies, TLS roots...).
    pub fn with_http(
        base_url: &str,
        token: impl Into<String>,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        let mut base =
            url::Url::parse(base_url).map_err(|e| Error::Url(format!("{base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::Url(format!("{base_url:?} is not an http(s) URL")));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Client {
            http,
            base,
            auth: format!("Bearer {}", token.into()),
        })
    }

    fn url(&self, path: &str) -> Result<url::Url, Error> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| Error::Url(e.to_string()))
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Error> {
        let resp = req.header("authorization", &self.auth).send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&'static str, String)],
    ) -> Result<T, Error> {
        self.send(self.http.get(self.url(path)?).query(query)).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Error> {
        self.send(self.http.post(self.url(path)?).json(body)).await
    }

    // ---- detection

    /// The detection key (needs the `detect` scope; audited).
    pub async fn detection_key(&self) -> Result<DetectionKeyInfo, Error> {
        self.get("v1/detection-key", &[]).await
    }

    /// Fetches the detection key once and returns an offline [`Detector`].
    pub async fn detector(&self) -> Result<Detector, Error> {
        let k = self.detection_key().await?;
        Ok(Detector::from_base64(&k.detection_key)?)
    }

    // ---- stores

    /// Creates a store (`mint` scope).
    pub async fn create_store(&self, store: &NewStore) -> Result<Store, Error> {
        self.post("v1/stores", store).await
    }

    /// A store by id.
    pub async fn get_store(&self, id: Uuid) -> Result<Store, Error> {
        self.get(&format!("v1/stores/{id}"), &[]).await
    }

    /// The store with this exact name, if any.
    pub async fn store_by_name(&self, name: &str) -> Result<Option<Store>, Error> {
        #[derive(Deserialize)]
        struct L {
            stores: Vec<Store>,
        }
        let l: L = self.get("v1/stores", &[("name", name.to_string())]).await?;
        Ok(l.stores.into_iter().next())
    }

    /// One page of stores.
    pub async fn list_stores(
        &self,
        after: Option<Uuid>,
        limit: Option<u32>,
    ) -> Result<Vec<Store>, Error> {
        #[derive(Deserialize)]
        struct L {
            stores: Vec<Store>,
        }
        let mut q = Vec::new();
        push(&mut q, "after", after);
        push(&mut q, "limit", limit);
        Ok(self.get::<L>("v1/stores", &q).await?.stores)
    }

    // ---- canaries

    /// Mints canaries (`mint` scope); they come back with credentials.
    pub async fn mint(&self, req: &MintRequest) -> Result<Vec<Canary>, Error> {
        #[derive(Deserialize)]
        struct M {
            canaries: Vec<Canary>,
        }
        Ok(self.post::<M>("v1/canaries", req).await?.canaries)
    }

    /// A canary, with credentials if `reveal` (needs `mint`; audited).
    pub async fn get_canary(&self, id: Uuid, reveal: bool) -> Result<Canary, Error> {
        self.get(
            &format!("v1/canaries/{id}"),
            &[("reveal", reveal.to_string())],
        )
        .await
    }

    /// One page of canaries.
    pub async fn list_canaries(&self, f: &CanaryFilter) -> Result<Vec<Canary>, Error> {
        #[derive(Deserialize)]
        struct L {
            canaries: Vec<Canary>,
        }
        let mut q = Vec::new();
        push(&mut q, "store_id", f.store_id);
        push(&mut q, "exchange", f.exchange);
        push(&mut q, "status", f.status.as_ref());
        push(&mut q, "label", f.label.as_ref());
        if f.reveal {
            q.push(("reveal", "true".into()));
        }
        push(&mut q, "after", f.after);
        push(&mut q, "limit", f.limit);
        Ok(self.get::<L>("v1/canaries", &q).await?.canaries)
    }

    /// Renders a canary for the place it goes (`mint` scope; audited).
    pub async fn render(&self, id: Uuid, spec: &RenderSpec) -> Result<Rendered, Error> {
        self.post(&format!("v1/canaries/{id}/render"), spec).await
    }

    /// Sets (or with `None` clears) when a canary expires, e.g. a rotated generation.
    pub async fn set_expiry(
        &self,
        id: Uuid,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Canary, Error> {
        self.post(
            &format!("v1/canaries/{id}/expiry"),
            &serde_json::json!({ "expires_at": expires_at }),
        )
        .await
    }

    // ---- placements

    /// Records where canaries were planted, all or none (`mint` scope).
    pub async fn record_placements(&self, p: &[NewPlacement]) -> Result<Vec<Placement>, Error> {
        #[derive(Deserialize)]
        struct L {
            placements: Vec<Placement>,
        }
        Ok(self
            .post::<L>("v1/placements", &serde_json::json!({ "placements": p }))
            .await?
            .placements)
    }

    /// One page of placements.
    pub async fn list_placements(&self, f: &PlacementFilter) -> Result<Vec<Placement>, Error> {
        #[derive(Deserialize)]
        struct L {
            placements: Vec<Placement>,
        }
        let mut q = Vec::new();
        push(&mut q, "store_id", f.store_id);
        push(&mut q, "canary_id", f.canary_id);
        push(&mut q, "after", f.after);
        push(&mut q, "limit", f.limit);
        Ok(self.get::<L>("v1/placements", &q).await?.placements)
    }

    /// Every placement of a store (all pages).
    pub async fn all_placements(&self, store_id: Uuid) -> Result<Vec<Placement>, Error> {
        let mut out: Vec<Placement> = Vec::new();
        loop {
            let page = self
                .list_placements(&PlacementFilter {
                    store_id: Some(store_id),
                    after: out.last().map(|p| p.id),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await?;
            let done = page.len() < 1000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Deletes placements (undoing a failed plant); returns how many.
    pub async fn delete_placements(&self, ids: &[Uuid]) -> Result<u64, Error> {
        #[derive(Deserialize)]
        struct D {
            deleted: u64,
        }
        Ok(self
            .post::<D>("v1/placements/delete", &serde_json::json!({ "ids": ids }))
            .await?
            .deleted)
    }

    // ---- hits and incidents

    /// One page of hits.
    pub async fn list_hits(&self, f: &HitFilter) -> Result<Vec<Hit>, Error> {
        #[derive(Deserialize)]
        struct L {
            hits: Vec<Hit>,
        }
        let mut q = Vec::new();
        push(&mut q, "canary_id", f.canary_id);
        push(&mut q, "store_id", f.store_id);
        push(&mut q, "since", f.since.map(|s| s.to_rfc3339()));
        push(&mut q, "after", f.after);
        push(&mut q, "limit", f.limit);
        Ok(self.get::<L>("v1/hits", &q).await?.hits)
    }

    /// One page of incidents.
    pub async fn list_incidents(&self, f: &IncidentFilter) -> Result<Vec<Incident>, Error> {
        #[derive(Deserialize)]
        struct L {
            incidents: Vec<Incident>,
        }
        let mut q = Vec::new();
        push(&mut q, "status", f.status.as_ref());
        push(&mut q, "kind", f.kind.as_ref());
        push(&mut q, "store_id", f.store_id);
        push(&mut q, "after", f.after);
        push(&mut q, "limit", f.limit);
        Ok(self.get::<L>("v1/incidents", &q).await?.incidents)
    }

    /// An incident by id.
    pub async fn get_incident(&self, id: Uuid) -> Result<Incident, Error> {
        self.get(&format!("v1/incidents/{id}"), &[]).await
    }

    /// Acknowledges an incident.
    pub async fn ack_incident(&self, id: Uuid) -> Result<Incident, Error> {
        self.post(&format!("v1/incidents/{id}/ack"), &serde_json::json!({}))
            .await
    }

    /// Resolves an incident.
    pub async fn resolve_incident(&self, id: Uuid) -> Result<Incident, Error> {
        self.post(
            &format!("v1/incidents/{id}/resolve"),
            &serde_json::json!({}),
        )
        .await
    }

    // ---- webhooks (admin scope)

    /// Registers a webhook endpoint; the answer holds its signing secret, shown once.
    pub async fn create_webhook(&self, w: &NewWebhook) -> Result<WebhookCreated, Error> {
        self.post("v1/webhooks", w).await
    }

    /// Every endpoint of the tenant.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, Error> {
        #[derive(Deserialize)]
        struct L {
            webhooks: Vec<Webhook>,
        }
        Ok(self.get::<L>("v1/webhooks", &[]).await?.webhooks)
    }

    /// An endpoint by id.
    pub async fn get_webhook(&self, id: Uuid) -> Result<Webhook, Error> {
        self.get(&format!("v1/webhooks/{id}"), &[]).await
    }

    /// Stops deliveries to an endpoint (messages wait until it is enabled again).
    pub async fn disable_webhook(&self, id: Uuid) -> Result<Webhook, Error> {
        self.post(&format!("v1/webhooks/{id}/disable"), &serde_json::json!({}))
            .await
    }

    /// Enables an endpoint again (also after a 410 or 5 days of failures).
    pub async fn enable_webhook(&self, id: Uuid) -> Result<Webhook, Error> {
        self.post(&format!("v1/webhooks/{id}/enable"), &serde_json::json!({}))
            .await
    }

    /// Deletes an endpoint.
    pub async fn delete_webhook(&self, id: Uuid) -> Result<(), Error> {
        let resp = self
            .http
            .delete(self.url(&format!("v1/webhooks/{id}"))?)
            .header("authorization", &self.auth)
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = resp.bytes().await?;
        Err(api_error(status, &bytes))
    }

    /// A new signing secret; the previous one keeps signing for `overlap` (default 24 h).
    pub async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        overlap: Option<Duration>,
    ) -> Result<SecretRotated, Error> {
        let mut q = Vec::new();
        push(&mut q, "overlap_secs", overlap.map(|d| d.as_secs()));
        self.send(
            self.http
                .post(self.url(&format!("v1/webhooks/{id}/rotate"))?)
                .query(&q)
                .json(&serde_json::json!({})),
        )
        .await
    }

    /// Queues a `webhook.test` message to the endpoint.
    pub async fn test_webhook(&self, id: Uuid) -> Result<TestQueued, Error> {
        self.post(&format!("v1/webhooks/{id}/test"), &serde_json::json!({}))
            .await
    }

    /// The endpoint's messages (one page), each with every attempt.
    pub async fn list_deliveries(&self, id: Uuid) -> Result<Vec<Delivery>, Error> {
        #[derive(Deserialize)]
        struct L {
            deliveries: Vec<Delivery>,
        }
        Ok(self
            .get::<L>(&format!("v1/webhooks/{id}/deliveries"), &[])
            .await?
            .deliveries)
    }

    /// Queues a dead-lettered message again.
    pub async fn retry_delivery(&self, message_id: Uuid) -> Result<Delivery, Error> {
        self.post(
            &format!("v1/deliveries/{message_id}/retry"),
            &serde_json::json!({}),
        )
        .await
    }
}
