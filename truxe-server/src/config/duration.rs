//! Duration values as the deployment guide writes them: `900`, `500ms`, `15m`, `7d`.

use std::time::Duration;

/// What a number without a unit means. The guide mixes both: token lifetimes are seconds,
/// windows and timeouts (`RATE_LIMIT_WINDOW=900000`) are milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareUnit {
    Seconds,
    Millis,
}

/// Parses "900" (bare number in `bare` units), "500ms", "30s", "15m", "12h", "7d".
/// Rejects "", "15x", "-5", "1.5m" and values that overflow.
pub fn parse_duration(value: &str, bare: BareUnit) -> Result<Duration, String> {
    let invalid = || {
        let examples = match bare {
            BareUnit::Seconds => "examples: 900, 15m, 7d",
            BareUnit::Millis => "a bare number is milliseconds; examples: 900000, 15m, 7d",
        };
        format!("{value:?} is not a duration ({examples})")
    };
    let trimmed = value.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let overflow = || format!("{value:?} is too large for a duration");
    let number: u64 = digits.parse().map_err(|_| overflow())?;
    let (multiplier, millis) = match unit {
        "" => match bare {
            BareUnit::Seconds => (1, false),
            BareUnit::Millis => (1, true),
        },
        "ms" => (1, true),
        "s" => (1, false),
        "m" => (60, false),
        "h" => (3_600, false),
        "d" => (86_400, false),
        _ => return Err(invalid()),
    };
    let scaled = number.checked_mul(multiplier).ok_or_else(overflow)?;
    if millis { Ok(Duration::from_millis(scaled)) } else { Ok(Duration::from_secs(scaled)) }
}

/// The shortest exact way to write `d` back, for messages ("15m", "7d", "1500ms").
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{d:?}");
    }
    if d.subsec_millis() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs != 0 && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, BareUnit, Duration)] = &[
            ("900", BareUnit::Seconds, Duration::from_secs(900)),
            ("900", BareUnit::Millis, Duration::from_millis(900)),
            ("900000", BareUnit::Millis, Duration::from_secs(900)),
            ("86400000", BareUnit::Millis, Duration::from_secs(86_400)),
            ("500ms", BareUnit::Seconds, Duration::from_millis(500)),
            ("30s", BareUnit::Millis, Duration::from_secs(30)),
            ("15m", BareUnit::Seconds, Duration::from_secs(900)),
            ("12h", BareUnit::Seconds, Duration::from_secs(43_200)),
            ("7d", BareUnit::Millis, Duration::from_secs(604_800)),
            ("0", BareUnit::Seconds, Duration::ZERO),
            (" 15m ", BareUnit::Seconds, Duration::from_secs(900)),
        ];
        for (input, bare, expected) in cases {
            assert_eq!(parse_duration(input, *bare).as_ref(), Ok(expected), "{input:?}");
        }
    }

    #[test]
    fn rejected_forms() {
        for input in ["", " ", "15x", "-5", "-1", "1.5m", "m", "15 m", "15M", "1e3", "+5", "15mm", "0x10"] {
            let err = parse_duration(input, BareUnit::Seconds).expect_err(input);
            assert!(err.contains("is not a duration"), "{input:?}: {err}");
        }
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(parse_duration("99999999999999999999999", BareUnit::Seconds).is_err());
        assert!(parse_duration(&format!("{}d", u64::MAX / 2), BareUnit::Seconds).is_err());
        assert!(parse_duration(&u64::MAX.to_string(), BareUnit::Seconds).is_ok());
    }

    #[test]
    fn error_message_gives_examples() {
        let err = parse_duration("15x", BareUnit::Seconds).expect_err("15x");
        assert_eq!(err, r#""15x" is not a duration (examples: 900, 15m, 7d)"#);
        let err = parse_duration("15x", BareUnit::Millis).expect_err("15x");
        assert!(err.contains("milliseconds"), "{err}");
    }

    #[test]
    fn formats_back_shortest() {
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
