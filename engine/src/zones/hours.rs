//! When a fleet's vehicles may move: working hours per weekday in the
//! fleet's own time zone (an IANA name, "Europe/Lisbon"), judged on the
//! local wall clock so a daylight-saving change moves them with the
//! clocks. Spans are written as people write them: `"mon-fri
//! 07:00-19:00"`, `"sat 08:00-13:00"`; a span that ends at or before it
//! starts runs past midnight into the next day (`"fri 22:00-06:00"` is
//! Friday night until Saturday 06:00).

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Weekdays as written, Monday first.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One span: its first day (0 Monday) and its local minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    day: u8,
    start_min: u16,
    end_min: u16,
}

/// A fleet's working hours in its time zone.
#[derive(Debug, Clone)]
pub struct WorkingHours {
    tz: TimeZone,
    spans: Vec<Span>,
}

fn day(s: &str) -> Option<u8> {
    DAYS.iter().position(|d| *d == s).map(|d| d as u8)
}

fn minute(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    // 24:00 is the end of a day.
    ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
}

impl WorkingHours {
    /// Parses `spans` in the time zone named `time_zone`; the error says
    /// which span and why.
    pub fn new(time_zone: &str, spans: &[String]) -> Result<Self, String> {
        let tz = jiff::tz::db()
            .get(time_zone)
            .map_err(|_| format!("time zone {time_zone:?} is not an IANA time zone name"))?;
        let mut out = Vec::new();
        for text in spans {
            let bad = || format!("working hours {text:?}: write e.g. \"mon-fri 07:00-19:00\"");
            let (days, times) = text.trim().split_once(' ').ok_or_else(bad)?;
            let (first, last) = match days.split_once('-') {
                Some((a, b)) => (day(a), day(b)),
                None => (day(days), day(days)),
            };
            let (Some(first), Some(last)) = (first, last) else {
                return Err(bad());
            };
            let (a, b) = times.trim().split_once('-').ok_or_else(bad)?;
            let (Some(start_min), Some(end_min)) = (minute(a), minute(b)) else {
                return Err(bad());
            };
            // "fri-mon" wraps over the week's end.
            let mut d = first;
            loop {
                out.push(Span {
                    day: d,
                    start_min,
                    end_min,
                });
                if d == last {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        if out.is_empty() {
            return Err("working hours need at least one span".into());
        }
        Ok(Self { tz, spans: out })
    }

    /// Whether event time `t` (seconds since the epoch) is inside the
    /// working hours.
    pub fn contains(&self, t: f64) -> bool {
        let Ok(ts) = Timestamp::from_second(t.floor() as i64) else {
            return true;
        };
        let local = ts.to_zoned(self.tz.clone());
        let day = local.weekday().to_monday_zero_offset() as u8;
        let m = local.hour() as u16 * 60 + local.minute() as u16;
        self.spans.iter().any(|s| {
            if s.start_min < s.end_min {
                s.day == day && (s.start_min..s.end_min).contains(&m)
            } else {
                (s.day == day && m >= s.start_min) || ((s.day + 1) % 7 == day && m < s.end_min)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(spans: &[&str]) -> WorkingHours {
        let spans: Vec<String> = spans.iter().map(|s| s.to_string()).collect();
        WorkingHours::new("Europe/Lisbon", &spans).unwrap()
    }

    /// Seconds since the epoch of a UTC date and time.
    fn utc(s: &str) -> f64 {
        s.parse::<Timestamp>().unwrap().as_second() as f64
    }

    #[test]
    fn weekdays_and_hours_follow_the_local_clock_across_daylight_saving() {
        let h = hours(&["mon-fri 07:00-19:00", "sat 08:00-13:00"]);
        // Lisbon is UTC+0 in winter, UTC+1 from the last Sunday of March
        // (2026-03-29).
        assert!(!h.contains(utc("2026-03-27T06:30:00Z")), "Fri 06:30 local");
        assert!(h.contains(utc("2026-03-27T07:00:00Z")), "Fri 07:00 local");
        assert!(
            h.contains(utc("2026-03-30T06:30:00Z")),
            "Mon 07:30 local (summer)"
        );
        assert!(
            !h.contains(utc("2026-03-30T05:30:00Z")),
            "Mon 06:30 local (summer)"
        );
        assert!(
            !h.contains(utc("2026-03-30T18:30:00Z")),
            "Mon 19:30 local (summer)"
        );
        assert!(h.contains(utc("2026-03-28T12:59:00Z")), "Sat 12:59 local");
        assert!(!h.contains(utc("2026-03-28T13:00:00Z")), "Sat 13:00 local");
        assert!(!h.contains(utc("2026-03-29T10:00:00Z")), "Sunday");
    }

    #[test]
    fn a_span_past_midnight_runs_into_the_next_day_and_the_week_wraps() {
        let h = hours(&["sun 22:00-06:00"]);
        assert!(h.contains(utc("2026-01-04T23:00:00Z")), "Sun 23:00");
        assert!(h.contains(utc("2026-01-05T05:59:00Z")), "Mon 05:59");
        assert!(!h.contains(utc("2026-01-05T06:00:00Z")), "Mon 06:00");
        assert!(!h.contains(utc("2026-01-04T21:00:00Z")), "Sun 21:00");
        let all = hours(&["fri-mon 00:00-24:00"]);
        assert!(all.contains(utc("2026-01-05T12:00:00Z")), "Monday");
        assert!(!all.contains(utc("2026-01-06T12:00:00Z")), "Tuesday");
    }

    #[test]
    fn bad_hours_are_refused_saying_which() {
        let bad = |tz: &str, span: &str| WorkingHours::new(tz, &[span.to_string()]).unwrap_err();
        assert!(bad("Mars/Olympus", "mon 07:00-19:00").contains("Mars/Olympus"));
        for span in [
            "monday 07:00-19:00",
            "mon 7-19",
            "mon 07:00-25:00",
            "mon-xyz 07:00-08:00",
        ] {
            assert!(bad("Europe/Lisbon", span).contains(span), "{span}");
        }
        assert!(WorkingHours::new("UTC", &[]).is_err());
    }
}
