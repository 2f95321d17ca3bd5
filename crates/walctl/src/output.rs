//! Output helpers: payload formats, sizes, JSON lines.

use std::io::Write;

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;

/// How payloads are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadFormat {
    /// Lower-case hex.
    Hex,
    /// UTF-8, invalid sequences replaced with U+FFFD.
    Utf8,
    /// The bytes as they are (text output only; one payload after another).
    Raw,
}

/// Hex of `b`, lower case.
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// The payload as text in `format` (`Raw` is printed as UTF-8 here; raw
/// output bypasses this).
pub fn payload_text(b: &[u8], format: PayloadFormat) -> String {
    match format {
        PayloadFormat::Hex => hex(b),
        PayloadFormat::Utf8 | PayloadFormat::Raw => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Writes one JSON object and a newline to stdout.
pub fn json_line<T: Serialize>(out: &mut impl Write, v: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, v).context("writing JSON")?;
    out.write_all(b"\n").context("writing to stdout")?;
    Ok(())
}

/// Pretty JSON of one object on stdout.
pub fn json_pretty<T: Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).context("encoding JSON")?;
    println!("{s}");
    Ok(())
}

/// Bytes in binary units, e.g. `1.5 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a byte count: `4096`, `64KiB`, `64k`, `256MiB`, `1GiB`, `1G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 64KiB, 256MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128"), Ok(128));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
