//! An HTTP answer and the ways a call can get none: plain data, so the policy that reads
//! answers (`policy::classify`) needs no port.

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body bytes: the whole body, or its start when `cut` says why the rest was not read.
    pub body: Vec<u8>,
    /// Why `body` is only the start of what the server sent; `None` when it is all of it.
    pub cut: Option<BodyCut>,
}

impl HttpResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why the relay kept only the start of an answer's body. The status line has arrived by
/// then, so it, not the body, says what the answer means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyCut {
    /// The body went on past the most the relay reads; the connection was closed there.
    #[error("body not read past {limit} bytes")]
    TooLong {
        /// The most that is read.
        limit: usize,
    },
    /// The body stopped coming before its end: the call timed out or the connection broke.
    #[error("rest of the body not read: {0}")]
    Unfinished(TransportError),
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The call took longer than its timeout.
    #[error("timed out")]
    Timeout,
    /// The connection failed or broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Invalid(String),
}
