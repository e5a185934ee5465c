//! The retry policy: what an attempt's result means, and when to try again.
//!
//! Pure functions over times and durations so the worker (and tests) decide with no
//! clock or IO of their own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// What one attempt's result means for the message and its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: delivered.
    Success,
    /// Anything else (3xx is never followed, 4xx, 5xx, timeouts, connection errors,
    /// a blocked address): try again later. `retry_after` is what the receiver asked
    /// for with a 429/502/503/504 `Retry-After`.
    Failure {
        #[serde(skip_serializing_if = "Option::is_none", with = "secs_opt")]
        retry_after: Option<Duration>,
    },
    /// 410 Gone: the receiver says the endpoint no longer exists; disable it.
    Gone,
}

impl Outcome {
    /// The name stored with an attempt: `success`, `failure`, `gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure { .. } => "failure",
            Outcome::Gone => "gone",
        }
    }
}

mod secs_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64))
    }
}

/// Classifies an HTTP status (`None`: no response at all, a timeout or a connection
/// error). `retry_after` is the raw `Retry-After` header, honoured for 429/502/503/504.
pub fn classify(status: Option<u16>, retry_after: Option<&str>, now: DateTime<Utc>) -> Outcome {
    match status {
        Some(200..=299) => Outcome::Success,
        Some(410) => Outcome::Gone,
        Some(429 | 502 | 503 | 504) => Outcome::Failure {
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        _ => Outcome::Failure { retry_after: None },
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (a date in the past is zero).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(v).ok()?.into();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The backoff schedule after the first try, with jitter and a scale factor for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Delay before retry n (after attempt n). Its length is the number of retries.
    pub delays: Vec<Duration>,
    /// Each delay is multiplied by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Multiplies every scheduled delay and the Retry-After cap (1.0 in production,
    /// e.g. 0.001 in tests). The receiver's own `Retry-After` value is not scaled.
    pub scale: f64,
    /// The longest a `Retry-After` may postpone a message (before scaling).
    pub max_retry_after: Duration,
}

/// The production schedule, in seconds after the first try.
pub const DEFAULT_DELAYS_SECS: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            delays: DEFAULT_DELAYS_SECS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            jitter: 0.2,
            scale: 1.0,
            max_retry_after: Duration::from_secs(86_400),
        }
    }
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: mark the message done.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// No attempts left: dead-letter it (redeliverable by API).
    DeadLetter,
    /// 410: disable the endpoint and dead-letter the message.
    DisableEndpoint,
}

impl Schedule {
    /// The production schedule scaled by `scale` (`0.001` turns 5 s into 5 ms).
    pub fn scaled(scale: f64) -> Self {
        Schedule {
            scale,
            ..Schedule::default()
        }
    }

    /// How many attempts a message gets in all (the first try plus the retries).
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The jittered, scaled delay after attempt number `attempt` (1-based), or `None`
    /// when that was the last one.
    pub fn delay_after(&self, attempt: u32, rng: &mut impl Rng) -> Option<Duration> {
        let base = *self.delays.get(attempt.checked_sub(1)? as usize)?;
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = if j > 0.0 {
            rng.random_range((1.0 - j)..=(1.0 + j))
        } else {
            1.0
        };
        Some(scale_duration(base, factor * self.scale))
    }

    /// Decides what follows attempt number `attempt` (1-based) with `outcome`.
    ///
    /// `Retry-After` is clamped to `[scheduled delay, max_retry_after * scale]`: it can
    /// postpone the next try (the receiver is overloaded) but never bring it forward
    /// (a `Retry-After: 0` cannot make us hammer) nor park a message past the cap.
    pub fn next(
        &self,
        attempt: u32,
        outcome: Outcome,
        now: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Next {
        let retry_after = match outcome {
            Outcome::Success => return Next::Delivered,
            Outcome::Gone => return Next::DisableEndpoint,
            Outcome::Failure { retry_after } => retry_after,
        };
        let Some(scheduled) = self.delay_after(attempt, rng) else {
            return Next::DeadLetter;
        };
        let scheduled = scheduled.min(LONGEST_DELAY);
        let cap = scale_duration(self.max_retry_after, self.scale).clamp(scheduled, LONGEST_DELAY);
        let delay = match retry_after {
            Some(ra) => ra.clamp(scheduled, cap),
            None => scheduled,
        };
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(1));
        Next::RetryAt(now.checked_add_signed(delay).unwrap_or(now))
    }
}

/// No retry is ever scheduled further out than this, whatever the configuration says.
const LONGEST_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// `d * factor`, saturating, with negative or NaN factors giving zero (a misconfigured
/// scale must not panic the worker).
fn scale_duration(d: Duration, factor: f64) -> Duration {
    if factor.is_nan() || factor <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(LONGEST_DELAY)
}

/// How long an endpoint may fail without a single success before it is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 86_400);

/// Tracks an endpoint's failure streak: the time of the first failure since the last
/// success, updated after every attempt (`None` after a success).
pub fn failing_since(
    previous: Option<DateTime<Utc>>,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match outcome {
        Outcome::Success => None,
        _ => Some(previous.unwrap_or(now)),
    }
}

/// `true` when an endpoint failing since `first_failure` has failed for `window` (5 days
/// in production: [`DISABLE_AFTER`]) and should be disabled.
pub fn should_disable(
    first_failure: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    window: Duration,
) -> bool {
    let Some(first) = first_failure else {
        return false;
    };
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    now.signed_duration_since(first) >= window
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::SeedableRng;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn classification() {
        let now = t0();
        assert_eq!(classify(Some(200), None, now), Outcome::Success);
        assert_eq!(classify(Some(204), None, now), Outcome::Success);
        assert_eq!(classify(Some(299), None, now), Outcome::Success);
        for s in [301, 302, 307, 308, 400, 401, 404, 500, 501] {
            assert_eq!(
                classify(Some(s), Some("30"), now),
                Outcome::Failure { retry_after: None },
                "{s}"
            );
        }
        assert_eq!(classify(Some(410), None, now), Outcome::Gone);
        assert_eq!(
            classify(None, None, now),
            Outcome::Failure { retry_after: None }
        );
        for s in [429, 502, 503, 504] {
            assert_eq!(
                classify(Some(s), Some("120"), now),
                Outcome::Failure {
                    retry_after: Some(Duration::from_secs(120))
                }
            );
        }
        assert_eq!(
            classify(Some(503), Some("Sat, 01 Mar 2025 12:10:00 GMT"), now),
            Outcome::Failure {
                retry_after: Some(Duration::from_secs(600))
            }
        );
        assert_eq!(
            classify(Some(503), Some("Sat, 01 Mar 2025 11:00:00 GMT"), now),
            Outcome::Failure {
                retry_after: Some(Duration::ZERO)
            }
        );
        assert_eq!(
            classify(Some(503), Some("soon"), now),
            Outcome::Failure { retry_after: None }
        );
        assert_eq!(
            classify(Some(503), Some("-5"), now),
            Outcome::Failure { retry_after: None }
        );
    }

    #[test]
    fn schedule_with_jitter() {
        let s = Schedule::default();
        assert_eq!(s.max_attempts(), 8);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (i, base) in DEFAULT_DELAYS_SECS.iter().enumerate() {
            let mut seen = Vec::new();
            for _ in 0..200 {
                let d = s
                    .delay_after(i as u32 + 1, &mut rng)
                    .expect("delay")
                    .as_secs_f64();
                let b = *base as f64;
                assert!(d >= b * 0.8 - 1e-9 && d <= b * 1.2 + 1e-9, "{d} vs {b}");
                seen.push(d);
            }
            // Jitter actually spreads the retries.
            let min = seen.iter().cloned().fold(f64::MAX, f64::min);
            let max = seen.iter().cloned().fold(0.0, f64::max);
            assert!(max - min > *base as f64 * 0.2, "spread for {base}");
        }
        assert_eq!(s.delay_after(8, &mut rng), None);
        assert_eq!(s.delay_after(0, &mut rng), None);
        let fast = Schedule {
            jitter: 0.0,
            ..Schedule::scaled(0.001)
        };
        assert_eq!(
            fast.delay_after(1, &mut rng),
            Some(Duration::from_millis(5))
        );
        assert_eq!(
            fast.delay_after(2, &mut rng),
            Some(Duration::from_millis(300))
        );
    }

    #[test]
    fn next_step() {
        let now = t0();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let s = Schedule {
            jitter: 0.0,
            ..Schedule::default()
        };
        let fail = Outcome::Failure { retry_after: None };
        assert_eq!(s.next(1, Outcome::Success, now, &mut rng), Next::Delivered);
        assert_eq!(
            s.next(3, Outcome::Gone, now, &mut rng),
            Next::DisableEndpoint
        );
        assert_eq!(
            s.next(1, fail, now, &mut rng),
            Next::RetryAt(now + chrono::Duration::seconds(5))
        );
        assert_eq!(
            s.next(7, fail, now, &mut rng),
            Next::RetryAt(now + chrono::Duration::seconds(36000))
        );
        assert_eq!(s.next(8, fail, now, &mut rng), Next::DeadLetter);
        // Retry-After postpones, within [scheduled, 1 day].
        let ra = |secs| Outcome::Failure {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            s.next(1, ra(60), now, &mut rng),
            Next::RetryAt(now + chrono::Duration::seconds(60))
        );
        assert_eq!(
            s.next(2, ra(1), now, &mut rng),
            Next::RetryAt(now + chrono::Duration::seconds(300))
        );
        assert_eq!(
            s.next(1, ra(10 * 86_400), now, &mut rng),
            Next::RetryAt(now + chrono::Duration::days(1))
        );
        assert_eq!(s.next(8, ra(60), now, &mut rng), Next::DeadLetter);
    }

    #[test]
    fn odd_scales_do_not_panic() {
        let now = t0();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let fail = Outcome::Failure {
            retry_after: Some(Duration::from_secs(u64::MAX)),
        };
        for scale in [f64::NAN, -1.0, 0.0, 1e300, f64::INFINITY] {
            let s = Schedule::scaled(scale);
            match s.next(1, fail, now, &mut rng) {
                Next::RetryAt(at) => {
                    assert!(
                        at >= now && at <= now + chrono::Duration::days(30),
                        "{scale}"
                    );
                }
                other => panic!("{scale}: {other:?}"),
            }
        }
    }

    #[test]
    fn endpoint_disabling() {
        let now = t0();
        let fail = Outcome::Failure { retry_after: None };
        let first = failing_since(None, fail, now);
        assert_eq!(first, Some(now));
        let later = now + chrono::Duration::days(3);
        assert_eq!(failing_since(first, fail, later), Some(now));
        assert_eq!(failing_since(first, Outcome::Success, later), None);
        assert!(!should_disable(None, later, DISABLE_AFTER));
        assert!(!should_disable(
            first,
            now + chrono::Duration::days(5) - chrono::Duration::seconds(1),
            DISABLE_AFTER
        ));
        assert!(should_disable(
            first,
            now + chrono::Duration::days(5),
            DISABLE_AFTER
        ));
        assert!(should_disable(
            first,
            now + chrono::Duration::days(9),
            DISABLE_AFTER
        ));
    }
}
