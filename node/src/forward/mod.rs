//! Cross-region forwarding: a request whose local attempt cannot succeed is carried over the peer
//! plane to a node of a healthy region, served there from that region's endpoints, and streamed
//! back. One hop at most: the receiving node never forwards again.
//!
//! On a QUIC stream of kind `FORWARD`: the request head frame ([`ForwardHead`]), then the body as
//! data frames, then the end of the send side. The answer: a [`ResponseHead`] frame, the body as
//! data frames, then the end of the stream. A reset at any point is a failure the origin reports
//! as 502 (or 504 past the deadline); nothing waits longer than the request's deadline.

pub mod origin;
pub mod protocol;
pub mod serve;
pub mod stream;

pub use protocol::{ForwardHead, ResponseHead};

#[cfg(test)]
mod tests;
