//! Reading a task's times from state.json: every attempt has two, and
//! chrono's general RFC 3339 parser was a tenth of a reader's work at 10,000
//! tasks. The form flocks writes (`2026-12-07T15:10:37.767971078Z`: UTC,
//! up to nine digits of fraction) is read directly; any other is left to
//! chrono, so what is accepted, and the error for what is not, is chrono's.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserializer;
use serde::de::{Error, Visitor};

/// `#[serde(deserialize_with = "stamp::read")]` for a `DateTime<Utc>`.
pub(super) fn read<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(Stamp)
}

/// The same for an `Option<DateTime<Utc>>` (null is None).
pub(super) fn read_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    struct Maybe;
    impl<'de> Visitor<'de> for Maybe {
        type Value = Option<DateTime<Utc>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 formatted date and time string or null")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            read(d).map(Some)
        }
    }
    d.deserialize_option(Maybe)
}

struct Stamp;

impl Visitor<'_> for Stamp {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // chrono's words, as its own visitor says them.
        f.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: Error>(self, s: &str) -> Result<Self::Value, E> {
        match written(s) {
            Some(t) => Ok(t),
            None => s
                .parse::<DateTime<chrono::FixedOffset>>()
                .map(|t| t.with_timezone(&Utc))
                .map_err(E::custom),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, the form flocks writes; None for any
/// other (chrono reads those).
fn written(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20 || *b.last()? != b'Z' {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<u32> {
        b.get(from..from + len)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    // A leap second (60) is chrono's to read.
    if second > 59 {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(20, digits.len())? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(time.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono(s: &str) -> Option<DateTime<Utc>> {
        s.parse::<DateTime<chrono::FixedOffset>>()
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    #[test]
    fn the_written_form_reads_as_chrono_reads_it() {
        for s in [
            "2026-12-07T15:10:37.767971078Z",
            "2026-12-07T15:10:37Z",
            "2026-12-07T15:10:37.5Z",
            "2026-12-07T15:10:37.000000001Z",
            "2024-02-29T23:59:59.999999999Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert!(written(s).is_some(), "{s}");
            assert_eq!(written(s), chrono(s), "{s}");
        }
        // What flocks writes, read back.
        let now = Utc::now();
        let text = serde_json::to_string(&now).unwrap();
        assert_eq!(written(text.trim_matches('"')), Some(now));
    }

    #[test]
    fn other_forms_are_left_to_chrono() {
        for s in [
            "2026-12-07T15:10:37+02:00",
            "2026-12-07 15:10:37Z",
            "2026-12-07t15:10:37z",
            "2016-12-31T23:59:60Z",
            "2026-12-07T15:10:37.1234567891Z",
            "2026-12-07T15:10:37.Z",
            "2026-02-30T15:10:37Z",
            "2026-13-07T15:10:37Z",
            "2026-12-07T24:00:00Z",
            "+2026-12-07T15:10:37Z",
            "2026-12-07T15:10:3Z",
            "",
        ] {
            assert_eq!(written(s), None, "{s}");
        }
        // And chrono decides: the same answer, or error, as before.
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "read")]
            at: DateTime<Utc>,
        }
        #[derive(serde::Deserialize)]
        struct Before {
            at: DateTime<Utc>,
        }
        for s in [
            r#"{"at":"2026-12-07T15:10:37+02:00"}"#,
            r#"{"at":"2026-02-30T15:10:37Z"}"#,
            r#"{"at":"yesterday"}"#,
            r#"{"at":7}"#,
        ] {
            let ours = serde_json::from_str::<T>(s)
                .map(|t| t.at)
                .map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Before>(s)
                .map(|t| t.at)
                .map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{s}");
        }
    }

    #[test]
    fn null_and_absent_are_none() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "read_option")]
            at: Option<DateTime<Utc>>,
        }
        let t: T = serde_json::from_str(r#"{"at":null}"#).unwrap();
        assert_eq!(t.at, None);
        let t: T = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(t.at, None);
        let t: T = serde_json::from_str(r#"{"at":"2026-12-07T15:10:37Z"}"#).unwrap();
        assert_eq!(t.at, chrono("2026-12-07T15:10:37Z"));
    }
}
