//! SmartEmailing's dates: every public client sends `YYYY-MM-DD HH:MM:SS` (PHP `Y-m-d H:i:s`)
//! in the account's local time, and none sends RFC 3339 or an empty string. Every date field
//! the relay knows is converted here, and templates get the same conversion as `se_datetime`.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use serde_json::Value;
use std::collections::HashMap;

/// SmartEmailing's date format.
pub const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The account's time zone unless `smartemailing.time_zone` says otherwise.
pub const DEFAULT_TIME_ZONE: Tz = chrono_tz::Europe::Prague;

/// How dates go to the account: its time zone, and the custom fields that hold dates.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountDates {
    /// The account's time zone: a date with an offset is shown in it.
    pub zone: Tz,
    /// Custom-field ids declared as dates in `smartemailing.date_custom_fields`.
    pub custom_fields: Vec<i64>,
}

impl Default for AccountDates {
    fn default() -> Self {
        Self {
            zone: DEFAULT_TIME_ZONE,
            custom_fields: Vec::new(),
        }
    }
}

/// A rendered date as SmartEmailing takes it: `None` when it is empty (null or blank: the
/// field is left out), an error naming the value when it is not a date.
///
/// RFC 3339 and ISO 8601 with an offset are converted into `zone`; a date and time without
/// one is taken as already in the account's time; a bare `YYYY-MM-DD` gets midnight.
pub fn to_smartemailing(value: &Value, zone: Tz) -> Result<Option<String>, String> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim(),
        other => return Err(format!("{other} is not a date")),
    };
    if let Some(at) = with_offset(text) {
        return Ok(Some(formatted(&at.with_timezone(&zone).naive_local())));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, f) {
            return Ok(Some(formatted(&local)));
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Some(format!("{} 00:00:00", day.format("%Y-%m-%d"))));
    }
    Err(format!(
        "`{text}` is not a date (write RFC 3339 such as 2026-11-26T10:00:00Z, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD)"
    ))
}

/// `at` in [`FORMAT`], written directly: chrono's `format` parses the format string on each
/// call, a tenth of rendering an order (BENCHMARKS.md, issue 16).
fn formatted(at: &NaiveDateTime) -> String {
    use chrono::{Datelike, Timelike};
    if !(0..=9999).contains(&at.year()) {
        // chrono writes a sign and more digits out there; keep its spelling.
        return at.format(FORMAT).to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A date with an offset: RFC 3339, or ISO 8601's `+0100` form.
fn with_offset(text: &str) -> Option<DateTime<chrono::FixedOffset>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%z"))
        .ok()
}

/// The `se_datetime` filter: a date as SmartEmailing takes it, in the account's zone; an empty
/// value gives an empty string.
pub fn filter(zone: Tz) -> impl Fn(&Value, &HashMap<String, Value>) -> tera::Result<Value> {
    move |value, _| match to_smartemailing(value, zone) {
        Ok(date) => Ok(Value::String(date.unwrap_or_default())),
        Err(m) => Err(tera::Error::msg(format!("se_datetime: {m}"))),
    }
}

/// Converts the date at `key` of `object` in place; an empty one is removed. The error names
/// the field as `{place}.{key}`.
pub fn convert_field(
    object: &mut serde_json::Map<String, Value>,
    key: &str,
    zone: Tz,
    place: &str,
) -> Result<(), String> {
    let Some(value) = object.get(key) else {
        return Ok(());
    };
    match to_smartemailing(value, zone) {
        Ok(Some(date)) => {
            object.insert(key.to_string(), Value::String(date));
        }
        Ok(None) => {
            object.remove(key);
        }
        Err(m) => return Err(format!("{place}.{key}: {m}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn se(v: Value) -> Result<Option<String>, String> {
        to_smartemailing(&v, DEFAULT_TIME_ZONE)
    }

    #[test]
    fn rfc_3339_is_shown_in_the_accounts_zone() {
        // Prague is UTC+1 in November and UTC+2 in July.
        assert_eq!(
            se(json!("2026-11-26T10:00:00Z")).unwrap().unwrap(),
            "2026-11-26 11:00:00"
        );
        assert_eq!(
            se(json!("2026-07-01T23:30:00Z")).unwrap().unwrap(),
            "2026-07-02 01:30:00"
        );
        assert_eq!(
            se(json!("2026-11-26T10:00:00.123+01:00")).unwrap().unwrap(),
            "2026-11-26 10:00:00"
        );
        assert_eq!(
            se(json!("2026-11-26T10:00:00+0100")).unwrap().unwrap(),
            "2026-11-26 10:00:00"
        );
    }

    #[test]
    fn the_format_is_chronos_to_the_digit() {
        for text in [
            "0001-01-01 00:00:00",
            "0999-02-03 04:05:06",
            "2026-11-26 23:59:59",
            "9999-12-31 23:59:59",
        ] {
            let at = NaiveDateTime::parse_from_str(text, FORMAT).unwrap();
            assert_eq!(formatted(&at), at.format(FORMAT).to_string());
        }
        // Past 9999 in the account's zone: chrono's own spelling, sign and all.
        let late = se(json!("9999-12-31T23:30:00Z")).unwrap().unwrap();
        assert_eq!(late, "+10000-01-01 00:30:00");
    }

    #[test]
    fn local_times_and_bare_dates_are_kept() {
        assert_eq!(
            se(json!("2026-11-25 18:04:00")).unwrap().unwrap(),
            "2026-11-25 18:04:00"
        );
        assert_eq!(
            se(json!("2026-11-25T18:04")).unwrap().unwrap(),
            "2026-11-25 18:04:00"
        );
        assert_eq!(
            se(json!("1990-05-17")).unwrap().unwrap(),
            "1990-05-17 00:00:00"
        );
    }

    #[test]
    fn empty_is_left_out_and_nonsense_is_an_error() {
        assert_eq!(se(json!("")).unwrap(), None);
        assert_eq!(se(json!("  ")).unwrap(), None);
        assert_eq!(se(Value::Null).unwrap(), None);
        assert!(se(json!("tomorrow"))
            .unwrap_err()
            .contains("`tomorrow` is not a date"));
        assert!(se(json!("2026-13-01")).is_err());
        assert!(se(json!(1764151200)).is_err());
    }

    #[test]
    fn a_field_is_converted_removed_or_named() {
        let mut o = json!({"a": "2026-11-26T10:00:00Z", "b": "", "c": "x"});
        let o = o.as_object_mut().unwrap();
        convert_field(o, "a", DEFAULT_TIME_ZONE, "p").unwrap();
        convert_field(o, "b", DEFAULT_TIME_ZONE, "p").unwrap();
        assert_eq!(o.get("a"), Some(&json!("2026-11-26 11:00:00")));
        assert!(!o.contains_key("b"));
        assert!(convert_field(o, "c", DEFAULT_TIME_ZONE, "p")
            .unwrap_err()
            .starts_with("p.c: `x` is not a date"));
    }
}
