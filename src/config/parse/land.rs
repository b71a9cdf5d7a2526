//! `[land]`, `best_of` and `[[variants]]`.

use super::raw::{RawLand, RawVariant};
use super::*;

/// `[land]`: when conflicts are redone, the remote to push to, what runs
/// after the push.
pub(super) fn parse_land(cx: &Ctx, land: RawLand) -> Result<LandConfig> {
    let redo_conflicts = match land.redo_conflicts {
        None => RedoConflicts::AtLand,
        Some(v) => RedoConflicts::parse(v.get_ref()).ok_or_else(|| {
            cx.err(
                v.span(),
                "land.redo_conflicts",
                format!(
                    "unknown value `{}`: use \"at_land\" (redo with `flocks land --resolve`) or \"early\" (with --supervise, redo a task as soon as its conflict is predicted)",
                    v.get_ref()
                ),
            )
        })?,
    };
    let push = match land.push {
        None => None,
        Some(v) if !remote_name_ok(v.get_ref()) => {
            return Err(cx.err(
                v.span(),
                "land.push",
                format!(
                    "`{}` is not a git remote name: name one of the repository's remotes (`git remote` lists them), e.g. \"origin\"",
                    v.get_ref()
                ),
            ));
        }
        Some(v) => Some(v.into_inner()),
    };
    Ok(LandConfig {
        redo_conflicts,
        push,
        after_push: land.after_push,
    })
}

/// `[[variants]]`: each changes something (model, args or prompt suffix).
pub(super) fn parse_variants(
    cx: &Ctx,
    raw: Vec<Spanned<RawVariant>>,
) -> Result<Vec<VariantConfig>> {
    let mut variants = Vec::new();
    for v in raw {
        let span = v.span();
        let v = v.into_inner();
        if let Some(m) = &v.model
            && m.get_ref().trim().is_empty()
        {
            return Err(cx.err(m.span(), "variants.model", "must not be empty"));
        }
        let variant = VariantConfig {
            model: v.model.map(|m| m.into_inner()),
            args: v.args,
            prompt_suffix: v.prompt_suffix.map(|s| s.into_inner()),
        };
        if variant == VariantConfig::default() {
            return Err(cx.err(
                span,
                "variants",
                "this [[variants]] table changes nothing: give it model, args or prompt_suffix",
            ));
        }
        variants.push(variant);
    }
    Ok(variants)
}

/// `best_of = N`, or a `[best_of]` table with `n` and `judge`.
pub(super) fn parse_best_of(cx: &Ctx, v: S<toml::Value>) -> Result<BestOfConfig> {
    let Some(v) = v else {
        return Ok(BestOfConfig::default());
    };
    let span = v.span();
    let count = |n: &toml::Value, key: &str| match n.as_integer() {
        Some(n) if (1..=i64::from(MAX_BEST_OF)).contains(&n) => Ok(n as u32),
        _ => Err(cx.err(
            span.clone(),
            key,
            format!("must be a whole number from 1 to {MAX_BEST_OF}, found {n}"),
        )),
    };
    match v.into_inner() {
        n @ toml::Value::Integer(_) => Ok(BestOfConfig {
            n: count(&n, "best_of")?,
            judge: false,
        }),
        toml::Value::Table(t) => {
            let mut out = BestOfConfig::default();
            for (key, value) in t {
                match key.as_str() {
                    "n" => out.n = count(&value, "best_of.n")?,
                    "judge" => {
                        out.judge = value.as_bool().ok_or_else(|| {
                            cx.err(
                                span.clone(),
                                "best_of.judge",
                                format!("expected true or false, found {value}"),
                            )
                        })?
                    }
                    other => {
                        return Err(cx.err(
                            span.clone(),
                            &format!("best_of.{other}"),
                            "unknown key (expected `n` or `judge`)",
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(cx.err(
            span,
            "best_of",
            format!(
                "expected a number of variants (best_of = 3) or a table (`[best_of]` with n and judge), found {other}"
            ),
        )),
    }
}
