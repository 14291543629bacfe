//! One error type for the whole core, classified by [`ErrorKind`] so that the
//! extension can turn it into a fitting SQLSTATE in exactly one place.

use std::fmt;

/// What went wrong, from the user's point of view. Each kind maps to one
/// SQLSTATE in the extension (`src/errors.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad options or credentials shape, unknown stream or property: the user must fix input.
    InvalidConfig,
    /// The CRM refused the credentials (401) or their scopes (403).
    Auth,
    /// Still rate limited (429) after every retry.
    RateLimited,
    /// The host could not be reached, or the connection broke, after every retry.
    Transport,
    /// The CRM answered 5xx after every retry.
    ServerError,
    /// The CRM answered with a body we cannot read: not JSON, truncated, wrong shape.
    BadResponse,
    /// The CRM rejected the request (4xx other than auth and rate limits).
    ApiRejected,
    /// The connector cannot do what was asked (yet).
    Unsupported,
}

/// An error with enough context to tell the user what happened and what to do.
/// Messages are written by us, never copied from a request, so they hold no
/// secret; the extension still scrubs known secret values before raising.
#[derive(Debug, Clone)]
pub struct CrmError {
    pub kind: ErrorKind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// `METHOD /path` of the API call that failed, when one did.
    pub endpoint: Option<String>,
    /// The CRM's own error code (Salesforce `errorCode`, HubSpot `category`),
    /// for connectors that act on specific codes.
    pub code: Option<Box<str>>,
}

/// `s` cut to `max` characters (with `…` when cut), control characters
/// other than newline and tab dropped: a remote server's text made fit to
/// record.
pub fn bounded_text(s: &str, max: usize) -> String {
    let keep = |c: &char| !c.is_control() || *c == '\n' || *c == '\t';
    let mut kept = s.chars().filter(keep);
    let mut out: String = kept.by_ref().take(max).collect();
    if kept.next().is_some() {
        out.push('…');
    }
    out
}

impl CrmError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CrmError {
            kind,
            message: message.into(),
            detail: None,
            hint: None,
            endpoint: None,
            code: None,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    pub fn bad_response(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadResponse, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The error with every occurrence of `secrets` (a session token, say)
    /// in its texts replaced, in any spelling [`crate::scrub`] knows;
    /// secrets shorter than 4 characters are left.
    pub fn redact(mut self, secrets: &[&str]) -> Self {
        let scrub = |s: &mut String| {
            *s = crate::scrub::scrub(s, secrets);
        };
        scrub(&mut self.message);
        for t in [&mut self.detail, &mut self.hint, &mut self.endpoint]
            .into_iter()
            .flatten()
        {
            scrub(t);
        }
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into().into_boxed_str());
        self
    }
}

impl fmt::Display for CrmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(e) = &self.endpoint {
            write!(f, " (endpoint {e})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CrmError {}

pub type Result<T, E = CrmError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_texts_are_bounded_and_cleaned() {
        assert_eq!(bounded_text("short", 10), "short");
        assert_eq!(bounded_text("abcdef", 3), "abc…");
        assert_eq!(bounded_text("a\u{1b}[31mb\nc\u{0}", 10), "a[31mb\nc");
        assert_eq!(bounded_text(&"é".repeat(5), 2), "éé…");
    }

    #[test]
    fn redact_replaces_secrets_in_every_text() {
        let e = CrmError::bad_response("token tok-123456 refused")
            .with_detail("sent tok-123456")
            .with_hint("rotate tok-123456")
            .redact(&["tok-123456", "ab"]);
        assert_eq!(e.message, "token [redacted] refused");
        assert_eq!(e.detail.as_deref(), Some("sent [redacted]"));
        assert_eq!(e.hint.as_deref(), Some("rotate [redacted]"));
    }
}
