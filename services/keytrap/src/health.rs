//! The health listener (`KEYTRAP_HEALTH_LISTEN`): `/healthz`, `/readyz` and `/metrics`
//! for any role, for Kubernetes probes and Prometheus. It is separate from the trap's
//! port so the internet-facing trap serves exchange paths only.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keytrap_store::Database;
use keytrap_trap::TrapState;

use crate::config::Role;

/// What the health endpoints look at.
#[derive(Clone)]
pub struct Health {
    pub db: Arc<dyn Database>,
    pub roles: Vec<Role>,
    /// The trap, when the trap role runs here.
    pub trap: Option<Arc<TrapState>>,
}

pub fn router(h: Health) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { json(StatusCode::OK, r#"{"status":"ok"}"#) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            json(
                StatusCode::NOT_FOUND,
                r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#,
            )
        })
        .with_state(Arc::new(h))
}

fn json(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn readyz(State(h): State<Arc<Health>>) -> Response {
    match h.db.ping().await {
        Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":{"code":"unavailable","message":"the database does not answer"}}"#,
            )
        }
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> Response {
    let mut out = String::new();
    let up = u8::from(h.db.ping().await.is_ok());
    let _ = writeln!(
        out,
        "# HELP keytrap_database_up Whether the database answers a ping."
    );
    let _ = writeln!(out, "# TYPE keytrap_database_up gauge");
    let _ = writeln!(
        out,
        "keytrap_database_up{{backend=\"{}\"}} {up}",
        h.db.backend()
    );
    let _ = writeln!(out, "# HELP keytrap_role Roles this process runs.");
    let _ = writeln!(out, "# TYPE keytrap_role gauge");
    for role in &h.roles {
        let name = match role {
            Role::Api => "api",
            Role::Trap => "trap",
            Role::Worker => "worker",
        };
        let _ = writeln!(out, "keytrap_role{{role=\"{name}\"}} 1");
    }
    if let Some(t) = &h.trap {
        let _ = writeln!(out, "# HELP keytrap_trap_idle_floor_seconds How long idle trap answers are held (timing stealth).");
        let _ = writeln!(out, "# TYPE keytrap_trap_idle_floor_seconds gauge");
        let _ = writeln!(
            out,
            "keytrap_trap_idle_floor_seconds {}",
            t.equalizer.floor().as_secs_f64()
        );
        let s = t.recorder.stats();
        for (name, help, v) in [
            (
                "keytrap_trap_events_committed_total",
                "Trap events (hits and unknown-key sightings) durably committed.",
                &s.committed,
            ),
            (
                "keytrap_trap_events_failed_total",
                "Trap events that could not be recorded (answered as unavailable).",
                &s.failed,
            ),
            (
                "keytrap_trap_commits_total",
                "Group-commit transactions.",
                &s.batches,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP keytrap_trap_commit_seconds_total Time the trap's writer spent in the database (busy share = rate of this).");
        let _ = writeln!(out, "# TYPE keytrap_trap_commit_seconds_total counter");
        let busy = s.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "keytrap_trap_commit_seconds_total {busy}");
        let name = "keytrap_trap_commit_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of the trap writer's database calls (one per group commit)."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, n) in keytrap_trap::recorder::COMMIT_BUCKETS
            .iter()
            .zip(&s.commit_buckets)
        {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let count = s.commit_observations.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {busy}");
        let _ = writeln!(out, "{name}_count {count}");
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
