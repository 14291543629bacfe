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

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
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
