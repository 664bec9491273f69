//! Calendar times as traces, driver apps and webhooks write them: ISO 8601
//! / RFC 3339 read into seconds since the Unix epoch (one rounding, so an
//! instant with milliseconds reads as the same f64 as `ms / 1000.0`, the
//! QUIC side's), and written back with milliseconds. Proleptic Gregorian,
//! UTC; no time zone database is needed.

/// Days from 1970-01-01 to a date (Howard Hinnant's algorithm: eras of
/// 400 years, March-based years so that leap days fall last).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DD(T| )HH:MM[:SS[.fff]][Z | ±HH[:]MM | ±HH]`, without a zone
/// taken as UTC, as seconds since the epoch.
pub fn parse_iso8601(s: &str) -> Option<f64> {
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
        || b.get(13) != Some(&b':')
    {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
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
    // One rounding: the same instant gives the same f64 however it came.
    Some((i128::from(whole) * i128::from(scale) + i128::from(fraction)) as f64 / scale as f64)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_iso8601_ms(t: f64) -> String {
    let ms = (t * 1e3).round() as i64;
    let (days, ms) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_read_and_write() {
        assert_eq!(parse_iso8601("2016-01-27T18:55:47Z"), Some(1_453_920_947.0));
        assert_eq!(
            parse_iso8601("2025-06-15T13:45:12.862Z"),
            Some(1_749_995_112_862.0 / 1000.0)
        );
        assert_eq!(
            parse_iso8601("2016-01-27T20:55:47+02:00"),
            Some(1_453_920_947.0)
        );
        assert_eq!(
            parse_iso8601("2016-01-27T13:55:47-0500"),
            Some(1_453_920_947.0)
        );
        assert_eq!(parse_iso8601("2014-06-04 09:10:11"), Some(1_401_873_011.0));
        assert_eq!(parse_iso8601("2024-02-29T00:00:00Z"), Some(1_709_164_800.0));
        assert_eq!(
            parse_iso8601("9999-12-31T23:59:59.999999999Z"),
            Some(253_402_300_800.0)
        );
        for bad in [
            "2016-02-30T00:00:00Z",
            "2016-13-01T00:00Z",
            "2016-01-27T18:55:47Q",
            "x",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert_eq!(format_iso8601_ms(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_iso8601_ms(1_767_225_600.868),
            "2026-01-01T00:00:00.868Z"
        );
        assert_eq!(format_iso8601_ms(951_782_400.0), "2000-02-29T00:00:00.000Z");
        for t in [0.0, 951_782_400.5, 1_767_225_600.868, 1_709_164_799.999] {
            assert_eq!(parse_iso8601(&format_iso8601_ms(t)), Some(t), "{t}");
        }
    }
}
