//! What flocks' proxy tells the run.

use super::*;

/// What flocks' proxy reads reaches the fleet as input: a 429's exact reset
/// parks the credential (and the agent's own rate limit without a time,
/// right after, keeps it); usage adds up on the attempt and is said live;
/// refused connections are counted and said once per host and port.
#[test]
fn the_proxy_parks_counts_and_reports() {
    use crate::proxy::{ProxyEvent, UsageDelta};
    let mut f = Setup::new(ONE)
        .config(|c| {
            c.network = Some(crate::config::NetworkConfig {
                allow: Vec::new(),
                notify_denied: true,
            });
        })
        .credentials(&["a"], |_| {})
        .build();
    let now = t0();
    let started = f.tick(now);
    assert_eq!(spawned(&started).len(), 1);
    let reset = now.wall + chrono::Duration::hours(2);

    // Usage: the totals so far, as an event and on the attempt.
    let delta = |i: u64, o: u64, cost: f64| UsageDelta {
        requests: 1,
        input_tokens: i,
        output_tokens: o,
        cost_usd: cost,
        model: Some("claude-sonnet-4-5".into()),
        ..UsageDelta::default()
    };
    let usage = |i: u64, o: u64, cost: f64| ProxyEvent::Usage {
        task: "a".into(),
        attempt: 1,
        usage: delta(i, o, cost),
    };
    f.proxy(usage(100, 10, 0.25), now);
    let out = f.proxy(usage(50, 5, 0.5), now);
    match events(&out)[..] {
        [
            Event::Usage {
                task,
                attempt: 1,
                usage,
            },
        ] => {
            assert_eq!(task, "a");
            assert_eq!(
                (usage.requests, usage.input_tokens, usage.output_tokens),
                (2, 150, 15)
            );
            assert_eq!(usage.cost_usd, 0.75);
        }
        ref other => panic!("{other:?}"),
    }
    let a = &f.record("a").unwrap().attempts[0];
    assert_eq!(a.cost(), 0.75, "live, before any result");

    // A 429 read by the proxy parks the credential until its reset, once.
    let limited_429 = || ProxyEvent::RateLimited {
        task: "a".into(),
        attempt: 1,
        credential: "a".into(),
        until: Some(reset),
    };
    let out = f.proxy(limited_429(), now);
    assert!(matches!(events(&out)[..], [Event::CredentialParked { until, .. }] if *until == reset));
    let again = f.proxy(limited_429(), now);
    assert!(events(&again).is_empty(), "parked that long already");
    // The agent then ends rate limited with no time of its own: the reset stands.
    let limited = Outcome::RateLimited {
        credential: Some("a".into()),
        resets_at: None,
    };
    f.finished("a", 1, &report(limited), later(now, 1));
    assert_eq!(f.state().credentials["a"].parked_until, Some(reset));

    // Refusals: each counted and said; needs_attention once per host and port.
    let denied = |host: &str, port: u16| ProxyEvent::EgressDenied {
        task: "a".into(),
        attempt: 1,
        host: host.into(),
        port,
    };
    let first = f.proxy(denied("evil.example", 443), now);
    let second = f.proxy(denied("evil.example", 443), now);
    let third = f.proxy(denied("other.example", 80), now);
    let attention = |out: &[Effect]| {
        events(out)
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::NeedsAttention {
                        cause: AttentionCause::EgressDenied,
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(
        (attention(&first), attention(&second), attention(&third)),
        (1, 0, 1)
    );
    assert!(matches!(
        events(&second)[..],
        [Event::EgressDenied { port: 443, .. }]
    ));
    assert_eq!(f.record("a").unwrap().attempts[0].egress_denied, 3);
    assert_eq!(f.record("a").unwrap().egress_denied(), 3);
}
