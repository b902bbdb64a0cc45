//! Any bytes through the inbound parser: `limits::check_json`, then `event::parse_submission`.
//! Nothing may panic; what the limits accept, serde_json parses to the same value; every
//! accepted event serialises back to JSON that passes the limits again.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use relay_shared::domain::event::parse_submission;
use relay_shared::security::limits::{check_json, InputLimits};

fuzz_target!(|data: &[u8]| {
    let limits = InputLimits::default();
    let Ok(value) = check_json(data, &limits) else {
        return;
    };
    let theirs: serde_json::Value =
        serde_json::from_slice(data).expect("check_json accepted what serde_json refuses");
    assert_eq!(value, theirs, "check_json and serde_json disagree");
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
    if let Ok(submitted) = parse_submission(value, now) {
        assert!(!submitted.is_empty());
        for s in submitted {
            let text = serde_json::to_vec(&s.event.to_value()).expect("an event serialises");
            check_json(&text, &limits).expect("an accepted event stays within the limits");
            assert_eq!(s.payload_hash.len(), 64);
        }
    }
});
