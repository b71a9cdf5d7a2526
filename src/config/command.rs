//! A command from the user's config: a string runs through `sh -c`, an array is argv.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum CommandSpec {
    /// Run through `sh -c` (the user's own trusted config).
    Shell(String),
    /// Run as argv, no shell.
    Argv(Vec<String>),
}

impl CommandSpec {
    /// The argv that runs this command.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            CommandSpec::Argv(v) => v.clone(),
        }
    }

    /// A std command for this spec, with no environment changes.
    pub fn to_command(&self) -> std::process::Command {
        let argv = self.argv();
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandSpec::Shell(s) => f.write_str(s),
            CommandSpec::Argv(v) => f.write_str(&v.join(" ")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a command: a string (run with sh -c) or a non-empty array of strings (argv)",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CommandSpec, E> {
                if s.trim().is_empty() {
                    return Err(E::custom("empty command"));
                }
                Ok(CommandSpec::Shell(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandSpec, A::Error> {
                let mut argv = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    argv.push(s);
                }
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(de::Error::custom("empty command array"));
                }
                Ok(CommandSpec::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}
