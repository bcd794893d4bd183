//! Injectable time, so rotation, deletion windows and expiry are tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC.
pub type Timestamp = i64;

pub const DAY: i64 = 86_400;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}

/// A clock that moves only when told to: for tests and simulations.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicI64::new(start))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// An RFC 3339 time (`2025-01-01T12:00:00Z`, or with an offset) as seconds since the epoch.
pub fn parse_iso(s: &str) -> Option<Timestamp> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// ISO-8601 UTC as the API prints dates: `2025-01-01T12:00:00Z`.
pub fn format_iso(t: Timestamp) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month, day) = dt.to_calendar_date();
    if !(0..=9999).contains(&year) {
        let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        return dt.format(&f).unwrap_or_default();
    }
    // Digits written straight into the 20 bytes: every response and audit line carries a time,
    // and the general formatter costs several times this.
    let (h, m, s) = dt.to_hms();
    let mut out = *b"0000-00-00T00:00:00Z";
    let two = |out: &mut [u8; 20], at: usize, v: u8| {
        out[at] = b'0' + v / 10;
        out[at + 1] = b'0' + v % 10;
    };
    let year = year as u16;
    two(&mut out, 0, (year / 100) as u8);
    two(&mut out, 2, (year % 100) as u8);
    two(&mut out, 5, month as u8);
    two(&mut out, 8, day);
    two(&mut out, 11, h);
    two(&mut out, 14, m);
    two(&mut out, 17, s);
    String::from_utf8(out.to_vec()).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_format_matches_the_api() {
        assert_eq!(format_iso(1_735_732_800), "2025-01-01T12:00:00Z");
        assert_eq!(format_iso(0), "1970-01-01T00:00:00Z");
        // The digit writer agrees with the general formatter, leap days and years' ends included.
        let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        let general = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap().format(&f).unwrap();
        let mut t: i64 = -62_135_596_800; // 0001-01-01
        while t < 253_402_300_799 {
            assert_eq!(format_iso(t), general(t), "{t}");
            t += 86_399 * 7 + 3_607;
        }
        for t in [951_782_400, 951_868_799, 1_704_067_199, 253_402_300_799, -62_167_219_200] {
            assert_eq!(format_iso(t), general(t), "{t}");
        }
        assert_eq!(format_iso(-62_167_219_201), general(-62_167_219_201), "before year 0: the general form");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(100);
        assert_eq!(c.now(), 100);
        c.advance(DAY);
        assert_eq!(c.now(), 100 + DAY);
    }
}
