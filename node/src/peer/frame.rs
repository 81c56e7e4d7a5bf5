//! Frames on a peer stream: a `u32` big-endian length, then that many bytes.
//!
//! Owns the wire format of one message on a QUIC stream and the stream error codes the peer plane
//! uses. Typed messages are bincode inside a frame ([`encode`], [`decode`]). A unary request frame
//! starts with one byte naming the RPC kind ([`write_request`]).
//!
//! A reader never trusts the claimed length: anything above the caller's limit is refused before a
//! byte of it is buffered, and the buffer grows only as bytes actually arrive, so a peer cannot
//! make us allocate by lying. On a framing error the reader stops the stream; the owner of the
//! matching send half should reset it with [`FrameError::reset_code`].

use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Default largest frame: big enough for a Raft snapshot chunk or a batch of log entries.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// The first allocation for a frame body; it grows as data arrives.
const INITIAL_BUFFER: usize = 64 << 10;

/// Stream error codes (QUIC application error codes on RESET_STREAM / STOP_SENDING).
pub mod code {
    use quinn::VarInt;

    /// A frame claimed more bytes than the reader accepts.
    pub const FRAME_TOO_LARGE: VarInt = VarInt::from_u32(1);
    /// The stream ended inside a frame.
    pub const FRAME_TRUNCATED: VarInt = VarInt::from_u32(2);
    /// The handler dropped the call without replying.
    pub const NO_REPLY: VarInt = VarInt::from_u32(3);
    /// A request frame without its kind byte.
    pub const BAD_REQUEST: VarInt = VarInt::from_u32(4);

    /// What a code means, for error messages.
    pub fn describe(code: VarInt) -> &'static str {
        match code.into_inner() {
            0 => "no error",
            1 => "frame too large",
            2 => "frame truncated",
            3 => "the handler gave no reply",
            4 => "bad request",
            _ => "unknown code",
        }
    }
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("stream ended after {got} of {expected} bytes of a frame")]
    Truncated { expected: u64, got: u64 },
    #[error("empty request frame (no RPC kind byte)")]
    EmptyRequest,
    #[error("peer reset the stream: {} (code {code})", code::describe(*code))]
    Reset { code: VarInt },
    #[error("peer stopped reading the stream: {} (code {code})", code::describe(*code))]
    Stopped { code: VarInt },
    #[error("connection lost: {0}")]
    ConnectionLost(quinn::ConnectionError),
    #[error("stream error: {0}")]
    Stream(String),
    #[error("encoding a message: {0}")]
    Encode(bincode::Error),
    #[error("decoding a message: {0}")]
    Decode(bincode::Error),
}

impl FrameError {
    /// The code to reset the matching send stream with, when the error is the peer's protocol
    /// violation (as opposed to a lost connection, which needs no answer).
    pub fn reset_code(&self) -> Option<VarInt> {
        match self {
            FrameError::TooLarge { .. } => Some(code::FRAME_TOO_LARGE),
            FrameError::Truncated { .. } => Some(code::FRAME_TRUNCATED),
            FrameError::EmptyRequest => Some(code::BAD_REQUEST),
            _ => None,
        }
    }
}

impl From<ReadError> for FrameError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Reset(code) => FrameError::Reset { code },
            ReadError::ConnectionLost(e) => FrameError::ConnectionLost(e),
            other => FrameError::Stream(other.to_string()),
        }
    }
}

impl From<WriteError> for FrameError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Stopped(code) => FrameError::Stopped { code },
            WriteError::ConnectionLost(e) => FrameError::ConnectionLost(e),
            other => FrameError::Stream(other.to_string()),
        }
    }
}

/// Read one frame of at most `max` bytes. `Ok(None)`: the stream ended cleanly between frames.
pub async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let result = read_frame_inner(recv, max).await;
    if let Err(e) = &result {
        if let Some(code) = e.reset_code() {
            // Whatever else the peer sends on this stream is of no use.
            let _ = recv.stop(code);
        }
    }
    result
}

async fn read_frame_inner(recv: &mut RecvStream, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match recv.read(&mut header[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(FrameError::Truncated { expected: 4, got: got as u64 }),
        }
    }
    let len = u64::from(u32::from_be_bytes(header));
    if len > max as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    // `len <= max`, and `max` is a usize.
    let len = len as usize;
    let mut body = Vec::with_capacity(len.min(INITIAL_BUFFER));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await? {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => return Err(FrameError::Truncated { expected: len as u64, got: body.len() as u64 }),
        }
    }
    Ok(Some(body))
}

/// Write one frame. Does not finish the stream: a stream may carry several frames.
pub async fn write_frame(send: &mut SendStream, payload: &[u8]) -> Result<(), FrameError> {
    write_parts(send, &[payload]).await
}

/// Write a unary request: one frame whose first byte is the RPC kind.
pub async fn write_request(send: &mut SendStream, kind: u8, payload: &[u8]) -> Result<(), FrameError> {
    write_parts(send, &[&[kind], payload]).await
}

/// Split a request frame into its kind and payload.
pub fn split_request(mut frame: Vec<u8>) -> Result<(u8, Vec<u8>), FrameError> {
    if frame.is_empty() {
        return Err(FrameError::EmptyRequest);
    }
    let kind = frame.remove(0);
    Ok((kind, frame))
}

async fn write_parts(send: &mut SendStream, parts: &[&[u8]]) -> Result<(), FrameError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(total)
        .map_err(|_| FrameError::TooLarge { len: total as u64, max: u32::MAX as usize })?;
    send.write_all(&len.to_be_bytes()).await?;
    for part in parts {
        send.write_all(part).await?;
    }
    Ok(())
}

/// A typed message as frame bytes (bincode, fixed-width integers).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    bincode::serialize(msg).map_err(FrameError::Encode)
}

/// A typed message from frame bytes. Bincode is told the input size, so a corrupt length inside
/// the message cannot make it allocate more than the frame already holds.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    use bincode::Options as _;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(FrameError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Vote {
        term: u64,
        candidate: String,
        log: Vec<u32>,
    }

    #[test]
    fn messages_round_trip_and_lies_are_refused() {
        let vote = Vote { term: 7, candidate: "n2".into(), log: vec![1, 2, 3] };
        let bytes = encode(&vote).unwrap();
        assert_eq!(decode::<Vote>(&bytes).unwrap(), vote);

        // A string claiming 2^60 bytes in a 30-byte message is an error, not an allocation.
        let mut lie = bytes.clone();
        lie[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode::<Vote>(&lie), Err(FrameError::Decode(_))));
        assert!(matches!(decode::<Vote>(&bytes[..5]), Err(FrameError::Decode(_))));
    }

    #[test]
    fn requests_carry_their_kind() {
        assert_eq!(split_request(vec![2, 9, 9]).unwrap(), (2, vec![9, 9]));
        assert!(matches!(split_request(Vec::new()), Err(FrameError::EmptyRequest)));
        assert_eq!(FrameError::EmptyRequest.reset_code(), Some(code::BAD_REQUEST));
    }
}
