//! What a response used: the `usage` of the API's answers, read as they pass
//! through the proxy (the `message_start` and `message_delta` server-sent
//! events of a streamed answer, or a JSON body), and what it cost by the
//! price table below (docs/src/threat-model/proxy.md lists the same).
//! Nothing is kept but the counts: a streamed answer is scanned line by line
//! (a line too long to be a usage event is skipped, not held), a JSON body
//! is held in memory up to [`JSON_CAP`] until it ends, then dropped.

/// A JSON answer longer than this is not read for its usage.
const JSON_CAP: usize = 8 << 20;
/// A server-sent line longer than this is not a usage event: it is skipped.
const LINE_CAP: usize = 256 << 10;

/// The price table: model id prefix (first match wins, so longer prefixes
/// come first), then USD per million input and output tokens. Cache writes
/// cost 1.25 times the input price (5-minute cache) or 2 times (1-hour
/// cache); cache reads 0.1 times. Base rates only (no long-context or batch
/// prices).
pub(crate) const PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-haiku", 0.25, 1.25),
];

/// The input and output price (USD per million tokens) of `model`.
pub(crate) fn price_of(model: &str) -> Option<(f64, f64)> {
    PRICES
        .iter()
        .find(|(prefix, _, _)| model.starts_with(prefix))
        .map(|(_, i, o)| (*i, *o))
}

/// Tokens one answer (or part of it) used, and their price.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageDelta {
    /// 1 for the first part of an answer, 0 for what follows.
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// What these tokens cost (0 when the model is not in the table).
    pub cost_usd: f64,
    pub model: Option<String>,
    /// The model is not in the price table: these tokens' cost is unknown.
    pub unpriced: bool,
}

/// Counts as the API reports them (cumulative within one answer).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    input: u64,
    output: u64,
    cache_creation: u64,
    /// Of `cache_creation`: written to the 1-hour cache.
    cache_1h: u64,
    cache_read: u64,
}

impl Counts {
    /// Take the larger of each count `usage` gives (the API's counts only grow).
    fn raise(&mut self, usage: &serde_json::Value) {
        let n = |k: &str| usage.get(k).and_then(serde_json::Value::as_u64);
        let up = |field: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *field = (*field).max(v);
            }
        };
        up(&mut self.input, n("input_tokens"));
        up(&mut self.output, n("output_tokens"));
        up(&mut self.cache_creation, n("cache_creation_input_tokens"));
        up(&mut self.cache_read, n("cache_read_input_tokens"));
        up(
            &mut self.cache_1h,
            usage
                .get("cache_creation")
                .and_then(|c| c.get("ephemeral_1h_input_tokens"))
                .and_then(serde_json::Value::as_u64),
        );
    }

    fn minus(&self, o: &Counts) -> Counts {
        Counts {
            input: self.input.saturating_sub(o.input),
            output: self.output.saturating_sub(o.output),
            cache_creation: self.cache_creation.saturating_sub(o.cache_creation),
            cache_1h: self.cache_1h.saturating_sub(o.cache_1h),
            cache_read: self.cache_read.saturating_sub(o.cache_read),
        }
    }

    fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// What a response's body is, for its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `text/event-stream`.
    Events,
    /// `application/json`.
    Json,
}

/// Reads one response's usage as its body passes.
pub(super) struct Tap {
    kind: Kind,
    /// Events: the line being read; Json: the body so far.
    buf: Vec<u8>,
    /// Events: inside a line too long to matter. Json: the body is too long.
    skipping: bool,
    model: Option<String>,
    seen: Counts,
    reported: Counts,
    counted: bool,
}

impl Tap {
    pub(super) fn new(kind: Kind) -> Tap {
        Tap {
            kind,
            buf: Vec::new(),
            skipping: false,
            model: None,
            seen: Counts::default(),
            reported: Counts::default(),
            counted: false,
        }
    }

    /// A piece of the body; what to report now (an answer's start), if anything.
    pub(super) fn feed(&mut self, mut chunk: &[u8]) -> Option<UsageDelta> {
        match self.kind {
            Kind::Json => {
                if !self.skipping {
                    if self.buf.len() + chunk.len() > JSON_CAP {
                        self.skipping = true;
                        self.buf = Vec::new();
                    } else {
                        self.buf.extend_from_slice(chunk);
                    }
                }
                None
            }
            Kind::Events => {
                let mut started = false;
                while let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
                    if !self.skipping && self.buf.len() + nl <= LINE_CAP {
                        self.buf.extend_from_slice(&chunk[..nl]);
                        let line = std::mem::take(&mut self.buf);
                        started |= self.line(&line);
                    }
                    self.buf.clear();
                    self.skipping = false;
                    chunk = &chunk[nl + 1..];
                }
                if !self.skipping {
                    if self.buf.len() + chunk.len() > LINE_CAP {
                        self.skipping = true;
                        self.buf.clear();
                    } else {
                        self.buf.extend_from_slice(chunk);
                    }
                }
                if started { self.delta() } else { None }
            }
        }
    }

    /// The body ended (or was dropped): what is left to report.
    pub(super) fn finish(&mut self) -> Option<UsageDelta> {
        match self.kind {
            Kind::Json if !self.skipping => {
                let body = std::mem::take(&mut self.buf);
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    self.message(&v);
                }
            }
            Kind::Events if !self.skipping && !self.buf.is_empty() => {
                let line = std::mem::take(&mut self.buf);
                self.line(&line);
            }
            _ => {}
        }
        self.delta()
    }

    /// One server-sent line; true when it started a message.
    fn line(&mut self, line: &[u8]) -> bool {
        let Some(data) = line.strip_prefix(b"data:") else {
            return false;
        };
        // Only the events that carry usage are parsed.
        let is = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        if !is(b"message_start") && !is(b"message_delta") {
            return false;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
            return false;
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("message_start") => {
                if let Some(m) = v.get("message") {
                    self.message(m);
                }
                true
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage") {
                    self.seen.raise(u);
                }
                false
            }
            _ => false,
        }
    }

    /// A message object: its model and usage.
    fn message(&mut self, m: &serde_json::Value) {
        if let Some(model) = m.get("model").and_then(|x| x.as_str()) {
            self.model = Some(model.to_string());
        }
        if let Some(u) = m.get("usage") {
            self.seen.raise(u);
        }
    }

    /// What was seen and not reported yet.
    fn delta(&mut self) -> Option<UsageDelta> {
        let d = self.seen.minus(&self.reported);
        if d.is_zero() && (self.counted || self.model.is_none()) {
            return None;
        }
        self.reported = self.seen;
        let requests = u64::from(!self.counted);
        self.counted = true;
        let price = self.model.as_deref().and_then(price_of);
        let cost_usd = price.map_or(0.0, |(input, output)| cost(&d, input, output));
        Some(UsageDelta {
            requests,
            input_tokens: d.input,
            output_tokens: d.output,
            cache_creation_input_tokens: d.cache_creation,
            cache_read_input_tokens: d.cache_read,
            cost_usd,
            model: self.model.clone(),
            unpriced: price.is_none(),
        })
    }
}

/// What `c` costs at these prices (USD per million tokens).
fn cost(c: &Counts, input: f64, output: f64) -> f64 {
    let one_hour = c.cache_1h.min(c.cache_creation);
    let five_min = c.cache_creation - one_hour;
    (c.input as f64 * input
        + c.output as f64 * output
        + five_min as f64 * input * 1.25
        + one_hour as f64 * input * 2.0
        + c.cache_read as f64 * input * 0.1)
        / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"usage\":{\"input_tokens\":1000,\"cache_creation_input_tokens\":2000,\"cache_read_input_tokens\":10000,\"output_tokens\":1}}}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"message_delta is a word\"}}\n",
        "\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":500}}\n",
        "\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn a_streamed_answer_reports_at_its_start_and_its_end() {
        // Fed one byte at a time: lines cross chunks.
        let mut tap = Tap::new(Kind::Events);
        let mut deltas = Vec::new();
        for b in STREAM.as_bytes() {
            deltas.extend(tap.feed(std::slice::from_ref(b)));
        }
        deltas.extend(tap.finish());
        assert_eq!(deltas.len(), 2, "{deltas:?}");
        let (start, end) = (&deltas[0], &deltas[1]);
        assert_eq!(
            (start.requests, start.input_tokens, start.output_tokens),
            (1, 1000, 1)
        );
        assert_eq!(start.cache_creation_input_tokens, 2000);
        assert_eq!(start.cache_read_input_tokens, 10000);
        assert_eq!(
            (end.requests, end.input_tokens, end.output_tokens),
            (0, 0, 499)
        );
        // Sonnet: $3 in, $15 out; cache writes 3.75, reads 0.30 per MTok.
        let total = start.cost_usd + end.cost_usd;
        let expect = (1000.0 * 3.0 + 500.0 * 15.0 + 2000.0 * 3.75 + 10000.0 * 0.3) / 1e6;
        assert!((total - expect).abs() < 1e-12, "{total} vs {expect}");
        assert!(!start.unpriced);
        assert_eq!(start.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    }

    #[test]
    fn a_json_answer_reports_at_its_end() {
        let body = r#"{"id":"m","type":"message","model":"claude-opus-4-1-20250805","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":20,"cache_creation_input_tokens":100,"cache_creation":{"ephemeral_5m_input_tokens":40,"ephemeral_1h_input_tokens":60}}}"#;
        let mut tap = Tap::new(Kind::Json);
        let (a, b) = body.as_bytes().split_at(17);
        assert!(tap.feed(a).is_none() && tap.feed(b).is_none());
        let d = tap.finish().unwrap();
        assert_eq!((d.requests, d.input_tokens, d.output_tokens), (1, 10, 20));
        let expect = (10.0 * 15.0 + 20.0 * 75.0 + 40.0 * 18.75 + 60.0 * 30.0) / 1e6;
        assert!((d.cost_usd - expect).abs() < 1e-12, "{}", d.cost_usd);
        assert!(tap.finish().is_none(), "reported once");
    }

    #[test]
    fn an_unknown_model_is_counted_but_not_priced() {
        let mut tap = Tap::new(Kind::Json);
        tap.feed(br#"{"model":"claude-next-9","usage":{"input_tokens":5,"output_tokens":6}}"#);
        let d = tap.finish().unwrap();
        assert!(d.unpriced && d.cost_usd == 0.0 && d.output_tokens == 6);
        // Not a message at all (an error body): nothing.
        let mut tap = Tap::new(Kind::Json);
        tap.feed(br#"{"type":"error","error":{"type":"overloaded_error"}}"#);
        assert!(tap.finish().is_none());
    }

    #[test]
    fn long_lines_are_skipped_not_held() {
        let mut tap = Tap::new(Kind::Events);
        let big = vec![b'x'; LINE_CAP * 3];
        tap.feed(b"data: {\"type\":\"content_block_delta\",\"text\":\"");
        tap.feed(&big);
        assert!(tap.buf.capacity() <= LINE_CAP * 2, "{}", tap.buf.capacity());
        tap.feed(b"\"}\n");
        let start = STREAM.lines().nth(1).unwrap();
        let d = tap.feed(format!("{start}\n").as_bytes()).unwrap();
        assert_eq!(d.input_tokens, 1000);
    }

    #[test]
    fn prefixes_pick_the_right_price() {
        assert_eq!(price_of("claude-opus-4-5-20251101"), Some((5.0, 25.0)));
        assert_eq!(price_of("claude-opus-4-1-20250805"), Some((15.0, 75.0)));
        assert_eq!(price_of("claude-haiku-4-5-20251001"), Some((1.0, 5.0)));
        assert_eq!(price_of("claude-3-5-haiku-20241022"), Some((0.8, 4.0)));
        assert_eq!(price_of("gpt-4"), None);
        // Longer prefixes first, so no entry hides a later one.
        for (i, (a, _, _)) in PRICES.iter().enumerate() {
            for (b, _, _) in &PRICES[i + 1..] {
                assert!(!b.starts_with(a), "{a} hides {b}");
            }
        }
    }
}
