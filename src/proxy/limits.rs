//! A 429's reset time, from its headers: `retry-after` (seconds or an HTTP
//! date) and `anthropic-ratelimit-<limit>-reset` (RFC 3339, or Unix seconds
//! as the subscription limits write it).
//!
//! The credential is parked until the latest of: `retry-after`, and the reset
//! of every limit the answer says is used up (its `-remaining` is 0 or its
//! `-status` is `rejected`). When no limit says so, the earliest reset
//! given stands; with no header at all, there is no time (the usual back-off
//! applies).

use chrono::{DateTime, Utc};
use hyper::HeaderMap;

const PREFIX: &str = "anthropic-ratelimit-";

/// When the limit a 429 answer hit resets, if its headers say.
pub(super) fn reset_of(headers: &HeaderMap, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = text("retry-after").and_then(|v| {
        if let Ok(secs) = v.parse::<f64>() {
            (secs.is_finite() && secs >= 0.0)
                .then(|| now + chrono::Duration::milliseconds((secs * 1000.0) as i64))
        } else {
            DateTime::parse_from_rfc2822(v)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }
    });
    let mut exhausted: Vec<DateTime<Utc>> = Vec::new();
    let mut any: Vec<DateTime<Utc>> = Vec::new();
    for (name, value) in headers {
        let Some(limit) = name
            .as_str()
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix("-reset"))
        else {
            continue;
        };
        let Some(at) = value.to_str().ok().and_then(|v| time_of(v.trim())) else {
            continue;
        };
        any.push(at);
        let used_up = text(&format!("{PREFIX}{limit}-remaining")).is_some_and(|r| r == "0")
            || text(&format!("{PREFIX}{limit}-status")).is_some_and(|s| s == "rejected");
        if used_up {
            exhausted.push(at);
        }
    }
    let from_limits = if exhausted.is_empty() {
        any.into_iter().min()
    } else {
        exhausted.into_iter().max()
    };
    match (retry_after, from_limits) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// RFC 3339, or Unix seconds.
fn time_of(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    v.parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_used_up_limit_says_when() {
        let now = at("2026-01-01T00:00:00Z");
        let h = headers(&[
            ("retry-after", "30"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T01:00:00Z"),
            ("anthropic-ratelimit-tokens-remaining", "5000"),
            ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:05Z"),
        ]);
        assert_eq!(reset_of(&h, now), Some(at("2026-01-01T01:00:00Z")));
        // retry-after alone, in seconds or as a date.
        let h = headers(&[("retry-after", "30")]);
        assert_eq!(reset_of(&h, now), Some(at("2026-01-01T00:00:30Z")));
        let h = headers(&[("retry-after", "Thu, 01 Jan 2026 00:02:00 GMT")]);
        assert_eq!(reset_of(&h, now), Some(at("2026-01-01T00:02:00Z")));
        // A later retry-after wins over the limit's reset.
        let h = headers(&[
            ("retry-after", "7200"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T01:00:00Z"),
        ]);
        assert_eq!(reset_of(&h, now), Some(at("2026-01-01T02:00:00Z")));
        // A subscription's limit: Unix seconds and a status.
        let h = headers(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", "1767229200"),
        ]);
        assert_eq!(reset_of(&h, now), Some(at("2026-01-01T01:00:00Z")));
        // No limit marked used up: the earliest reset.
        let h = headers(&[
            ("anthropic-ratelimit-a-reset", "2026-01-01T00:10:00Z"),
            ("anthropic-ratelimit-b-reset", "2026-01-01T00:05:00Z"),
        ]);
        assert_eq!(reset_of(&h, now), Some(at("2026-01-01T00:05:00Z")));
        assert_eq!(reset_of(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(reset_of(&HeaderMap::new(), now), None);
    }
}
