//! flagd's string operators, `starts_with` and `ends_with`: `[text, affix]`, both strings. Any
//! other input gives `null` (not `false`), as flagd specifies, so the flag falls back to its
//! default variant instead of looking up a variant named "false".

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{ArenaExt, CustomOperator, DataValue};

/// `{"starts_with": [text, prefix]}`.
pub struct StartsWith;
/// `{"ends_with": [text, suffix]}`.
pub struct EndsWith;

fn affix<'a>(
    args: &[&'a DataValue<'a>],
    arena: &'a Bump,
    test: impl Fn(&str, &str) -> bool,
) -> &'a DataValue<'a> {
    match args {
        [DataValue::String(text), DataValue::String(affix)] => arena.bool(test(text, affix)),
        _ => arena.null(),
    }
}

impl CustomOperator for StartsWith {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        Ok(affix(args, arena, |t, a| t.starts_with(a)))
    }
}

impl CustomOperator for EndsWith {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        Ok(affix(args, arena, |t, a| t.ends_with(a)))
    }
}
