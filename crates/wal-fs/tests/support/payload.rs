//! Self-checking payloads shared by the crash child (`src/bin`) and the
//! crash test: every byte is derived from a sequence number, so a recovered
//! entry can be verified without remembering what was written.
//!
//! Layout: tag (1: `D` data, `K` checkpoint) | seq u64 | group u64 | idx u32 |
//! n u32 | fill_len u32 | fill (fill_len bytes derived from seq).
//! `group` is 0 for a single append, the first seq of an atomic batch, or the
//! checkpoint's begin Lsn.
#![allow(dead_code)]

/// A decoded payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub tag: u8,
    pub seq: u64,
    pub group: u64,
    pub idx: u32,
    pub n: u32,
    pub fill_len: u32,
}

pub const HEADER: usize = 1 + 8 + 8 + 4 + 4 + 4;

pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fill_byte(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8
}

pub fn encode(p: Payload) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + p.fill_len as usize);
    v.push(p.tag);
    v.extend_from_slice(&p.seq.to_le_bytes());
    v.extend_from_slice(&p.group.to_le_bytes());
    v.extend_from_slice(&p.idx.to_le_bytes());
    v.extend_from_slice(&p.n.to_le_bytes());
    v.extend_from_slice(&p.fill_len.to_le_bytes());
    v.extend((0..p.fill_len as usize).map(|i| fill_byte(p.seq, i)));
    v
}

/// Decodes and checks every byte; `Err` says what is wrong.
pub fn decode(b: &[u8]) -> Result<Payload, String> {
    if b.len() < HEADER {
        return Err(format!("payload of {} bytes is too short", b.len()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    let p = Payload {
        tag: b[0],
        seq: u64_at(1),
        group: u64_at(9),
        idx: u32_at(17),
        n: u32_at(21),
        fill_len: u32_at(25),
    };
    if b.len() != HEADER + p.fill_len as usize {
        return Err(format!("{p:?}: length {} does not match", b.len()));
    }
    if let Some(i) = (0..p.fill_len as usize).find(|&i| b[HEADER + i] != fill_byte(p.seq, i)) {
        return Err(format!("{p:?}: fill byte {i} is wrong"));
    }
    Ok(p)
}
