//! Money, time and sizes as people read them, the same way everywhere: `$0.42`
//! (never `$-0.00`), `45s`, `3m07s`, `2h05m`, `1.5 GB`; counts with their
//! nouns (`1 turn`, `2 turns`); durations as people write them (`90s`,
//! `1h30m`, `7d`: one parser); and the rounding applied to
//! costs and durations before they are stored or emitted, so that
//! events.jsonl never shows `0.20000000000000004`.

/// Costs are kept to the micro-dollar: finer than any price, coarse enough
/// to drop float noise.
const COST_DECIMALS: i32 = 6;
/// Durations are kept to the millisecond.
const DURATION_DECIMALS: i32 = 3;

fn round_to(x: f64, decimals: i32) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    let f = 10f64.powi(decimals);
    let r = (x * f).round() / f;
    // -0.0 (an empty float sum is -0.0) reads as a minus sign.
    if r == 0.0 { 0.0 } else { r }
}

/// A cost in dollars, rounded to the micro-dollar, never `-0`.
pub(crate) fn round_cost(usd: f64) -> f64 {
    round_to(usd, COST_DECIMALS)
}

/// A duration in seconds, rounded to the millisecond, never negative.
pub(crate) fn round_secs(secs: f64) -> f64 {
    round_to(secs.max(0.0), DURATION_DECIMALS)
}

/// The sum of costs, rounded: `0.1 + 0.1 + 0.1` is `0.3`, nothing is `0.0`.
pub(crate) fn sum_costs(costs: impl IntoIterator<Item = f64>) -> f64 {
    round_cost(costs.into_iter().fold(0.0, |a, b| a + b))
}

/// `$0.42`: dollars with cents; a cost that is not zero but under a cent
/// shows as `<$0.01`, so that it never looks free.
pub(crate) fn money(usd: f64) -> String {
    Money(usd).to_string()
}

/// [`money`] written where it is formatted (no string of its own: `status`
/// writes one per task).
pub(crate) struct Money(pub f64);

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let usd = round_cost(self.0).max(0.0);
        if usd > 0.0 && usd < 0.005 {
            return f.write_str("<$0.01");
        }
        write!(f, "${usd:.2}")
    }
}

/// `45s`, `3m07s`, `2h05m`: whole seconds, rounded to the nearest.
pub(crate) fn duration(secs: f64) -> String {
    Duration(secs).to_string()
}

/// [`duration`] written where it is formatted.
pub(crate) struct Duration(pub f64);

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0;
        let s = if secs.is_finite() {
            secs.max(0.0).round() as u64
        } else {
            0
        };
        if s < 60 {
            write!(f, "{s}s")
        } else if s < 3600 {
            write!(f, "{}m{:02}s", s / 60, s % 60)
        } else {
            write!(f, "{}h{:02}m", s / 3600, (s % 3600) / 60)
        }
    }
}

/// `512 B`, `12.3 KB`, `4.0 MB`, `1.50 GB`, `2.1 TB`: powers of 1024, as `df -h`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        3 => format!("{v:.2} GB"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

/// `1 turn`, `3 turns`, `0 tasks`: a count and its noun, the noun singular
/// for one, plural (`+s`) otherwise. Every count flocks prints goes through
/// here, or [`noun_for`] for other forms (never `task(s)`).
pub(crate) fn count<N: Copy + std::fmt::Display + TryInto<u64>>(n: N, noun: &str) -> String {
    Count(n, noun).to_string()
}

/// [`count`] written where it is formatted.
pub(crate) struct Count<'a, N>(pub N, pub &'a str);

impl<N: Copy + std::fmt::Display + TryInto<u64>> std::fmt::Display for Count<'_, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Count(n, noun) = *self;
        write!(f, "{n} {noun}{}", noun_for(n, "", "s"))
    }
}

/// The noun (or verb form) for `n`: `singular` for one, `plural` otherwise
/// (`noun_for(n, "gets", "get")` agrees a verb with its count).
pub(crate) fn noun_for<'a, N: Copy + TryInto<u64>>(
    n: N,
    singular: &'a str,
    plural: &'a str,
) -> &'a str {
    if n.try_into().ok() == Some(1) {
        singular
    } else {
        plural
    }
}

/// A duration as people write it: a number and a unit, `s`, `m`, `h`, `d`
/// or `w`, one or more (`90s`, `30m`, `1h30m`, `1.5h`, `7d`). The one parser
/// of durations: `--older-than` and the duration keys of flocks.toml
/// (`agent_timeout_secs = "30m"`, beside plain numbers of seconds).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write a number and a unit (s, m, h, d, w), e.g. 90s, 30m, 1h30m, 7d"
        )
    };
    let mut secs: f64 = 0.0;
    let mut number = String::new();
    let mut parts = 0;
    for c in text.trim().chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit: f64 = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            'w' => 7.0 * 86400.0,
            _ => return Err(bad()),
        };
        if number.starts_with('.') || number.ends_with('.') {
            return Err(bad());
        }
        let n: f64 = number.parse().map_err(|_| bad())?;
        secs += n * unit;
        parts += 1;
        number.clear();
    }
    if !number.is_empty() || parts == 0 || !secs.is_finite() {
        return Err(bad());
    }
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// An age for `--older-than` (`7d`, `12h`, `30m`): a [`parse_duration`].
pub(crate) fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_never_shows_minus_zero_or_noise() {
        let empty: [f64; 0] = [];
        assert_eq!(money(empty.iter().sum::<f64>()), "$0.00");
        assert_eq!(money(sum_costs(empty)), "$0.00");
        assert_eq!(money(-0.0), "$0.00");
        assert_eq!(money(0.004), "<$0.01");
        assert_eq!(money(1.005_1), "$1.01");
        assert_eq!(sum_costs([0.1, 0.1]), 0.2);
        assert_eq!(sum_costs([0.1, 0.2]).to_string(), "0.3");
        assert_eq!(round_cost(-0.0).to_string(), "0");
        assert_eq!(round_secs(-0.2), 0.0);
        assert_eq!(round_secs(1.234_56), 1.235);
    }

    #[test]
    fn sizes_and_ages() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KB");
        assert_eq!(bytes(3 << 30), "3.00 GB");
        assert_eq!(parse_age("7d").unwrap().as_secs(), 7 * 86400);
        assert_eq!(parse_age("12h").unwrap().as_secs(), 12 * 3600);
        assert_eq!(parse_age("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_age("1d12h").unwrap().as_secs(), 36 * 3600);
        assert_eq!(parse_age("0d").unwrap().as_secs(), 0);
        for bad in ["", "7", "d", "7x", "-1d", "1.d", ".5h", "1..5h", "30 m"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration(" 1.5h ").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("0.5s").unwrap().as_millis(), 500);
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("`soon` is not a duration")
        );
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "turn"), "1 turn");
        assert_eq!(count(0usize, "turn"), "0 turns");
        assert_eq!(count(2u64, "attempt"), "2 attempts");
        assert_eq!(noun_for(1, "gets", "get"), "gets");
        assert_eq!(noun_for(-1, "gets", "get"), "get");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(-0.4), "0s");
        assert_eq!(duration(0.5), "1s");
        assert_eq!(duration(59.4), "59s");
        assert_eq!(duration(187.0), "3m07s");
        assert_eq!(duration(7500.0), "2h05m");
        assert_eq!(duration(f64::NAN), "0s");
    }
}
