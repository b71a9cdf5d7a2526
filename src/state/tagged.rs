//! Reading a task's status (`{"state": "done", "outcome": {...}}`) and an
//! attempt's outcome (`{"kind": "success"}`) from state.json. serde reads an
//! internally tagged enum by first copying every field aside until it has
//! seen the tag; with two outcomes and a status per task that copying was a
//! tenth of a reader's work at 10,000 tasks. flocks writes the tag first,
//! so the forms it writes most (`pending`, `done` with an outcome, an outcome
//! with no fields) are read as they come; any other form is read by serde's
//! own code for the type, so what is accepted, and the error for what is
//! not, stays serde's.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::{Outcome, TaskStatus};

/// `#[serde(deserialize_with = ...)]` for a task's `status`.
pub(super) fn read_status<'de, D: Deserializer<'de>>(d: D) -> Result<TaskStatus, D::Error> {
    d.deserialize_map(StatusVisitor)
}

/// For an outcome.
pub(super) fn read_outcome<'de, D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
    d.deserialize_map(OutcomeVisitor)
}

/// For an attempt's `outcome` (null is None).
pub(super) fn read_outcome_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Outcome>, D::Error> {
    struct Maybe;
    impl<'de> Visitor<'de> for Maybe {
        type Value = Option<Outcome>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("option")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            read_outcome(d).map(Some)
        }
    }
    d.deserialize_option(Maybe)
}

/// The outcomes without fields, by their tag.
fn unit_outcome(kind: &str) -> Option<Outcome> {
    Some(match kind {
        "success" => Outcome::Success,
        "timed_out" => Outcome::TimedOut,
        "stalled" => Outcome::Stalled,
        "interrupted" => Outcome::Interrupted,
        "overloaded" => Outcome::Overloaded,
        _ => return None,
    })
}

struct OutcomeVisitor;

impl<'de> Visitor<'de> for OutcomeVisitor {
    type Value = Outcome;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("internally tagged enum Outcome")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outcome, A::Error> {
        let mut seen = Seen::default();
        if let Some(kind) = tag(&mut map, "kind", &mut seen)? {
            match unit_outcome(&kind) {
                Some(unit) if seen.next(&mut map)?.is_none() => return Ok(unit),
                _ => seen.put("kind", Value::String(kind.into()))?,
            }
        }
        seen.by_serde(map)
    }
}

struct StatusVisitor;

impl<'de> Visitor<'de> for StatusVisitor {
    type Value = TaskStatus;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("internally tagged enum TaskStatus")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskStatus, A::Error> {
        let mut seen = Seen::default();
        let Some(state) = tag(&mut map, "state", &mut seen)? else {
            return seen.by_serde(map);
        };
        match &*state {
            "pending" if seen.next(&mut map)?.is_none() => return Ok(TaskStatus::Pending),
            "done" => match map.next_key::<Text>()? {
                Some(k) if &*k == "outcome" => {
                    let outcome = map.next_value_seed(OutcomeSeed)?;
                    let Some(k) = map.next_key::<Text>()? else {
                        return Ok(TaskStatus::Done { outcome });
                    };
                    let v = map.next_value()?;
                    let outcome = serde_json::to_value(&outcome).map_err(de::Error::custom)?;
                    seen.put("outcome", outcome)?;
                    seen.put(&k, v)?;
                }
                Some(k) => {
                    let v = map.next_value()?;
                    seen.put(&k, v)?;
                }
                None => {}
            },
            _ => {}
        }
        seen.put("state", Value::String(state.into()))?;
        seen.by_serde(map)
    }
}

/// The map's first key: its value when it is `tag` (the fast path); any
/// other first entry goes into `seen`, for serde's own reading.
fn tag<'de, A: MapAccess<'de>>(
    map: &mut A,
    tag: &'static str,
    seen: &mut Seen,
) -> Result<Option<Text<'de>>, A::Error> {
    match map.next_key::<Text>()? {
        Some(k) if &*k == tag => match map.next_value::<TagValue>()? {
            TagValue::Text(t) => Ok(Some(t)),
            // Not a name: serde says what is wrong with it.
            TagValue::Other(v) => {
                seen.put(&k, v)?;
                Ok(None)
            }
        },
        Some(k) => {
            let v = map.next_value()?;
            seen.put(&k, v)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The entries read before leaving the fast path.
#[derive(Default)]
struct Seen(Map<String, Value>);

impl Seen {
    /// The next entry, kept; None at the end of the map.
    fn next<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<Option<()>, A::Error> {
        match map.next_key::<Text>()? {
            Some(k) => {
                let v = map.next_value()?;
                self.put(&k, v).map(Some)
            }
            None => Ok(None),
        }
    }

    /// serde refuses a field given twice; so does this.
    fn put<E: de::Error>(&mut self, k: &str, v: Value) -> Result<(), E> {
        match self.0.insert(k.to_string(), v) {
            Some(_) => Err(E::custom(format_args!("duplicate field `{k}`"))),
            None => Ok(()),
        }
    }

    /// The rest of the map, then serde's own reading of the whole.
    fn by_serde<'de, A: MapAccess<'de>, T: de::DeserializeOwned>(
        mut self,
        mut map: A,
    ) -> Result<T, A::Error> {
        while self.next(&mut map)?.is_some() {}
        T::deserialize(Value::Object(self.0)).map_err(de::Error::custom)
    }
}

/// A key or tag, borrowed from the text when it has no escapes.
enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl From<Text<'_>> for String {
    fn from(t: Text<'_>) -> String {
        match t {
            Text::Borrowed(s) => s.to_string(),
            Text::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text::Owned(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text::Owned(v))
            }
        }
        d.deserialize_str(V)
    }
}

struct OutcomeSeed;

impl<'de> DeserializeSeed<'de> for OutcomeSeed {
    type Value = Outcome;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Outcome, D::Error> {
        read_outcome(d)
    }
}

/// A tag's value: a name, or whatever else was written there (kept for
/// serde's error).
enum TagValue<'de> {
    Text(Text<'de>),
    Other(Value),
}

impl<'de> de::Deserialize<'de> for TagValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TagValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TagValue::Text(Text::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TagValue::Text(Text::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TagValue::Text(Text::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(TagValue::Other(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TagValue::Other(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TagValue::Other(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TagValue::Other(v.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(TagValue::Other(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(TagValue::Other(Value::Null))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                use serde::Deserialize;
                Value::deserialize(de::value::SeqAccessDeserializer::new(a)).map(TagValue::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                use serde::Deserialize;
                Value::deserialize(de::value::MapAccessDeserializer::new(a)).map(TagValue::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Outcome;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Fast {
        #[serde(deserialize_with = "read_status")]
        status: TaskStatus,
        #[serde(default, deserialize_with = "read_outcome_option")]
        outcome: Option<Outcome>,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Serde {
        status: TaskStatus,
        #[serde(default)]
        outcome: Option<Outcome>,
    }

    /// Both readings of `text`: the same value, or the same error (the
    /// position in the line may differ: serde finds some errors at the end
    /// of the status, after copying it aside).
    fn same(text: &str) {
        let strip = |e: serde_json::Error| {
            let e = e.to_string();
            e.split(" at line ").next().unwrap().to_string()
        };
        let fast = serde_json::from_str::<Fast>(text).map_err(strip);
        let serde = serde_json::from_str::<Serde>(text).map_err(strip);
        match (&fast, &serde) {
            (Ok(f), Ok(s)) => {
                assert_eq!(f.status, s.status, "{text}");
                assert_eq!(f.outcome, s.outcome, "{text}");
            }
            (Err(f), Err(s)) => assert_eq!(f, s, "{text}"),
            _ => panic!("{text}: {fast:?} against {serde:?}"),
        }
    }

    fn outcomes() -> Vec<Outcome> {
        let at = chrono::Utc::now();
        vec![
            Outcome::Success,
            Outcome::Failed {
                reason: "no".into(),
            },
            Outcome::TimedOut,
            Outcome::Stalled,
            Outcome::Interrupted,
            Outcome::SpawnFailed { reason: "x".into() },
            Outcome::RateLimited {
                credential: Some("a".into()),
                resets_at: Some(at),
            },
            Outcome::RateLimited {
                credential: None,
                resets_at: None,
            },
            Outcome::Overloaded,
            Outcome::CredentialRejected {
                credential: None,
                reason: "401".into(),
            },
            Outcome::HostLost {
                reason: "gone".into(),
            },
            Outcome::SetupFailed {
                command: "make".into(),
                reason: "exit 2".into(),
                output: vec!["a".into()],
            },
        ]
    }

    #[test]
    fn every_written_status_and_outcome_reads_as_serde_reads_it() {
        let mut statuses = vec![
            TaskStatus::Pending,
            TaskStatus::Running {
                attempt: 2,
                pool: "p".into(),
                started_at: chrono::Utc::now(),
            },
            TaskStatus::Blocked {
                on: vec!["a".into()],
                reason: Some("why".into()),
            },
        ];
        statuses.extend(
            outcomes()
                .into_iter()
                .map(|outcome| TaskStatus::Done { outcome }),
        );
        for status in &statuses {
            for outcome in outcomes() {
                let text = serde_json::json!({"status": status, "outcome": outcome}).to_string();
                let fast: Fast = serde_json::from_str(&text).unwrap();
                assert_eq!(&fast.status, status);
                assert_eq!(fast.outcome.as_ref(), Some(&outcome));
                same(&text);
            }
        }
    }

    #[test]
    fn other_forms_read_as_serde_reads_them() {
        for text in [
            // The tag not first.
            r#"{"status":{"outcome":{"kind":"success"},"state":"done"}}"#,
            r#"{"status":{"on":["a"],"state":"blocked"}}"#,
            r#"{"status":{"state":"pending"},"outcome":{"reason":"r","kind":"failed"}}"#,
            // Fields a form does not have.
            r#"{"status":{"state":"pending","extra":1}}"#,
            r#"{"status":{"state":"done","outcome":{"kind":"success"},"extra":[1]}}"#,
            r#"{"status":{"state":"done","outcome":{"kind":"success","extra":{}}}}"#,
            r#"{"status":{"state":"done","extra":1,"outcome":{"kind":"stalled"}}}"#,
            // Given twice.
            r#"{"status":{"state":"done","outcome":{"kind":"success"},"outcome":{"kind":"stalled"}}}"#,
            r#"{"status":{"state":"done","state":"done","outcome":{"kind":"success"}}}"#,
            r#"{"status":{"state":"pending"},"outcome":{"kind":"failed","reason":"a","reason":"b"}}"#,
            // Wrong.
            r#"{"status":{"state":"gone"}}"#,
            r#"{"status":{"state":5}}"#,
            r#"{"status":{"state":null}}"#,
            r#"{"status":{"state":["done"]}}"#,
            r#"{"status":{"state":{"a":1}}}"#,
            r#"{"status":{}}"#,
            r#"{"status":"done"}"#,
            r#"{"status":{"state":"done"}}"#,
            r#"{"status":{"state":"done","outcome":{"kind":"gone"}}}"#,
            r#"{"status":{"state":"done","outcome":{"kind":"failed"}}}"#,
            r#"{"status":{"state":"done","outcome":null}}"#,
            r#"{"status":{"state":"running","attempt":1,"pool":"p"}}"#,
            r#"{"status":{"state":"pending"},"outcome":{"kind":true}}"#,
            r#"{"status":{"state":"pending"},"outcome":null}"#,
            r#"{"status":{"state":"pending"},"outcome":7}"#,
            // Escapes in names.
            r#"{"status":{"st\u0061te":"d\u006fne","outcome":{"kind":"success"}}}"#,
        ] {
            same(text);
        }
    }
}
