use super::*;
use chrono::TimeZone;
use keytrap_core::Exchange;
use keytrap_store::{
    CanaryStatus, IncidentKind, IncidentStatus, Labels, SignatureState, StoreKind,
};
use uuid::Uuid;

pub(crate) struct Fixture {
    pub store: Store,
    pub canary: Canary,
    pub hit: Hit,
    pub incident: Incident,
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("time")
}

const HOSTILE: &str = "<!channel> <!here> @everyone @here <@U123> <https://evil.example|click> \
    [bank](https://evil.example) **bold** `code` ~~x~~ ||spoiler|| # head\n> quote\r\n&amp; \u{0007}";

pub(crate) fn fixture(ua: &str) -> Fixture {
    let tenant = Uuid::now_v7();
    let mut labels = Labels::new();
    labels.insert("env".into(), "prod".into());
    let store = Store {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        name: "prod-users-db".into(),
        kind: StoreKind::Database,
        location: Some("pg-main/users.api_keys".into()),
        labels: labels.clone(),
        created_at: at(),
    };
    let canary = Canary {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        store_id: store.id,
        exchange: Exchange::Binance,
        key_version: 1,
        memo: Some("row 4411".into()),
        labels,
        status: CanaryStatus::Active,
        created_at: at(),
        expires_at: None,
        disabled_at: None,
    };
    let incident_id = Uuid::now_v7();
    let hit = Hit {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        canary_id: canary.id,
        store_id: store.id,
        incident_id: Some(incident_id),
        exchange: Exchange::Binance,
        method: "POST".into(),
        path: "/api/v3/order".into(),
        query: Some(format!("symbol=PEPEUSDT&side=BUY&note={ua}")),
        body_excerpt: Some("x".repeat(10_000)),
        source_ip: "203.0.113.9".into(),
        forwarded_for: None,
        user_agent: Some(ua.into()),
        client_fingerprint: Some("ccxt".into()),
        signature_state: SignatureState::Valid,
        action_class: "trade".into(),
        action_params: json!({"symbol": "PEPEUSDT", "side": "BUY", "note": ua}),
        severity: Severity::Critical,
        received_at: at(),
    };
    let incident = Incident {
        id: incident_id,
        tenant_id: tenant,
        kind: IncidentKind::Canary,
        canary_id: Some(canary.id),
        store_id: store.id,
        status: IncidentStatus::Open,
        severity: Severity::Critical,
        hit_count: 1,
        canary_count: 1,
        first_seen: at(),
        last_seen: at(),
        last_hit_id: Some(hit.id),
        acknowledged_at: None,
        resolved_at: None,
    };
    Fixture {
        store,
        canary,
        hit,
        incident,
    }
}

impl Fixture {
    pub(crate) fn alert(&self, event: EventType) -> Alert<'_> {
        Alert {
            event,
            message_id: "msg_01",
            occurred_at: at(),
            incident: Some(&self.incident),
            canary: Some(&self.canary),
            store: Some(&self.store),
            hit: Some(&self.hit),
        }
    }
}

fn opts() -> RenderOptions<'static> {
    RenderOptions {
        source: "https://keytrap.example",
        pagerduty_routing_key: Some("R0UT1NGKEY"),
    }
}

fn body(format: Format, a: &Alert) -> Value {
    let r = render(format, a, &opts()).expect("renders");
    serde_json::from_slice(&r.body).expect("valid JSON")
}

/// Every string inside a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn headline_names_store_exchange_action_origin_and_remedy() {
    let f = fixture("python-requests/2.31");
    assert_eq!(
        headline(&f.alert(EventType::IncidentOpened)),
        "Binance canary from store prod-users-db used from 203.0.113.9 to place an order: \
         rotate every real key held in prod-users-db"
    );
    assert!(headline(&f.alert(EventType::IncidentEscalated))
        .starts_with("Escalated to critical: Binance canary"));
    let mut store_incident = f.incident.clone();
    store_incident.kind = IncidentKind::Store;
    store_incident.canary_count = 3;
    let a = Alert {
        incident: Some(&store_incident),
        ..f.alert(EventType::StoreCompromised)
    };
    assert!(headline(&a).starts_with("Store prod-users-db leaked (3 canaries used): "));
    let mut h = f.hit.clone();
    h.action_class = "withdraw".into();
    let a = Alert {
        hit: Some(&h),
        ..f.alert(EventType::HitRecorded)
    };
    assert!(headline(&a).contains("to request a withdrawal: rotate"));
    assert!(headline(&Alert::test("msg_t", at())).starts_with("Test alert"));
}

#[test]
fn every_format_leads_with_the_headline() {
    let f = fixture("ccxt/4.2");
    let a = f.alert(EventType::IncidentOpened);
    let line = headline(&a);
    let s = body(Format::Standard, &a);
    assert_eq!(s["data"]["summary"], json!(line));
    assert_eq!(
        body(Format::Cloudevents, &a)["data"]["summary"],
        json!(line)
    );
    assert_eq!(body(Format::Slack, &a)["text"], json!(line));
    assert_eq!(
        body(Format::Discord, &a)["content"],
        json!(discord_escape_line(&line))
    );
    let teams = body(Format::Teams, &a);
    let card = &teams["attachments"][0]["content"];
    assert!(card["body"][1]["text"]
        .as_str()
        .expect("text")
        .contains("prod\\-users\\-db used from 203.0.113.9"));
    assert_eq!(
        body(Format::Pagerduty, &a)["payload"]["summary"],
        json!(line)
    );
}

fn discord_escape_line(line: &str) -> String {
    line.replace("prod-users-db", "prod\\-users\\-db")
}

#[test]
fn standard_shape_carries_models_and_evidence() {
    let f = fixture("ccxt/4.2");
    let v = body(Format::Standard, &f.alert(EventType::IncidentOpened));
    assert_eq!(v["type"], "incident.opened");
    assert_eq!(v["timestamp"], "2025-03-01T12:00:00.000Z");
    let d = &v["data"];
    assert_eq!(d["incident"]["id"], json!(f.incident.id));
    assert_eq!(d["incident"]["severity"], "critical");
    assert_eq!(d["canary"]["id"], json!(f.canary.id));
    assert_eq!(d["canary"]["exchange"], "binance");
    assert_eq!(d["store"]["name"], "prod-users-db");
    assert_eq!(d["store"]["kind"], "database");
    assert_eq!(d["store"]["location"], "pg-main/users.api_keys");
    assert_eq!(d["store"]["labels"]["env"], "prod");
    assert_eq!(d["hit"]["source_ip"], "203.0.113.9");
    assert_eq!(d["hit"]["action_params"]["symbol"], "PEPEUSDT");
    assert_eq!(d["hit"]["signature_state"], "valid");
    // Bounded: the 10 kB body excerpt is cut to 4096 characters and marked.
    let excerpt = d["hit"]["body_excerpt"].as_str().expect("excerpt");
    assert_eq!(excerpt.chars().count(), 4097);
    assert!(excerpt.ends_with('…'));
    // The canary carries no credential or derivation material.
    let canary = d["canary"].as_object().expect("object");
    for k in canary.keys() {
        assert!(
            ![
                "api_key",
                "api_secret",
                "secret",
                "passphrase",
                "key_version",
                "credentials"
            ]
            .contains(&k.as_str()),
            "{k}"
        );
    }
    let r = render(
        Format::Standard,
        &f.alert(EventType::IncidentOpened),
        &opts(),
    )
    .expect("r");
    assert_eq!(r.content_type, "application/json");
}

#[test]
fn cloudevents_structured() {
    let f = fixture("ccxt/4.2");
    let a = f.alert(EventType::IncidentEscalated);
    let r = render(Format::Cloudevents, &a, &opts()).expect("r");
    assert_eq!(
        r.content_type,
        "application/cloudevents+json; charset=utf-8"
    );
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["id"], "msg_01");
    assert_eq!(v["source"], "https://keytrap.example");
    assert_eq!(v["type"], "io.keytrap.incident.escalated");
    assert_eq!(v["time"], "2025-03-01T12:00:00.000Z");
    assert_eq!(v["datacontenttype"], "application/json");
    assert_eq!(v["subject"], json!(format!("incidents/{}", f.incident.id)));
    assert_eq!(v["data"]["store"]["name"], "prod-users-db");
}

#[test]
fn pagerduty_events_v2() {
    let f = fixture("ccxt/4.2");
    let a = f.alert(EventType::IncidentOpened);
    let v = body(Format::Pagerduty, &a);
    assert_eq!(v["routing_key"], "R0UT1NGKEY");
    assert_eq!(v["event_action"], "trigger");
    assert_eq!(v["dedup_key"], json!(f.incident.id.to_string()));
    assert_eq!(v["payload"]["source"], "prod-users-db");
    assert_eq!(v["payload"]["severity"], "critical");
    assert_eq!(v["payload"]["component"], "binance");
    assert_eq!(
        v["payload"]["custom_details"]["hit"]["source_ip"],
        "203.0.113.9"
    );
    assert_eq!(pagerduty_severity(Some(Severity::Low)), "warning");
    assert_eq!(pagerduty_severity(Some(Severity::High)), "error");
    assert_eq!(pagerduty_severity(Some(Severity::Critical)), "critical");
    // Retries of one incident's alerts page once: the dedup key does not depend on the message.
    let again = Alert {
        message_id: "msg_02",
        ..a
    };
    assert_eq!(body(Format::Pagerduty, &again)["dedup_key"], v["dedup_key"]);
    assert_eq!(
        render(Format::Pagerduty, &a, &RenderOptions::default()),
        Err(RenderError::MissingRoutingKey)
    );
    let t = body(Format::Pagerduty, &Alert::test("msg_t", at()));
    assert_eq!(t["dedup_key"], "msg_t");
    assert_eq!(t["payload"]["severity"], "info");
    assert_eq!(t["payload"]["source"], "https://keytrap.example");
}

#[test]
fn hostile_text_is_neutralised_in_chat_formats() {
    let mut f = fixture(HOSTILE);
    f.store.name = "db <!channel> @everyone [x](https://evil.example)".into();
    f.hit.path = "/api/v3/order/<!subteam^S1>".into();
    for event in EventType::ALL {
        let a = f.alert(event);

        let slack = body(Format::Slack, &a);
        let mut all = Vec::new();
        strings(&slack, &mut all);
        let joined = all.join("\n");
        for bad in [
            "<!channel>",
            "<!here>",
            "<@U123>",
            "<https://",
            "<!subteam",
            "https://evil",
        ] {
            assert!(!joined.contains(bad), "slack {event}: {bad} in {joined}");
        }
        assert!(
            joined.contains("&lt;!channel&gt;"),
            "slack keeps the evidence visible"
        );
        // Attacker values stay inside their code spans: no backtick of theirs survives.
        let fields = slack["blocks"][2]["fields"].as_array().expect("fields");
        assert!(fields.len() <= 10);
        for fv in fields {
            let t = fv["text"].as_str().expect("text");
            let code = t.split_once('\n').expect("label\\nvalue").1;
            assert!(code.starts_with('`') && code.ends_with('`'));
            assert_eq!(code.matches('`').count(), 2, "{code}");
            assert!(!code.contains('\n') && !code.contains('\r') && !code.contains('\u{7}'));
            assert!(code.chars().count() <= 2000, "Slack's field limit");
        }

        let discord = body(Format::Discord, &a);
        assert_eq!(discord["allowed_mentions"], json!({"parse": []}));
        let mut all = Vec::new();
        strings(&discord, &mut all);
        for s in &all {
            for bad in ["@everyone", "@here", "https://evil"] {
                assert!(!s.contains(bad), "discord {event}: {bad} in {s}");
            }
        }
        let content = discord["content"].as_str().expect("content");
        assert!(!content.contains("]("), "{content}");
        // Every markdown or mention character an attacker sent is backslash-escaped.
        let chars: Vec<char> = content.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if matches!(c, '<' | '[' | '*' | '`' | '|' | '~' | '_') {
                assert!(i > 0 && chars[i - 1] == '\\', "unescaped {c} in {content}");
            }
        }
        assert!(content.chars().count() <= 2000);
        if event != EventType::WebhookTest {
            assert!(
                content.contains("\\<!channel\\>") && content.contains("\\[x\\]"),
                "{content}"
            );
        }
        for fv in discord["embeds"][0]["fields"].as_array().expect("fields") {
            let v = fv["value"].as_str().expect("value");
            assert!(v.chars().count() <= 1024);
            assert_eq!(v.matches('`').count(), 2, "{v}");
        }

        let teams = body(Format::Teams, &a);
        let mut all = Vec::new();
        strings(&teams, &mut all);
        for s in &all {
            for bad in ["](", "https://evil", "<!channel>", "**"] {
                assert!(!s.contains(bad), "teams {event}: {bad} in {s}");
            }
        }

        // Machine formats keep the evidence verbatim (JSON-escaped) but bounded.
        let std = body(Format::Standard, &a);
        if event != EventType::WebhookTest {
            assert_eq!(std["data"]["hit"]["user_agent"], json!(HOSTILE));
        }
        let pd = body(Format::Pagerduty, &a);
        let summary = pd["payload"]["summary"].as_str().expect("summary");
        assert!(summary.chars().count() <= 1024 && !summary.contains('\n'));
    }
}

#[test]
fn huge_attacker_values_are_bounded() {
    let ua = "A".repeat(100_000);
    let mut f = fixture(&ua);
    f.hit.path = "/".repeat(50_000);
    f.hit.action_params = json!({"blob": "z".repeat(100_000)});
    let a = f.alert(EventType::HitRecorded);
    for format in Format::ALL {
        let r = render(format, &a, &opts()).expect("renders");
        assert!(r.body.len() < 40_000, "{format}: {} bytes", r.body.len());
    }
    let std = body(Format::Standard, &a);
    assert_eq!(
        std["data"]["hit"]["user_agent"]
            .as_str()
            .expect("ua")
            .chars()
            .count(),
        513
    );
    assert!(std["data"]["hit"]["action_params"]["truncated"].is_string());
}

#[test]
fn escapes() {
    assert_eq!(slack_escape("a&b<c>d"), "a&amp;b&lt;c&gt;d");
    assert_eq!(slack_escape("see http://x"), "see http:\u{200B}//x");
    assert_eq!(
        discord_escape("*hi* @everyone"),
        "\\*hi\\* @\u{200B}everyone"
    );
    assert_eq!(discord_escape("http://x"), "http\\:\u{200B}//x");
    assert_eq!(teams_escape("[a](b)"), "\\[a\\]\\(b\\)");
    assert_eq!(bound("héllo", 2), "hé…");
    assert_eq!(bound("hé", 2), "hé");
    assert_eq!(one_line("a\nb\tc", 10), "a b c");
}

#[test]
fn names_round_trip_and_discord_waits() {
    for f in Format::ALL {
        assert_eq!(f.as_str().parse::<Format>(), Ok(f));
    }
    for e in EventType::ALL {
        assert_eq!(e.as_str().parse::<EventType>(), Ok(e));
    }
    assert!("xml".parse::<Format>().is_err());
    assert!("incident.closed".parse::<EventType>().is_err());
    let u = Url::parse("https://discord.com/api/webhooks/1/abc").expect("url");
    assert_eq!(
        Format::Discord.delivery_url(&u).as_str(),
        "https://discord.com/api/webhooks/1/abc?wait=true"
    );
    let u2 = Url::parse("https://discord.com/api/webhooks/1/abc?thread_id=5").expect("url");
    assert_eq!(
        Format::Discord.delivery_url(&u2).as_str(),
        "https://discord.com/api/webhooks/1/abc?thread_id=5&wait=true"
    );
    let waited = Format::Discord.delivery_url(&u);
    assert_eq!(Format::Discord.delivery_url(&waited), waited);
    assert_eq!(Format::Slack.delivery_url(&u), u);
}

#[test]
fn test_event_renders_in_every_format() {
    let a = Alert::test("msg_t", at());
    for format in Format::ALL {
        let v = body(format, &a);
        let mut all = Vec::new();
        strings(&v, &mut all);
        assert!(
            all.iter().any(|s| s.contains("Test alert from keytrap")),
            "{format}"
        );
    }
    let s = body(Format::Standard, &a);
    assert_eq!(s["type"], "webhook.test");
    assert!(s["data"]["incident"].is_null());
}
