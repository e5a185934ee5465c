//! The trap's records: hits, incidents, events, unknown-key sightings, remembered orders;
//! and the incident rules both backends apply inside the hit's transaction.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use keytrap_core::Exchange;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{Page, StoreError};

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(format!("unknown {} {s:?}", stringify!($name))),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// How bad a use is: `low` the key was presented without a valid signature (the key
/// leaked, perhaps not the secret); `high` a valid signature (key and secret leaked);
/// `critical` an order, withdrawal, transfer or address request with a valid signature.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    High,
    Critical,
}
text_enum!(Severity { Low => "low", High => "high", Critical => "critical" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureState {
    Valid,
    Invalid,
    Missing,
}
text_enum!(SignatureState { Valid => "valid", Invalid => "invalid", Missing => "missing" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Resolved,
}
text_enum!(IncidentStatus { Open => "open", Acknowledged => "acknowledged", Resolved => "resolved" });

/// A canary's own incident, or the store-level "store X leaked" incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentKind {
    Canary,
    Store,
}
text_enum!(IncidentKind { Canary => "canary", Store => "store" });

/// A use of a canary, with its evidence. Attacker-controlled text is bounded by the trap
/// before it gets here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hit {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub canary_id: Uuid,
    pub store_id: Uuid,
    pub incident_id: Option<Uuid>,
    pub exchange: Exchange,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body_excerpt: Option<String>,
    pub source_ip: String,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    /// What gave the client away, e.g. `ccxt` (from its order-id prefix or headers).
    pub client_fingerprint: Option<String>,
    pub signature_state: SignatureState,
    /// `read`, `permissions`, `trade`, `cancel`, `address`, `withdraw`, `transfer`.
    pub action_class: String,
    /// Symbol, side, amount, price, withdrawal address...
    pub action_params: serde_json::Value,
    pub severity: Severity,
    pub received_at: DateTime<Utc>,
}

/// A request that presented a key that is not a canary (or not a key at all).
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownUse {
    pub exchange: Exchange,
    /// The client address, IPv6 reduced to its /64 so one host cannot fan out.
    pub source: String,
    /// SHA-256 of the presented key: equal keys collapse, the key is not kept.
    pub key_hash: [u8; 32],
    /// A few characters of the key, enough to recognise it, not to use it.
    pub key_hint: String,
    pub malformed: bool,
    pub path: String,
    pub user_agent: Option<String>,
    pub at: DateTime<Utc>,
}

/// What the trap hands the group commit.
#[derive(Debug, Clone, PartialEq)]
pub enum TrapEvent {
    Hit(Box<Hit>),
    Unknown(UnknownUse),
}

/// At most this many distinct unknown keys are kept per (exchange, source).
pub const UNKNOWN_KEYS_PER_SOURCE: i64 = 100;

/// The unknown-key sightings of one batch from one (exchange, source), so a backend
/// writes one counter update per source per batch instead of one per request.
#[derive(Debug)]
pub struct UnknownGroup<'a> {
    pub exchange: Exchange,
    pub source: &'a str,
    pub requests: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// The first sighting of each distinct key in the batch, in arrival order.
    pub keys: Vec<&'a UnknownUse>,
}

/// A batch's hits, in batch order.
pub fn batch_hits(batch: &[TrapEvent]) -> Vec<&Hit> {
    batch
        .iter()
        .filter_map(|ev| match ev {
            TrapEvent::Hit(h) => Some(h.as_ref()),
            TrapEvent::Unknown(_) => None,
        })
        .collect()
}

/// Groups a batch's unknown-key sightings per (exchange, source), in first-arrival order.
pub fn unknown_groups(batch: &[TrapEvent]) -> Vec<UnknownGroup<'_>> {
    let mut groups: Vec<UnknownGroup<'_>> = Vec::new();
    for ev in batch {
        let TrapEvent::Unknown(u) = ev else { continue };
        let g = match groups
            .iter_mut()
            .position(|g| g.exchange == u.exchange && g.source == u.source)
        {
            Some(i) => &mut groups[i],
            None => {
                groups.push(UnknownGroup {
                    exchange: u.exchange,
                    source: &u.source,
                    requests: 0,
                    first_at: u.at,
                    last_at: u.at,
                    keys: Vec::new(),
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        g.requests += 1;
        g.first_at = g.first_at.min(u.at);
        g.last_at = g.last_at.max(u.at);
        // Bounded: no source keeps more first sightings than the per-source limit.
        if g.keys.len() < UNKNOWN_KEYS_PER_SOURCE as usize
            && !g.keys.iter().any(|k| k.key_hash == u.key_hash)
        {
            g.keys.push(u);
        }
    }
    groups
}

/// The hits of one batch that share an incident (one canary's, or one store's), for the
/// batched fast path: an open incident at or above `max_rank` is only counted, with one
/// statement for the whole batch.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentGroup {
    /// The canary id or the store id.
    pub key: Uuid,
    pub hits: i64,
    pub max_rank: i64,
    pub last_seen: DateTime<Utc>,
    /// The group's last hit in batch order.
    pub last_hit: Uuid,
    /// Canaries whose own incident opened in this batch (store groups only).
    pub new_canaries: i64,
}

/// Groups `hits` by `key`, in first-appearance order; `opened[i]` says whether hit `i`
/// opened its canary's incident (counted into the store groups' `new_canaries`).
pub fn incident_groups(
    hits: &[&Hit],
    key: impl Fn(&Hit) -> Uuid,
    opened: Option<&[bool]>,
) -> Vec<IncidentGroup> {
    let mut groups: Vec<IncidentGroup> = Vec::new();
    for (i, h) in hits.iter().enumerate() {
        let k = key(h);
        let new = i64::from(opened.is_some_and(|o| o.get(i).copied().unwrap_or(false)));
        match groups.iter_mut().find(|g| g.key == k) {
            Some(g) => {
                g.hits += 1;
                g.max_rank = g.max_rank.max(severity_rank(h.severity));
                g.last_seen = g.last_seen.max(h.received_at);
                g.last_hit = h.id;
                g.new_canaries += new;
            }
            None => groups.push(IncidentGroup {
                key: k,
                hits: 1,
                max_rank: severity_rank(h.severity),
                last_seen: h.received_at,
                last_hit: h.id,
                new_canaries: new,
            }),
        }
    }
    groups
}

/// Severity as a number for SQL comparisons (`low` 0, `high` 1, `critical` 2).
pub fn severity_rank(s: Severity) -> i64 {
    match s {
        Severity::Low => 0,
        Severity::High => 1,
        Severity::Critical => 2,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: IncidentKind,
    pub canary_id: Option<Uuid>,
    pub store_id: Uuid,
    pub status: IncidentStatus,
    pub severity: Severity,
    pub hit_count: i64,
    /// Distinct canaries of the store used while this incident was open (store incidents).
    pub canary_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub last_hit_id: Option<Uuid>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// An event for the alerting side: `incident.opened`, `incident.escalated`,
/// `store.compromised`. Written in the hit's transaction (the outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub incident_id: Option<Uuid>,
    pub hit_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Unknown-key traffic per (exchange, source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnknownSource {
    pub exchange: Exchange,
    pub source: String,
    pub requests: i64,
    pub distinct_keys: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// An order a canary placed at the trap (accepted, never executed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrapOrder {
    pub canary_id: Uuid,
    pub order_id: String,
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: String,
    pub order_type: String,
    pub price: Option<String>,
    pub amount: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct HitFilter {
    pub canary_id: Option<Uuid>,
    pub store_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub page: Page,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    pub kind: Option<IncidentKind>,
    pub store_id: Option<Uuid>,
    pub page: Page,
}

/// What a backend found for an unresolved incident before applying a hit.
#[derive(Debug, Clone, Copy)]
pub struct OpenIncident {
    pub id: Uuid,
    pub severity: Severity,
}

/// What applying a hit to an incident did, and which event it emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A new incident; emits `incident.opened` (canary) or `store.compromised` (store).
    Opened,
    /// Severity rose; emits `incident.escalated`.
    Escalated(Severity),
    /// Counted, nothing to announce.
    Counted,
}

/// The incident rule, shared by both backends.
pub fn transition(current: Option<OpenIncident>, hit: Severity) -> Transition {
    match current {
        None => Transition::Opened,
        Some(c) if hit > c.severity => Transition::Escalated(hit),
        Some(_) => Transition::Counted,
    }
}

/// The event a transition emits for an incident of `kind`, if any.
pub fn event_type(kind: IncidentKind, t: Transition) -> Option<&'static str> {
    match (kind, t) {
        (IncidentKind::Canary, Transition::Opened) => Some("incident.opened"),
        (IncidentKind::Store, Transition::Opened) => Some("store.compromised"),
        (_, Transition::Escalated(_)) => Some("incident.escalated"),
        (_, Transition::Counted) => None,
    }
}

/// The small payload stored with an event; the alerting side joins the rest.
pub fn event_payload(
    kind: IncidentKind,
    incident: Uuid,
    hit: &Hit,
    t: Transition,
) -> serde_json::Value {
    serde_json::json!({
        "kind": kind.as_str(),
        "incident_id": incident,
        "canary_id": hit.canary_id,
        "store_id": hit.store_id,
        "exchange": hit.exchange,
        "severity": match t { Transition::Escalated(s) => s, _ => hit.severity },
        "action_class": hit.action_class,
        "source_ip": hit.source_ip,
    })
}

pub(crate) fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T, StoreError> {
    s.parse().map_err(StoreError::Corrupt)
}

/// Parses a stored text value (severity, status...) in a backend.
pub fn parse_text<T: FromStr<Err = String>>(s: &str) -> Result<T, StoreError> {
    parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_open_then_escalate_only_upwards() {
        let id = Uuid::nil();
        assert_eq!(transition(None, Severity::Low), Transition::Opened);
        let low = Some(OpenIncident {
            id,
            severity: Severity::Low,
        });
        assert_eq!(transition(low, Severity::Low), Transition::Counted);
        assert_eq!(
            transition(low, Severity::Critical),
            Transition::Escalated(Severity::Critical)
        );
        let crit = Some(OpenIncident {
            id,
            severity: Severity::Critical,
        });
        assert_eq!(transition(crit, Severity::High), Transition::Counted);
        assert_eq!(
            event_type(IncidentKind::Store, Transition::Opened),
            Some("store.compromised")
        );
        assert_eq!(
            event_type(IncidentKind::Canary, Transition::Opened),
            Some("incident.opened")
        );
        assert!(Severity::Critical > Severity::High && Severity::High > Severity::Low);
    }
}
