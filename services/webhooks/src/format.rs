//! Alert bodies for each endpoint format.
//!
//! [`render`] turns an [`Alert`] (the store models of the incident, canary, store and
//! triggering hit) into the bytes to POST. Every format opens with the same human line
//! ([`headline`]): which store leaked, which exchange, what the attacker did, from where,
//! and what to do first. Attacker-controlled text (user agent, path, query, body, action
//! parameters, forwarded chain) is bounded and escaped for each format: JSON escaping for
//! the machine formats, and for chat formats no mentions (`<!channel>`, `@everyone`),
//! no links (`<url|text>`, `[text](url)`, bare `scheme://`) and no markdown.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use keytrap_store::{Canary, Hit, Incident, Severity, Store};
use serde_json::{json, Map, Value};
use url::Url;

/// The events an endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A canary's first use: a new canary incident.
    IncidentOpened,
    /// An open incident's severity rose.
    IncidentEscalated,
    /// Canaries of one store are being used: the store leaked.
    StoreCompromised,
    /// Sent by `POST /v1/webhooks/{id}/test`.
    WebhookTest,
    /// Optional, every hit.
    HitRecorded,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 5] = [
        EventType::IncidentOpened,
        EventType::IncidentEscalated,
        EventType::StoreCompromised,
        EventType::WebhookTest,
        EventType::HitRecorded,
    ];

    /// The wire name: `incident.opened`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::IncidentOpened => "incident.opened",
            EventType::IncidentEscalated => "incident.escalated",
            EventType::StoreCompromised => "store.compromised",
            EventType::WebhookTest => "webhook.test",
            EventType::HitRecorded => "hit.recorded",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventType::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event {s:?}; expected incident.opened, incident.escalated, store.compromised, webhook.test or hit.recorded")
            })
    }
}

/// An endpoint's body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Standard Webhooks JSON `{type, timestamp, data}`.
    #[default]
    Standard,
    /// CloudEvents 1.0, structured JSON mode.
    Cloudevents,
    /// Slack incoming webhook (`text` + Block Kit `blocks`).
    Slack,
    /// Discord webhook (`content`, `embeds`, no mentions); posted with `?wait=true`.
    Discord,
    /// Microsoft Teams / Power Automate workflow: an Adaptive Card message.
    Teams,
    /// PagerDuty Events API v2 (`trigger`, `dedup_key` = incident id).
    Pagerduty,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 6] = [
        Format::Standard,
        Format::Cloudevents,
        Format::Slack,
        Format::Discord,
        Format::Teams,
        Format::Pagerduty,
    ];

    /// The API name: `standard`, `cloudevents`, `slack`, `discord`, `teams`, `pagerduty`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Cloudevents => "cloudevents",
            Format::Slack => "slack",
            Format::Discord => "discord",
            Format::Teams => "teams",
            Format::Pagerduty => "pagerduty",
        }
    }

    /// The `Content-Type` of its bodies.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Cloudevents => "application/cloudevents+json; charset=utf-8",
            _ => "application/json",
        }
    }

    /// The URL to POST to: Discord's gets `wait=true` so a failure shows in the status
    /// (without it Discord answers 204 before validating the message).
    pub fn delivery_url(self, url: &Url) -> Url {
        let mut u = url.clone();
        if self == Format::Discord && !u.query_pairs().any(|(k, _)| k == "wait") {
            u.query_pairs_mut().append_pair("wait", "true");
        }
        u
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!("unknown format {s:?}; expected standard, cloudevents, slack, discord, teams or pagerduty")
            })
    }
}

/// One alert to render: the event and the rows it is about, as the store returns them.
/// `webhook.test` needs none of the rows; the others render with whatever is present.
#[derive(Debug, Clone, Copy)]
pub struct Alert<'a> {
    pub event: EventType,
    /// The message id (`webhook-id`, CloudEvents `id`), stable across retries.
    pub message_id: &'a str,
    /// When the event happened (the outbox row's `created_at`).
    pub occurred_at: DateTime<Utc>,
    pub incident: Option<&'a Incident>,
    pub canary: Option<&'a Canary>,
    pub store: Option<&'a Store>,
    /// The hit that triggered the event.
    pub hit: Option<&'a Hit>,
}

impl<'a> Alert<'a> {
    /// A `webhook.test` alert.
    pub fn test(message_id: &'a str, at: DateTime<Utc>) -> Self {
        Alert {
            event: EventType::WebhookTest,
            message_id,
            occurred_at: at,
            incident: None,
            canary: None,
            store: None,
            hit: None,
        }
    }

    /// The alert's severity: the incident's (after escalation), else the hit's; for
    /// `hit.recorded` the hit's own.
    pub fn severity(&self) -> Option<Severity> {
        let hit = self.hit.map(|h| h.severity);
        let incident = self.incident.map(|i| i.severity);
        if self.event == EventType::HitRecorded {
            hit.or(incident)
        } else {
            incident.or(hit)
        }
    }
}

/// Per-endpoint rendering settings.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions<'a> {
    /// CloudEvents `source` and PagerDuty's fallback `source` (e.g. the instance URL).
    pub source: &'a str,
    /// PagerDuty integration key; required for [`Format::Pagerduty`].
    pub pagerduty_routing_key: Option<&'a str>,
}

impl Default for RenderOptions<'_> {
    fn default() -> Self {
        RenderOptions {
            source: "keytrap",
            pagerduty_routing_key: None,
        }
    }
}

/// A rendered body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

/// Why an alert could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the pagerduty format needs a routing key")]
    MissingRoutingKey,
}

/// Bounds on attacker-controlled text, in characters.
mod limits {
    pub const USER_AGENT: usize = 512;
    pub const PATH: usize = 1024;
    pub const QUERY: usize = 2048;
    pub const BODY: usize = 4096;
    pub const PARAMS_JSON: usize = 4096;
    pub const SHORT: usize = 256;
    /// Each attacker value shown in a chat message.
    pub const CHAT_FIELD: usize = 200;
}

/// Truncates to `max` characters on a character boundary, marking the cut with `…`.
pub(crate) fn bound(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Bounded, on one line: control characters (newlines included) become spaces, so a
/// value cannot fake extra lines in a chat message.
fn one_line(s: &str, max: usize) -> String {
    let b = bound(s, max);
    b.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Breaks `scheme://` so chat clients do not turn attacker text into a link.
fn defang(s: &str) -> String {
    s.replace("://", ":\u{200B}//")
}

/// What the attacker did, as the end of "used from X to ...".
fn action_phrase(class: &str) -> String {
    match class {
        "read" => "read account data".into(),
        "permissions" => "read the key's permissions".into(),
        "trade" => "place an order".into(),
        "cancel" => "cancel an order".into(),
        "address" => "request a deposit address".into(),
        "withdraw" => "request a withdrawal".into(),
        "transfer" => "request a transfer".into(),
        other => format!("call {}", one_line(other, 40)),
    }
}

/// The headline's parts, each a piece of dynamic text to escape per format.
struct Parts {
    exchange: &'static str,
    store: String,
    source_ip: String,
    action: String,
}

fn parts(a: &Alert) -> Parts {
    let exchange = a
        .canary
        .map(|c| c.exchange)
        .or(a.hit.map(|h| h.exchange))
        .map(|e| e.display_name())
        .unwrap_or("Exchange");
    Parts {
        exchange,
        store: a
            .store
            .map(|s| one_line(&s.name, limits::SHORT))
            .unwrap_or_else(|| "(unknown store)".into()),
        source_ip: a
            .hit
            .map(|h| one_line(&h.source_ip, 64))
            .unwrap_or_else(|| "an unknown address".into()),
        action: a
            .hit
            .map(|h| action_phrase(&h.action_class))
            .unwrap_or_else(|| "use it".into()),
    }
}

fn headline_with(a: &Alert, esc: &dyn Fn(&str) -> String) -> String {
    if a.event == EventType::WebhookTest {
        return "Test alert from keytrap: this endpoint receives keytrap alerts; nothing to do"
            .into();
    }
    let p = parts(a);
    let (store, ip, action) = (esc(&p.store), esc(&p.source_ip), esc(&p.action));
    let what = format!(
        "{} canary from store {store} used from {ip} to {action}",
        p.exchange
    );
    let todo = format!("rotate every real key held in {store}");
    match a.event {
        EventType::IncidentEscalated => {
            let sev = a.severity().map(|s| s.as_str()).unwrap_or("high");
            format!("Escalated to {sev}: {what}: {todo}")
        }
        EventType::StoreCompromised => {
            let n = a.incident.map(|i| i.canary_count).unwrap_or(1);
            let canaries = if n == 1 { "canary" } else { "canaries" };
            format!("Store {store} leaked ({n} {canaries} used): {what}: {todo}")
        }
        _ => format!("{what}: {todo}"),
    }
}

/// The first line a human reads, as plain text, e.g. "Binance canary from store
/// prod-users-db used from 203.0.113.9 to place an order: rotate every real key held in
/// prod-users-db".
pub fn headline(a: &Alert) -> String {
    headline_with(a, &|s| s.to_string())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_bound(s: &Option<String>, max: usize) -> Value {
    s.as_deref()
        .map(|v| Value::String(bound(v, max)))
        .unwrap_or(Value::Null)
}

/// The hit's evidence, attacker text bounded.
fn hit_json(h: &Hit) -> Value {
    let params = match serde_json::to_string(&h.action_params) {
        Ok(s) if s.chars().count() <= limits::PARAMS_JSON => h.action_params.clone(),
        Ok(s) => json!({ "truncated": bound(&s, limits::PARAMS_JSON) }),
        Err(_) => Value::Null,
    };
    json!({
        "id": h.id,
        "canary_id": h.canary_id,
        "store_id": h.store_id,
        "incident_id": h.incident_id,
        "exchange": h.exchange,
        "method": bound(&h.method, 16),
        "path": bound(&h.path, limits::PATH),
        "query": opt_bound(&h.query, limits::QUERY),
        "body_excerpt": opt_bound(&h.body_excerpt, limits::BODY),
        "source_ip": bound(&h.source_ip, 64),
        "forwarded_for": opt_bound(&h.forwarded_for, limits::SHORT),
        "user_agent": opt_bound(&h.user_agent, limits::USER_AGENT),
        "client_fingerprint": opt_bound(&h.client_fingerprint, 64),
        "signature_state": h.signature_state,
        "action_class": bound(&h.action_class, 32),
        "action_params": params,
        "severity": h.severity,
        "received_at": rfc3339(h.received_at),
    })
}

/// The canary without anything secret: its credentials are never part of an alert
/// (they are not in the model either; listing fields keeps it so if the model grows).
fn canary_json(c: &Canary) -> Value {
    json!({
        "id": c.id,
        "exchange": c.exchange,
        "store_id": c.store_id,
        "memo": c.memo,
        "labels": c.labels,
        "status": c.status,
        "created_at": rfc3339(c.created_at),
        "expires_at": c.expires_at.map(rfc3339),
    })
}

fn store_json(s: &Store) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "kind": s.kind,
        "location": s.location,
        "labels": s.labels,
    })
}

fn incident_json(i: &Incident) -> Value {
    json!({
        "id": i.id,
        "kind": i.kind,
        "canary_id": i.canary_id,
        "store_id": i.store_id,
        "status": i.status,
        "severity": i.severity,
        "hit_count": i.hit_count,
        "canary_count": i.canary_count,
        "first_seen": rfc3339(i.first_seen),
        "last_seen": rfc3339(i.last_seen),
        "last_hit_id": i.last_hit_id,
    })
}

/// The `data` object shared by `standard`, `cloudevents` and PagerDuty's details.
pub fn data(a: &Alert) -> Value {
    let mut m = Map::new();
    m.insert("summary".into(), Value::String(headline(a)));
    if let Some(s) = a.severity() {
        m.insert("severity".into(), json!(s));
    }
    m.insert(
        "incident".into(),
        a.incident.map(incident_json).unwrap_or(Value::Null),
    );
    m.insert(
        "canary".into(),
        a.canary.map(canary_json).unwrap_or(Value::Null),
    );
    m.insert(
        "store".into(),
        a.store.map(store_json).unwrap_or(Value::Null),
    );
    m.insert("hit".into(), a.hit.map(hit_json).unwrap_or(Value::Null));
    Value::Object(m)
}

/// Renders `alert` in `format`.
pub fn render(format: Format, a: &Alert, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    let body = match format {
        Format::Standard => standard(a),
        Format::Cloudevents => cloudevents(a, opts),
        Format::Slack => slack(a),
        Format::Discord => discord(a),
        Format::Teams => teams(a),
        Format::Pagerduty => pagerduty(a, opts)?,
    };
    let content_type = format.content_type();
    Ok(Rendered {
        // Serializing a Value cannot fail (string keys only).
        body: serde_json::to_vec(&body).unwrap_or_default(),
        content_type,
    })
}

fn standard(a: &Alert) -> Value {
    json!({
        "type": a.event.as_str(),
        "timestamp": rfc3339(a.occurred_at),
        "data": data(a),
    })
}

fn cloudevents(a: &Alert, opts: &RenderOptions) -> Value {
    let mut ev = json!({
        "specversion": "1.0",
        "id": a.message_id,
        "source": opts.source,
        "type": format!("io.keytrap.{}", a.event.as_str()),
        "time": rfc3339(a.occurred_at),
        "datacontenttype": "application/json",
        "data": data(a),
    });
    if let Some(i) = a.incident {
        ev["subject"] = json!(format!("incidents/{}", i.id));
    }
    ev
}

/// Rows shown in chat formats: (label, attacker-or-tenant value).
fn facts(a: &Alert) -> Vec<(&'static str, String)> {
    let mut f = Vec::new();
    if let Some(s) = a.severity() {
        f.push(("Severity", s.as_str().to_string()));
    }
    if let Some(h) = a.hit {
        f.push(("Exchange", h.exchange.display_name().to_string()));
        f.push(("Source IP", h.source_ip.clone()));
        f.push(("Action", h.action_class.clone()));
        f.push(("Signature", h.signature_state.as_str().to_string()));
        f.push(("Request", format!("{} {}", h.method, h.path)));
        if let Some(ua) = &h.user_agent {
            f.push(("User agent", ua.clone()));
        }
        if let Some(c) = &h.client_fingerprint {
            f.push(("Client", c.clone()));
        }
        if let Some(xff) = &h.forwarded_for {
            f.push(("Forwarded for", xff.clone()));
        }
        if !h.action_params.is_null() && h.action_params != json!({}) {
            f.push(("Parameters", h.action_params.to_string()));
        }
    }
    if let Some(s) = a.store {
        f.push(("Store", s.name.clone()));
        if let Some(l) = &s.location {
            f.push(("Location", l.clone()));
        }
    }
    if let Some(i) = a.incident {
        f.push(("Incident", i.id.to_string()));
        f.push(("Hits", i.hit_count.to_string()));
    }
    f.into_iter()
        .map(|(k, v)| (k, one_line(&v, limits::CHAT_FIELD)))
        .collect()
}

fn title(a: &Alert) -> String {
    let sev = a.severity().map(|s| s.as_str()).unwrap_or("info");
    let exchange = parts(a).exchange;
    match a.event {
        EventType::WebhookTest => "keytrap test alert".into(),
        EventType::IncidentOpened => format!("keytrap: {exchange} canary used ({sev})"),
        EventType::IncidentEscalated => format!("keytrap: incident escalated to {sev}"),
        EventType::StoreCompromised => "keytrap: store compromised".into(),
        EventType::HitRecorded => format!("keytrap: {exchange} canary hit ({sev})"),
    }
}

/// Slack: `&`, `<`, `>` are the only control characters of its text format; escaping
/// them stops `<!channel>`, `<@U..>` and `<url|text>`. Values are also put in code spans
/// (no mrkdwn inside) and URLs defanged.
pub fn slack_escape(s: &str) -> String {
    defang(
        &s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
    )
}

fn slack_code(s: &str) -> String {
    // A backtick would end the code span; U+02CB looks alike and does not.
    format!("`{}`", slack_escape(&s.replace('`', "\u{02CB}")))
}

fn slack(a: &Alert) -> Value {
    let text = headline_with(a, &|s| slack_escape(s));
    let fields: Vec<Value> = facts(a)
        .into_iter()
        .take(10) // Slack allows at most 10 fields per section.
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_code(&v))}))
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": title(a), "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", text.replace('*', "\u{2217}"))}}),
    ];
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("{} · message {}", a.event.as_str(), slack_escape(a.message_id))}
    ]}));
    json!({ "text": text, "blocks": blocks })
}

/// Discord: backslash-escapes markdown, `<` (mentions, `<#channel>`, `<url>`) and `@`
/// mentions get a zero-width space so `@everyone` / `@here` stay text even where
/// `allowed_mentions` is ignored; URLs defanged.
pub fn discord_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '[' | ']' | '(' | ')' | '#' | '-'
            | ':' => {
                out.push('\\');
                out.push(c);
            }
            '@' => out.push_str("@\u{200B}"),
            _ => out.push(c),
        }
    }
    // After escaping, `:` is `\:`; break links that would survive as `http\://`.
    out.replace("\\://", "\\:\u{200B}//")
}

fn discord_code(s: &str) -> String {
    let v = s.replace('`', "\u{02CB}").replace('@', "@\u{200B}");
    format!("`{}`", defang(&v))
}

fn discord(a: &Alert) -> Value {
    let content = bound(&headline_with(a, &|s| discord_escape(s)), 1900);
    let color = match a.severity() {
        Some(Severity::Critical) => 0xD32F2F,
        Some(Severity::High) => 0xF57C00,
        Some(Severity::Low) => 0xFBC02D,
        None => 0x607D8B,
    };
    let fields: Vec<Value> = facts(a)
        .into_iter()
        .take(25)
        .map(|(k, v)| json!({"name": k, "value": discord_code(&v), "inline": v.len() < 40}))
        .collect();
    json!({
        "content": content,
        "embeds": [{
            "title": title(a),
            "color": color,
            "fields": fields,
            "timestamp": rfc3339(a.occurred_at),
            "footer": {"text": format!("{} · {}", a.event.as_str(), bound(a.message_id, 100))},
        }],
        "allowed_mentions": {"parse": []},
    })
}

/// Teams (Adaptive Card markdown subset): backslash-escapes markdown and brackets so
/// `[text](url)` cannot form a link even if escapes are not honoured, and defangs URLs.
pub fn teams_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '[' | ']' | '(' | ')' | '#' | '<' | '>' | '-' | '+'
            | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    defang(&out)
}

fn teams(a: &Alert) -> Value {
    let headline = headline_with(a, &|s| teams_escape(s));
    let style = match a.severity() {
        Some(Severity::Critical | Severity::High) => "attention",
        Some(Severity::Low) => "warning",
        None => "default",
    };
    let facts: Vec<Value> = facts(a)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": teams_escape(&v)}))
        .collect();
    json!({
        "type": "message",
        "summary": bound(&headline, 250),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": title(a), "weight": "Bolder", "size": "Medium", "color": style, "wrap": true},
                    {"type": "TextBlock", "text": headline, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                    {"type": "TextBlock", "text": format!("{} · message {}", a.event.as_str(), teams_escape(a.message_id)), "isSubtle": true, "size": "Small", "wrap": true},
                ],
            },
        }],
    })
}

/// PagerDuty severity: low -> warning, high -> error, critical -> critical.
pub fn pagerduty_severity(s: Option<Severity>) -> &'static str {
    match s {
        Some(Severity::Low) => "warning",
        Some(Severity::High) => "error",
        Some(Severity::Critical) => "critical",
        None => "info",
    }
}

fn pagerduty(a: &Alert, opts: &RenderOptions) -> Result<Value, RenderError> {
    let key = opts
        .pagerduty_routing_key
        .filter(|k| !k.is_empty())
        .ok_or(RenderError::MissingRoutingKey)?;
    // PagerDuty shows the summary as plain text; it is capped at 1024 characters.
    let summary = bound(&one_line(&headline(a), 2000), 1000);
    let dedup = a
        .incident
        .map(|i| i.id.to_string())
        .unwrap_or_else(|| a.message_id.to_string());
    let source = a
        .store
        .map(|s| one_line(&s.name, limits::SHORT))
        .unwrap_or_else(|| opts.source.to_string());
    let mut payload = json!({
        "summary": summary,
        "source": source,
        "severity": pagerduty_severity(a.severity()),
        "timestamp": rfc3339(a.occurred_at),
        "class": a.event.as_str(),
        "custom_details": data(a),
    });
    if let Some(h) = a.hit {
        payload["component"] = json!(h.exchange.as_str());
        payload["group"] = json!(bound(&h.action_class, 32));
    }
    Ok(json!({
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "client": "keytrap",
        "payload": payload,
    }))
}

#[cfg(test)]
mod tests;
