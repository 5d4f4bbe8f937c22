//! `switchyard eval NAME --context '{...}' [--service S --version V --label K=V]`: evaluates a
//! toggle as an SDK on such an instance would, for such a caller, and prints the value, variant
//! and reason. The definition is read from the cluster; the evaluation is local, with the same
//! code the SDK runs.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde_json::{json, Map, Value};

use crate::cli::output::emit;
use crate::cli::Cli;
use crate::eval::{Context, Flag, InstanceFacts};

/// Settings of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Feature name.
    pub name: String,
    /// The caller's context as a JSON object (`targetingKey` is the bucketing key).
    #[arg(long, default_value = "{}")]
    pub context: String,
    /// Evaluate as an instance of this service (`instance.service`).
    #[arg(long)]
    pub service: Option<String>,
    /// ... at this version (`instance.version`).
    #[arg(long)]
    pub version: Option<String>,
    /// ... with this label KEY=VALUE (`instance.labels.KEY`; repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

/// Runs `eval`.
pub async fn run(cli: &Cli, args: &EvalArgs) -> anyhow::Result<()> {
    let mut attributes: Map<String, Value> = match serde_json::from_str(&args.context) {
        Ok(Value::Object(m)) => m,
        Ok(_) => anyhow::bail!("--context must be a JSON object"),
        Err(e) => anyhow::bail!("--context is not JSON: {e}"),
    };
    let targeting_key = match attributes.remove("targetingKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k),
        Some(other) => anyhow::bail!("targetingKey must be a string, not {other}"),
    };
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label {l:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let instance =
        (args.service.is_some() || args.version.is_some() || !labels.is_empty()).then(|| InstanceFacts {
            service: args.service.clone().unwrap_or_default(),
            version: args.version.clone().unwrap_or_default(),
            labels,
        });
    let toggle = cli
        .client()?
        .get_toggle(&args.name, false)
        .await?
        .toggle
        .with_context(|| format!("{} has no toggle", args.name))?;
    let flag = Flag::compile(
        &toggle.feature,
        toggle.revision,
        toggle.effective_at_ms,
        &toggle.definition_json,
    )?;
    let ctx = Context {
        targeting_key,
        attributes,
        instance: None,
    };
    let e = flag.evaluate_in(&ctx, instance.as_ref());
    let value = json!({
        "feature": args.name,
        "revision": e.revision,
        "value": e.value,
        "variant": e.variant.as_deref(),
        "reason": e.reason.as_str(),
        "error": e.error.map(|c| c.as_str()),
    });
    emit(cli.output, value, || {
        let mut line = format!(
            "{} = {} (variant {}, reason {}",
            args.name,
            e.value
                .as_ref()
                .map_or("<caller's default>".to_string(), Value::to_string),
            e.variant.as_deref().unwrap_or("-"),
            e.reason.as_str()
        );
        if let Some(code) = e.error {
            line.push_str(&format!(", error {}", code.as_str()));
        }
        line.push_str(&format!(", revision {})", e.revision));
        line
    });
    Ok(())
}
