//! flagd's string operators, `starts_with` and `ends_with`: `[text, affix]`, both strings. Any
//! other input gives `null` (not `false`), as flagd specifies, so the flag falls back to its
//! default variant instead of looking up a variant named "false".

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{ArenaExt, CustomOperator, DataValue};

/// `{"starts_with": [text, prefix]}` or `{"ends_with": [text, suffix]}`: the test it runs.
pub struct Affix(pub fn(&str, &str) -> bool);

/// flagd's `starts_with`.
pub const STARTS_WITH: Affix = Affix(|text, prefix| text.starts_with(prefix));
/// flagd's `ends_with`.
pub const ENDS_WITH: Affix = Affix(|text, suffix| text.ends_with(suffix));

impl CustomOperator for Affix {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        Ok(match args {
            [DataValue::String(text), DataValue::String(affix)] => arena.bool((self.0)(text, affix)),
            _ => arena.null(),
        })
    }
}

/// flagd's `fractional`: `[bucket_key?, [variant, weight?]...]`. The bucket key is the first
/// argument when it is a string, else `$flagd.flagKey` followed by `targetingKey` (no
/// targeting key: `null`). The key's MurmurHash3 (x86, 32 bits, seed 0) scaled to the total
/// weight, `(hash * total) >> 32`, picks the bucket, as flagd's evaluators do. A variant may be
/// any value (a `fractional` used as a condition has `true` / `false` buckets); a weight
/// defaults to 1, a negative one counts as 0; malformed buckets or a zero total give `null`.
///
/// Registered under [`FRACTIONAL`]: rules name it `fractional`, renamed when compiled, because
/// the rule engine's own `fractional` returns `null` for a variant that is not a string.
pub struct Fractional;

/// The name [`Fractional`] is registered under.
pub const FRACTIONAL: &str = "switchyard_fractional";

fn field<'a>(object: &'a DataValue<'a>, key: &str) -> Option<&'a DataValue<'a>> {
    object
        .as_object()?
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The implicit bucket key, `flagKey` + `targetingKey`, in `arena`.
fn implicit_key<'a>(root: &'a DataValue<'a>, arena: &'a Bump) -> Option<&'a [u8]> {
    let flag_key = field(root, "$flagd")
        .and_then(|f| field(f, "flagKey"))
        .and_then(DataValue::as_str)?;
    let targeting_key = field(root, "targetingKey").and_then(DataValue::as_str)?;
    if targeting_key.is_empty() {
        return None;
    }
    let key = arena.alloc_slice_fill_copy(flag_key.len() + targeting_key.len(), 0u8);
    key[..flag_key.len()].copy_from_slice(flag_key.as_bytes());
    key[flag_key.len()..].copy_from_slice(targeting_key.as_bytes());
    Some(key)
}

/// A bucket's variant and weight, if it is well-formed.
fn bucket<'a>(arg: &'a DataValue<'a>) -> Option<(&'a DataValue<'a>, u64)> {
    let entry = arg.as_array()?;
    let variant = entry.first()?;
    let weight = match entry.get(1) {
        None => 1,
        Some(w) => w.as_i64().or_else(|| w.as_f64().map(|f| f as i64))?.max(0) as u64,
    };
    Some((variant, weight))
}

impl CustomOperator for Fractional {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        let Some(first) = args.first() else {
            return Ok(arena.null());
        };
        let (key, buckets): (Option<&[u8]>, &[&DataValue<'a>]) = match first {
            DataValue::String(s) => (Some(s.as_bytes()), &args[1..]),
            DataValue::Null => (implicit_key(ctx.root_input(), arena), &args[1..]),
            _ => (implicit_key(ctx.root_input(), arena), args),
        };
        let Some(key) = key else {
            return Ok(arena.null());
        };
        let mut total: u64 = 0;
        for arg in buckets {
            match bucket(arg) {
                Some((_, w)) => total = total.saturating_add(w.min(i32::MAX as u64)),
                None => return Ok(arena.null()),
            }
        }
        if buckets.is_empty() || total == 0 {
            return Ok(arena.null());
        }
        let hash = u64::from(murmurhash3::murmurhash3_x86_32(key, 0));
        let point = ((u128::from(hash) * u128::from(total)) >> 32) as u64;
        let mut end = 0u64;
        for arg in buckets {
            if let Some((variant, w)) = bucket(arg) {
                end += w.min(i32::MAX as u64);
                if point < end {
                    return Ok(variant);
                }
            }
        }
        Ok(arena.null())
    }
}
