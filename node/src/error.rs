//! The gateway's one error type: what went wrong, whose fault it was, and the status it becomes.
//!
//! Every failure the data plane can answer with is a `GatewayError`; `status()` is the single
//! place a failure turns into an HTTP status.

use std::fmt;

use http::{HeaderValue, StatusCode};

/// Who is at fault: decides log level and which metric counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or could not be reached.
    Upstream,
    /// Meridian itself declined (overload, no route, no healthy endpoint).
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NoRoute,
    NoHealthyUpstream,
    UpstreamTimeout,
    UpstreamUnreachable,
    UpstreamProtocol,
    Overloaded,
    BodyTooLarge,
    BadRequest,
    /// The request head is over `max_header_bytes` or has too many fields.
    HeadersTooLarge,
    ClientBodyFailed,
    ClientTimeout,
    RateLimited,
    /// The route's `allow`/`deny` lists refuse the client's address.
    IpDenied,
    /// The route requires credentials and the request has none that verify.
    Unauthenticated,
    /// Authenticated, but not for this route (a token issued for another audience).
    Forbidden,
}

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub detail: String,
    /// `www-authenticate` of a 401: how the client may authenticate on this route.
    pub challenge: Option<HeaderValue>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> GatewayError {
        GatewayError { kind, detail: detail.into(), challenge: None }
    }

    pub fn with_challenge(mut self, challenge: HeaderValue) -> GatewayError {
        self.challenge = Some(challenge);
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::NoHealthyUpstream | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamUnreachable | ErrorKind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BadRequest | ErrorKind::ClientBodyFailed => StatusCode::BAD_REQUEST,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::IpDenied | ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    pub fn side(&self) -> Side {
        match self.kind {
            ErrorKind::BodyTooLarge
            | ErrorKind::BadRequest
            | ErrorKind::HeadersTooLarge
            | ErrorKind::ClientBodyFailed
            | ErrorKind::ClientTimeout
            | ErrorKind::RateLimited
            | ErrorKind::IpDenied
            | ErrorKind::Unauthenticated
            | ErrorKind::Forbidden => Side::Downstream,
            ErrorKind::UpstreamTimeout | ErrorKind::UpstreamUnreachable | ErrorKind::UpstreamProtocol => {
                Side::Upstream
            }
            ErrorKind::NoRoute | ErrorKind::NoHealthyUpstream | ErrorKind::Overloaded => Side::Gateway,
        }
    }

    /// Seconds a client should wait before trying again, for refusals that are about load.
    pub fn retry_after(&self) -> Option<u32> {
        match self.kind {
            ErrorKind::Overloaded | ErrorKind::NoHealthyUpstream => Some(1),
            _ => None,
        }
    }

    /// The short, stable name that goes in the error body and metrics.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NoHealthyUpstream => "no_healthy_upstream",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamUnreachable => "upstream_unreachable",
            ErrorKind::UpstreamProtocol => "upstream_protocol_error",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::ClientBodyFailed => "client_body_failed",
            ErrorKind::ClientTimeout => "client_timeout",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::IpDenied => "ip_denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.detail)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let s = |k| GatewayError::new(k, "").status().as_u16();
        assert_eq!(s(ErrorKind::NoRoute), 404);
        assert_eq!(s(ErrorKind::NoHealthyUpstream), 503);
        assert_eq!(s(ErrorKind::UpstreamTimeout), 504);
        assert_eq!(s(ErrorKind::UpstreamUnreachable), 502);
        assert_eq!(s(ErrorKind::Overloaded), 503);
        assert_eq!(s(ErrorKind::BodyTooLarge), 413);
        assert_eq!(s(ErrorKind::HeadersTooLarge), 431);
        assert_eq!(s(ErrorKind::RateLimited), 429);
        assert_eq!(s(ErrorKind::Unauthenticated), 401);
        assert_eq!(s(ErrorKind::IpDenied), 403);
        assert_eq!(s(ErrorKind::Forbidden), 403);
        assert!(GatewayError::new(ErrorKind::Overloaded, "").retry_after().is_some());
    }
}
