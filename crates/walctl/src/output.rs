//! Output helpers: payload formats, sizes, JSON lines.

use std::io::Write;

use anyhow::{Context, Result};
use bytesize::ByteSize;
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

/// The payload as text in `format` (`Raw` is printed as UTF-8 here; raw
/// output bypasses this).
pub fn payload_text(b: &[u8], format: PayloadFormat) -> String {
    match format {
        PayloadFormat::Hex => hex::encode(b),
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

/// Bytes in binary units, e.g. `1.5 KiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// Parses a byte count for a flag. The unit rules:
///
/// - a plain number is bytes: `4096`;
/// - binary units are powers of 1024: `KiB`, `MiB`, `GiB`, `TiB` (also
///   `Ki`, `Mi`, ...);
/// - decimal units are powers of 1000: `KB`, `MB`, `GB`, `TB`, and the
///   bare letters `K`, `M`, `G`, `T` (so `64k` is 64000, not 65536);
/// - units are case-insensitive, a space may stand before them, and a
///   fraction is allowed (`1.5MiB`), rounded down to whole bytes;
/// - a size that does not fit in 64 bits is an error, not a clamp.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = t
        .parse::<ByteSize>()
        .map_err(|e| format!("{s:?} is not a size (e.g. 4096, 64KiB, 256MiB, 1GiB): {e}"))?
        .as_u64();
    // bytesize saturates on overflow; no real size is 2^64 - 1 bytes.
    if n == u64::MAX {
        return Err(format!("{s:?} is too large"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_size("128"), Ok(128));
        assert_eq!(parse_size(" 0 "), Ok(0));
        assert_eq!(parse_size("128B"), Ok(128));
        assert_eq!(parse_size("18446744073709551614"), Ok(u64::MAX - 1));
    }

    #[test]
    fn binary_units_are_powers_of_1024() {
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64Ki"), Ok(64 << 10));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
    }

    #[test]
    fn decimal_units_are_powers_of_1000() {
        // The old parser read these as 1024-based.
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64kb"), Ok(64_000));
        assert_eq!(parse_size("256m"), Ok(256_000_000));
        assert_eq!(parse_size("256MB"), Ok(256_000_000));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5KB"), Ok(1500));
    }

    #[test]
    fn bad_sizes_are_errors() {
        for bad in ["", "x", "KiB", "1 parsec", "-1", "1e3", "64 kibibytes"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
        let e = parse_size("1 parsec").unwrap_err();
        assert!(e.contains("\"1 parsec\""), "{e}");
        // Overflow is refused rather than clamped.
        assert!(parse_size("100000000000EiB").is_err());
        assert!(parse_size("18446744073709551616").is_err());
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(64 << 20), "64.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn hex_payloads_are_lower_case() {
        assert_eq!(payload_text(&[0, 0xab, 0x10], PayloadFormat::Hex), "00ab10");
        assert_eq!(payload_text(&[], PayloadFormat::Hex), "");
    }
}
