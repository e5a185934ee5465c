//! KuCoin keys carry a believable ObjectId creation time.

use uuid::{NoContext, Timestamp, Uuid};

use super::fixed_keys;
use crate::Exchange;

const DAY: u64 = 86_400;

fn key_time(key: &str) -> u64 {
    u64::from_str_radix(&key[..8], 16).expect("ObjectId time is hex")
}

#[test]
fn kucoin_key_time_is_1_to_120_days_before_the_canary_id_time() {
    let keys = fixed_keys();
    // 2019-01-03, 2021-06-15, 2024-02-29, 2025-10-01 12:34:56.789, 2030-01-01, 2099-12-31
    let times = [
        (1_546_473_600, 0),
        (1_623_715_200, 500_000_000),
        (1_709_164_800, 1),
        (1_759_322_096, 789_000_000),
        (1_893_456_000, 999_999_999),
        (4_102_358_400, 0),
    ];
    let (mut min_age, mut max_age) = (u64::MAX, 0);
    for (secs, nanos) in times {
        for _ in 0..300 {
            let id = Uuid::new_v7(Timestamp::from_unix(NoContext, secs, nanos));
            let id_secs = id.get_timestamp().expect("v7 has a time").to_unix().0;
            assert_eq!(id_secs, secs);
            let key = keys.api_key(Exchange::Kucoin, id);
            let created = key_time(&key);
            assert!(created < id_secs, "key {key} from the future of {id}");
            let age = id_secs - created;
            assert!(
                (DAY..=120 * DAY).contains(&age),
                "{key} age {age}s for {id}"
            );
            min_age = min_age.min(age);
            max_age = max_age.max(age);
        }
    }
    // The offset is spread over the whole range, not a constant.
    assert!(min_age < 5 * DAY, "min age {min_age}");
    assert!(max_age > 115 * DAY, "max age {max_age}");
}

#[test]
fn kucoin_key_time_without_a_uuid_timestamp_stays_plausible() {
    // Only v7 ids are minted, but a v4 id must still give a sane, fixed-base time.
    let keys = fixed_keys();
    let base = 1_704_067_200; // 2024-01-01
    for _ in 0..100 {
        let key = keys.api_key(Exchange::Kucoin, Uuid::new_v4());
        let age = base - key_time(&key);
        assert!((DAY..=120 * DAY).contains(&age), "{key}");
    }
}
