//! The times the driver apps send, as Traccar's decoder reads them: a
//! number below 2^31 is seconds since the epoch and a larger one
//! milliseconds; otherwise an ISO 8601 date and time with its zone, or
//! `yyyy-MM-dd HH:mm:ss` without one. A time without a zone is taken as
//! UTC (Traccar takes its server's zone, which is UTC on the usual
//! install), and the docs say so.

/// Seconds since the Unix epoch, or why `s` is not a time.
pub fn parse(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let bad = || format!("timestamp {s:?} is not seconds, milliseconds or an ISO 8601 time");
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        let n: u64 = s.parse().map_err(|_| bad())?;
        return Ok(if n < i32::MAX as u64 {
            n as f64
        } else {
            n as f64 / 1000.0
        });
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Fractional seconds: Traccar refuses them; nothing else can be meant.
        return s
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(bad);
    }
    date_time(s).ok_or_else(bad)
}

/// `YYYY-MM-DD(T| )HH:MM[:SS[.fff]][Z | ±HH[:]MM | ±HH]`.
fn date_time(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let d = b.get(from..from + len)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    if b.get(13) != Some(&b':') {
        return None;
    }
    let mut i = 16;
    let (mut second, mut fraction, mut scale) = (0, 0, 1);
    if b.get(i) == Some(&b':') {
        second = num(i + 1, 2)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            // Beyond nanoseconds nothing is meant.
            let kept = digits.min(9);
            fraction = num(i + 1, kept)?;
            scale = 10i64.pow(kept as u32);
            i += 1 + digits;
        }
    }
    let offset_s = match &b[i..] {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [_, _] => (num(i + 1, 2)?, 0),
                [_, _, _, _] => (num(i + 1, 2)?, num(i + 3, 2)?),
                [_, _, b':', _, _] => (num(i + 1, 2)?, num(i + 4, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let whole =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    // One rounding, as the QUIC side makes of milliseconds: the same
    // instant gives the same f64 through either door.
    Some((i128::from(whole) * i128::from(scale) + i128::from(fraction)) as f64 / scale as f64)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm: eras of 400 years, March-based years so leap days fall last).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn every_form_the_apps_send() {
        // Seconds below 2^31, milliseconds above (Traccar's rule).
        assert_eq!(parse("1377177267"), Ok(1_377_177_267.0));
        assert_eq!(parse("1442068686579"), Ok(1_442_068_686.579));
        // ISO 8601 with a zone, with and without fractions.
        assert_eq!(parse("2016-01-27T18:55:47Z"), Ok(1_453_920_947.0));
        assert_eq!(
            parse("2025-06-15T13:45:12.862Z"),
            Ok(1_749_995_112_862.0 / 1000.0)
        );
        assert_eq!(
            parse("2026-01-01T00:00:00.868Z"),
            Ok(1_767_225_600_868.0 / 1000.0)
        );
        assert_eq!(parse("2016-01-27T20:55:47+02:00"), Ok(1_453_920_947.0));
        assert_eq!(parse("2016-01-27T13:55:47-0500"), Ok(1_453_920_947.0));
        assert_eq!(parse("2016-01-27T20:55:47+02"), Ok(1_453_920_947.0));
        // `yyyy-MM-dd HH:mm:ss` (the query's `+` already decoded): UTC.
        assert_eq!(parse("2014-06-04 09:10:11"), Ok(1_401_873_011.0));
        // Leap day, the year 2000, end of a year.
        assert_eq!(parse("2024-02-29T00:00:00Z"), Ok(1_709_164_800.0));
        assert_eq!(parse("2000-01-01T00:00:00Z"), Ok(946_684_800.0));
        assert_eq!(parse("1999-12-31T23:59:59Z"), Ok(946_684_799.0));
        assert_eq!(
            parse("9999-12-31T23:59:59.999999999Z"),
            Ok(253_402_300_800.0)
        );
    }

    #[test]
    fn what_is_not_a_time_says_so() {
        for s in [
            "",
            "yesterday",
            "2016-01-27",
            "2016-02-30T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "2016-01-27T25:00:00Z",
            "2016-01-27T18:55:47+25:00",
            "2016-01-27T18:55:47Q",
            "2016-01-27T18:55:47.Z",
            "-5",
            "1e9",
            "NaN",
        ] {
            let e = parse(s).expect_err(s);
            assert!(e.contains("timestamp"), "{s}: {e}");
        }
    }
}
