//! The one binary encoding used on the wire and on disk: bincode with a size limit.
//!
//! The limit bounds what a peer (or a damaged file) can make us allocate while decoding, and
//! trailing bytes are refused so a truncated or padded message never decodes as something else.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message or stored record, encoded. Raft batches are split to fit under it.
pub const MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Encoding or decoding failed (malformed bytes, or over [`MAX_MESSAGE_BYTES`]).
#[derive(Debug, thiserror::Error)]
#[error("bincode: {0}")]
pub struct CodecError(#[from] bincode::Error);

impl CodecError {
    /// True when the value did not fit under the size limit.
    pub fn is_size_limit(&self) -> bool {
        matches!(*self.0, bincode::ErrorKind::SizeLimit)
    }
}

/// Largest snapshot image. Snapshots travel in chunks, so they are bounded by memory, not by
/// the message limit: 100 versions of the largest allowed table, with room to spare.
pub const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_limit(limit).reject_trailing_bytes()
}

/// Encodes a message or stored record.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(options(MAX_MESSAGE_BYTES).serialize(value)?)
}

/// Decodes a message or stored record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(options(MAX_MESSAGE_BYTES).deserialize(bytes)?)
}

/// Encodes a snapshot image.
pub fn encode_snapshot<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(options(MAX_SNAPSHOT_BYTES).serialize(value)?)
}

/// Decodes a snapshot image.
pub fn decode_snapshot<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(options(MAX_SNAPSHOT_BYTES).deserialize(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_trailing_bytes_and_huge_lengths() {
        let mut bytes = encode(&(1u64, "x".to_string())).unwrap();
        assert_eq!(decode::<(u64, String)>(&bytes).unwrap(), (1, "x".to_string()));
        bytes.push(0);
        assert!(decode::<(u64, String)>(&bytes).is_err());
        // A length prefix claiming ~2^63 bytes must fail fast, not allocate.
        let huge = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode::<Vec<u8>>(&huge).is_err());
    }
}
