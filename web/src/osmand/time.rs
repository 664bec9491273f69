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
    lastmile_engine::time::parse_iso8601(s).ok_or_else(bad)
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
