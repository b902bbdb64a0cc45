//! Bounded label sets: a label's values are the ones the config names plus the first few
//! others seen, and every value past that counts as `other`, so made-up event types or hosts
//! cannot grow the series without bound.

use std::collections::HashSet;
use std::sync::Mutex;

/// The value every label past its limit is counted under.
pub const OTHER: &str = "other";

/// The longest label value kept; a longer one is counted as `other`.
const MAX_VALUE_LEN: usize = 100;

/// One label's values seen so far.
#[derive(Debug)]
pub struct Bounded {
    limit: usize,
    seen: Mutex<HashSet<String>>,
}

impl Bounded {
    /// A label that takes `known` and up to `limit` values more.
    pub fn new<I, S>(known: I, limit: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let seen: HashSet<String> = known.into_iter().map(Into::into).collect();
        Self {
            limit: seen.len() + limit,
            seen: Mutex::new(seen),
        }
    }

    /// The value to count `value` under: itself while there is room, `other` after.
    pub fn label(&self, value: &str) -> String {
        if value.len() > MAX_VALUE_LEN || value == OTHER {
            return OTHER.to_string();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(value) {
            return value.to_string();
        }
        if seen.len() < self.limit {
            seen.insert(value.to_string());
            return value.to_string();
        }
        OTHER.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_limit_count_as_other_and_known_ones_always_count() {
        let b = Bounded::new(["order.created"], 2);
        assert_eq!(b.label("a"), "a");
        assert_eq!(b.label("b"), "b");
        assert_eq!(b.label("c"), OTHER);
        assert_eq!(b.label("a"), "a");
        assert_eq!(b.label("order.created"), "order.created");
        assert_eq!(b.label(&"x".repeat(101)), OTHER);
    }
}
