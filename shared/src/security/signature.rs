//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>) on inbound calls.
//!
//! The sender signs `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 under a shared
//! secret and sends `webhook-signature: v1,<base64> [v1,<base64> ...]` (several signatures
//! while a secret is being rotated). A call is accepted when any `v1` signature matches any
//! configured secret, its timestamp is within five minutes of `now` either way, and its id
//! has not been accepted before within the window. The clock is passed in, never read here.
//!
//! Order of checks: headers, timestamp, signature, and only then the replay check, so that
//! unsigned traffic can neither fill the replay cache nor learn which ids it holds.
//!
//! Why not the spec authors' `standardwebhooks` crate for the HMAC: its `verify` reads the
//! system clock (we take `now` from the `Clock` port, so tolerance is tested on a fixed
//! clock), takes one secret (rotation here is several secrets compared in constant time
//! across every pair, so timing does not tell which one matched), has no hook for the
//! replay cache, and would add a second `base64` and the `time` crate to every Lambda zip.
//! The tests check that the two agree: the spec's vector, their signatures verified here,
//! ours verified by them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// The header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the Unix timestamp in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a timestamp may be from `now`, either way.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;
/// The longest message id taken.
pub const MAX_ID_BYTES: usize = 256;
/// The most signatures one header may carry (bounds the work per call).
pub const MAX_SIGNATURES: usize = 16;

/// Why a signed call was refused. Messages never contain the secret or a computed signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent.
    #[error("the `{0}` header is required on signed webhooks")]
    MissingHeader(&'static str),
    /// The id is empty, too long or has control characters.
    #[error(
        "the `webhook-id` header must be 1 to {MAX_ID_BYTES} bytes without control characters"
    )]
    BadId,
    /// The timestamp is not an integer number of seconds.
    #[error("the `webhook-timestamp` header must be Unix time in whole seconds")]
    BadTimestamp,
    /// The timestamp is older than the tolerance.
    #[error("the `webhook-timestamp` is more than {TOLERANCE_SECONDS} seconds in the past; check the sender's clock or re-sign the call")]
    TooOld,
    /// The timestamp is further ahead than the tolerance.
    #[error("the `webhook-timestamp` is more than {TOLERANCE_SECONDS} seconds in the future; check the sender's clock")]
    TooNew,
    /// The signature header has no `v1,<base64>` entry.
    #[error("the `webhook-signature` header holds no `v1,<base64>` signature")]
    NoSignature,
    /// No signature matched any configured secret.
    #[error("no signature in `webhook-signature` matches; check the signing secret")]
    Mismatch,
    /// The id was accepted before, within the tolerance window, with a different body.
    #[error("this `webhook-id` was already received with a different body; send a new id for a new message")]
    IdReused,
    /// A configured secret is not `whsec_<base64>` or bare base64.
    #[error("a webhook signing secret must be base64, optionally prefixed `whsec_`")]
    BadSecret,
}

/// A signing secret: the key bytes decoded from `whsec_<base64>`. `Debug` shows no bytes.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Decodes a secret written as `whsec_<base64>` or as bare base64.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix("whsec_").unwrap_or(b64);
        match BASE64.decode(b64) {
            Ok(key) if !key.is_empty() => Ok(Self(key)),
            _ => Err(SignatureError::BadSecret),
        }
    }

    /// Uses raw key bytes as the secret.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Self {
        Self(key.into())
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Signs a call: the value of a `webhook-signature` header, `v1,<base64>`.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        BASE64.encode(secret.mac(id, &timestamp.to_string(), body))
    )
}

/// The three signature headers of one call, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    /// Reads the headers from a request; a header that is not visible ASCII counts as absent.
    pub fn from_headers(headers: &'a axum::http::HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            id: get(HEADER_ID),
            timestamp: get(HEADER_TIMESTAMP),
            signature: get(HEADER_SIGNATURE),
        }
    }
}

/// Whether a message id was seen before, and with which body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Not seen within the window: a new message.
    First,
    /// Seen with the same body: the sender's retry (a timeout, a lost answer). It is taken,
    /// and the events' own ids make it a duplicate that runs nothing.
    SameBody,
    /// Seen with another body: refused.
    OtherBody,
}

/// Remembers accepted message ids and their bodies' hashes, to tell a sender's retry from an
/// id reused for another message.
pub trait SeenIds: Send + Sync {
    /// Records `id` with its body's hash as seen at `now`, and says whether it was seen
    /// before (and not expired).
    fn seen_before(&self, id: &str, body_hash: [u8; 32], now: DateTime<Utc>) -> Repeat;
    /// Forgets `id`, so the sender's retry is taken (for when the call could not be stored).
    fn forget(&self, id: &str);
}

/// Checks signed calls against one source's secrets (several while rotating).
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<WebhookSecret>,
}

impl Verifier {
    /// A verifier accepting a signature by any of `secrets`.
    pub fn new(secrets: Vec<WebhookSecret>) -> Self {
        Self { secrets }
    }

    /// Verifies one call and records its id in `seen`; returns the id on success. A retry of
    /// a message already taken (same id, same body) verifies again: what it carries is
    /// deduplicated by the events' ids downstream.
    pub fn verify<'h>(
        &self,
        headers: &SignedHeaders<'h>,
        body: &[u8],
        now: DateTime<Utc>,
        seen: &dyn SeenIds,
    ) -> Result<&'h str, SignatureError> {
        let id = headers.id.ok_or(SignatureError::MissingHeader(HEADER_ID))?;
        let timestamp = headers
            .timestamp
            .ok_or(SignatureError::MissingHeader(HEADER_TIMESTAMP))?;
        let signature = headers
            .signature
            .ok_or(SignatureError::MissingHeader(HEADER_SIGNATURE))?;
        if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
            return Err(SignatureError::BadId);
        }
        check_timestamp(timestamp, now)?;
        let presented: Vec<Vec<u8>> = signature
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .take(MAX_SIGNATURES)
            .filter_map(|b64| BASE64.decode(b64).ok())
            .collect();
        if presented.is_empty() {
            return Err(SignatureError::NoSignature);
        }
        // Every pair is compared, so the time taken does not tell which secret or entry matched.
        let mut matched = subtle::Choice::from(0u8);
        for secret in &self.secrets {
            let expected = secret.mac(id, timestamp, body);
            for candidate in &presented {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if !bool::from(matched) {
            return Err(SignatureError::Mismatch);
        }
        let body_hash: [u8; 32] = Sha256::digest(body).into();
        match seen.seen_before(id, body_hash, now) {
            Repeat::OtherBody => Err(SignatureError::IdReused),
            Repeat::First | Repeat::SameBody => Ok(id),
        }
    }
}

fn check_timestamp(text: &str, now: DateTime<Utc>) -> Result<(), SignatureError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp);
    }
    let ts: i64 = text.parse().map_err(|_| SignatureError::BadTimestamp)?;
    let now = now.timestamp();
    if ts < now - TOLERANCE_SECONDS {
        Err(SignatureError::TooOld)
    } else if ts > now + TOLERANCE_SECONDS {
        Err(SignatureError::TooNew)
    } else {
        Ok(())
    }
}

/// An in-memory [`SeenIds`] holding at most `capacity` ids, each for twice the tolerance.
///
/// Twice, because a timestamp up to five minutes ahead stays acceptable for ten minutes
/// after it first arrives. When full, the oldest id is dropped: only correctly signed calls
/// get here, so filling it takes a sender holding the secret. Per process: behind several
/// Lambda containers, a replay may reach a container that has not seen the id, and the
/// event's idempotency key is what stops the second run there.
pub struct MemorySeenIds {
    capacity: usize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    expiry: HashMap<String, (DateTime<Utc>, [u8; 32])>,
    order: VecDeque<(DateTime<Utc>, String)>,
}

impl MemorySeenIds {
    /// An empty set holding at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Seen::default()),
        }
    }

    /// How many ids are held now.
    pub fn len(&self) -> usize {
        self.lock().expiry.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A panic elsewhere while holding the lock leaves plain data; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for MemorySeenIds {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl SeenIds for MemorySeenIds {
    fn seen_before(&self, id: &str, body_hash: [u8; 32], now: DateTime<Utc>) -> Repeat {
        let mut s = self.lock();
        // Drop what has expired, oldest first; entries replaced by `forget` are skipped.
        while let Some((expires, old)) = s.order.front().cloned() {
            if expires > now {
                break;
            }
            s.order.pop_front();
            if s.expiry.get(&old).map(|e| e.0) == Some(expires) {
                s.expiry.remove(&old);
            }
        }
        if let Some((expires, hash)) = s.expiry.get(id) {
            if *expires > now {
                return if *hash == body_hash {
                    Repeat::SameBody
                } else {
                    Repeat::OtherBody
                };
            }
        }
        while s.expiry.len() >= self.capacity {
            match s.order.pop_front() {
                Some((expires, old)) => {
                    if s.expiry.get(&old).map(|e| e.0) == Some(expires) {
                        s.expiry.remove(&old);
                    }
                }
                None => break,
            }
        }
        let expires = now + Duration::seconds(2 * TOLERANCE_SECONDS);
        s.expiry.insert(id.to_string(), (expires, body_hash));
        s.order.push_back((expires, id.to_string()));
        Repeat::First
    }

    fn forget(&self, id: &str) {
        self.lock().expiry.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    // The example from the Standard Webhooks specification's reference libraries. The
    // expected signature was computed independently of this code, with Python's standard
    // library:
    //   key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    //   hmac.new(key, b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}',
    //            hashlib.sha256).digest()  -> base64 below
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(ts: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(ts, 0).single().unwrap()
    }

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SECRET).unwrap()
    }

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    fn verify(sig: &str, ts: &str, now: i64) -> Result<(), SignatureError> {
        let seen = MemorySeenIds::new(10);
        Verifier::new(vec![secret()])
            .verify(&headers(ID, ts, sig), BODY, at(now), &seen)
            .map(|_| ())
    }

    #[test]
    fn our_verifier_and_the_spec_authors_crate_agree_both_ways() {
        let theirs = standardwebhooks::Webhook::new(SECRET).unwrap();
        // Their signer, our verifier, at a fixed time.
        let signed = theirs.sign(ID, TS, BODY).unwrap();
        assert_eq!(signed, EXPECTED);
        assert_eq!(verify(&signed, "1614265330", TS), Ok(()));
        for body in [&b""[..], br#"{"a":"\u00e9"}"#, "ž".as_bytes()] {
            let sig = theirs.sign("msg_x", TS + 5, body).unwrap();
            let seen = MemorySeenIds::new(10);
            let got = Verifier::new(vec![secret()]).verify(
                &headers("msg_x", "1614265335", &sig),
                body,
                at(TS),
                &seen,
            );
            assert_eq!(got, Ok("msg_x"));
        }
        // Our signer, their verifier (theirs checks the timestamp against the system clock).
        let now = Utc::now().timestamp();
        let ours = sign(&secret(), ID, now, BODY);
        let mut map = axum::http::HeaderMap::new();
        map.insert("webhook-id", ID.parse().unwrap());
        map.insert("webhook-timestamp", now.to_string().parse().unwrap());
        map.insert("webhook-signature", ours.parse().unwrap());
        assert!(theirs.verify(BODY, &map).is_ok());
        // A tampered body fails in both.
        assert!(theirs.verify(br#"{"test": 1}"#, &map).is_err());
        assert_eq!(
            verify(EXPECTED, "1614265330", TS).and(
                Verifier::new(vec![secret()])
                    .verify(
                        &headers(ID, "1614265330", EXPECTED),
                        br#"{"test": 1}"#,
                        at(TS),
                        &MemorySeenIds::new(1),
                    )
                    .map(|_| ())
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn sign_matches_the_independently_computed_vector() {
        assert_eq!(sign(&secret(), ID, TS, BODY), EXPECTED);
    }

    #[test]
    fn a_correct_signature_is_accepted() {
        assert_eq!(verify(EXPECTED, "1614265330", TS), Ok(()));
    }

    #[test]
    fn a_secret_without_prefix_is_the_same_secret() {
        let bare = WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(sign(&bare, ID, TS, BODY), EXPECTED);
        assert_eq!(
            WebhookSecret::parse("whsec_not base64!").unwrap_err(),
            SignatureError::BadSecret
        );
        assert!(WebhookSecret::parse("").is_err());
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let header = format!("v1,Zm9v v1a,ignored {EXPECTED} v2,bm9wZQ==");
        assert_eq!(verify(&header, "1614265330", TS), Ok(()));
    }

    #[test]
    fn any_of_several_secrets_may_match() {
        let old = WebhookSecret::from_bytes(b"old".to_vec());
        let seen = MemorySeenIds::new(10);
        let v = Verifier::new(vec![old, secret()]);
        assert!(v
            .verify(&headers(ID, "1614265330", EXPECTED), BODY, at(TS), &seen)
            .is_ok());
    }

    #[test]
    fn a_changed_body_id_or_timestamp_does_not_match() {
        let seen = MemorySeenIds::new(10);
        let v = Verifier::new(vec![secret()]);
        let h = headers(ID, "1614265330", EXPECTED);
        assert_eq!(
            v.verify(&h, br#"{"test": 2432232315}"#, at(TS), &seen),
            Err(SignatureError::Mismatch)
        );
        let h = headers("msg_other", "1614265330", EXPECTED);
        assert_eq!(
            v.verify(&h, BODY, at(TS), &seen),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(EXPECTED, "1614265331", TS),
            Err(SignatureError::Mismatch)
        );
        let other = WebhookSecret::from_bytes(b"other".to_vec());
        let seen = MemorySeenIds::new(10);
        assert_eq!(
            Verifier::new(vec![other]).verify(
                &headers(ID, "1614265330", EXPECTED),
                BODY,
                at(TS),
                &seen
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_header_without_v1_entries_is_refused() {
        for header in [
            "",
            "v1a,abc",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,***",
        ] {
            assert_eq!(
                verify(header, "1614265330", TS),
                Err(SignatureError::NoSignature),
                "{header}"
            );
        }
    }

    #[test]
    fn timestamps_are_taken_within_five_minutes_either_way() {
        let ts = "1614265330";
        assert_eq!(verify(EXPECTED, ts, TS + 300), Ok(()));
        assert_eq!(verify(EXPECTED, ts, TS - 300), Ok(()));
        assert_eq!(verify(EXPECTED, ts, TS + 301), Err(SignatureError::TooOld));
        assert_eq!(verify(EXPECTED, ts, TS - 301), Err(SignatureError::TooNew));
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for ts in [
            "",
            "-1614265330",
            "1614265330.0",
            " 1614265330",
            "1e9",
            "99999999999999999999",
        ] {
            assert_eq!(
                verify(EXPECTED, ts, TS),
                Err(SignatureError::BadTimestamp),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn missing_headers_are_named() {
        let seen = MemorySeenIds::new(10);
        let v = Verifier::new(vec![secret()]);
        let mut h = headers(ID, "1614265330", EXPECTED);
        h.timestamp = None;
        let err = v.verify(&h, BODY, at(TS), &seen).unwrap_err();
        assert_eq!(err, SignatureError::MissingHeader("webhook-timestamp"));
        assert!(err.to_string().contains("webhook-timestamp"));
    }

    #[test]
    fn bad_ids_are_refused() {
        let seen = MemorySeenIds::new(10);
        let v = Verifier::new(vec![secret()]);
        let long = "x".repeat(MAX_ID_BYTES + 1);
        for id in ["", "a\nb", long.as_str()] {
            assert_eq!(
                v.verify(&headers(id, "1614265330", EXPECTED), BODY, at(TS), &seen),
                Err(SignatureError::BadId)
            );
        }
    }

    #[test]
    fn a_retry_with_the_same_body_is_taken_and_an_id_reused_for_another_body_is_refused() {
        let seen = MemorySeenIds::new(10);
        let v = Verifier::new(vec![secret()]);
        let h = headers(ID, "1614265330", EXPECTED);
        assert_eq!(v.verify(&h, BODY, at(TS), &seen), Ok(ID));
        assert_eq!(v.verify(&h, BODY, at(TS + 10), &seen), Ok(ID));
        let other = br#"{"test": 1}"#;
        let resigned = sign(&secret(), ID, TS, other);
        assert_eq!(
            v.verify(
                &headers(ID, "1614265330", &resigned),
                other,
                at(TS + 20),
                &seen
            ),
            Err(SignatureError::IdReused)
        );
        seen.forget(ID);
        let h2 = headers(ID, "1614265330", &resigned);
        assert_eq!(v.verify(&h2, other, at(TS + 30), &seen), Ok(ID));
    }

    #[test]
    fn an_unsigned_call_does_not_use_up_the_id() {
        let seen = MemorySeenIds::new(10);
        let v = Verifier::new(vec![secret()]);
        let forged = headers(ID, "1614265330", "v1,Zm9v");
        assert_eq!(
            v.verify(&forged, BODY, at(TS), &seen),
            Err(SignatureError::Mismatch)
        );
        assert!(seen.is_empty());
        assert!(v
            .verify(&headers(ID, "1614265330", EXPECTED), BODY, at(TS), &seen)
            .is_ok());
    }

    #[test]
    fn seen_ids_expire_after_twice_the_tolerance() {
        let seen = MemorySeenIds::new(10);
        assert_eq!(seen.seen_before("a", [1; 32], at(0)), Repeat::First);
        assert_eq!(seen.seen_before("a", [1; 32], at(599)), Repeat::SameBody);
        assert_eq!(seen.seen_before("a", [2; 32], at(599)), Repeat::OtherBody);
        assert_eq!(seen.seen_before("a", [2; 32], at(600)), Repeat::First);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn seen_ids_stay_within_capacity() {
        let seen = MemorySeenIds::new(3);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(seen.seen_before(id, [0; 32], at(i as i64)), Repeat::First);
        }
        assert_eq!(seen.len(), 3);
        // The oldest was dropped to make room; the newer ones are still remembered.
        assert_eq!(seen.seen_before("a", [0; 32], at(10)), Repeat::First);
        assert_eq!(seen.seen_before("d", [0; 32], at(10)), Repeat::SameBody);
    }

    #[test]
    fn headers_are_read_from_a_request() {
        let mut map = axum::http::HeaderMap::new();
        map.insert("Webhook-Id", ID.parse().unwrap());
        map.insert("webhook-timestamp", "1614265330".parse().unwrap());
        map.insert("WEBHOOK-SIGNATURE", EXPECTED.parse().unwrap());
        let h = SignedHeaders::from_headers(&map);
        let seen = MemorySeenIds::new(10);
        assert_eq!(
            Verifier::new(vec![secret()]).verify(&h, BODY, at(TS), &seen),
            Ok(ID)
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?}", Verifier::new(vec![secret()]));
        assert!(!shown.contains("MfKQ"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
