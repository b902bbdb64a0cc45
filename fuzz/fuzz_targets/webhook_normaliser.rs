//! SmartEmailing webhooks: the input's first line is the `event_name`, the rest the body,
//! parsed as JSON when it starts with `{` and as a form otherwise (as the router does).
//! Nothing may panic; an accepted call yields a `smartemailing.<name>` event whose id is
//! the same for the same call.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use relay_shared::security::limits::{check_json, InputLimits};
use relay_shared::domain::smartemailing_webhook::{event_from_webhook, form_to_object};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let name = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or(&[]);
    let value = if body.first() == Some(&b'{') {
        match check_json(body, &InputLimits::default()) {
            Ok(v) => v,
            Err(_) => return,
        }
    } else {
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            Ok(pairs) => form_to_object(pairs),
            Err(_) => return,
        }
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
    if let Ok((event, hash)) = event_from_webhook(&name, value.clone(), now) {
        assert!(event.kind.as_str().starts_with("smartemailing."));
        assert!(event.id.as_str().starts_with("se-"));
        assert_eq!(hash.len(), 64);
        if let Some(email) = event.email() {
            assert!(relay_shared::domain::event::Email::parse(email).is_ok());
        }
        let (again, _) =
            event_from_webhook(&name, value, now).expect("the same call is accepted twice");
        assert_eq!(event.id, again.id, "the same call must get the same id");
    }
});
