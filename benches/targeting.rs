//! Targeting cost: a flag with a `fractional` rule and one with three conditions, evaluated by
//! our SDK's flag (rule compiled once per change) beside `flagd-evaluation-engine`, the engine
//! the `open-feature-flagd` crate's in-process resolver evaluates targeting with, on the same
//! flags and contexts. Also counts heap allocations per evaluation.
//!
//!   cargo bench --bench targeting

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use open_feature::EvaluationContext;
use switchyard::eval::{Context, Flag};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

const FRACTIONAL: &str =
    r#"{"fractional":[{"cat":[{"var":"$flagd.flagKey"},{"var":"targetingKey"}]},["a",50],["b",50]]}"#;
const THREE_CONDITIONS: &str = r#"{"if":[{"and":[{"==":[{"var":"plan"},"gold"]},{"in":[{"var":"region"},["eu-1","eu-2"]]},{"sem_ver":[{"var":"app"},">=","2.1.0"]}]},"a","b"]}"#;

fn allocations_per_call(mut f: impl FnMut()) -> f64 {
    let n = 10_000;
    let before = counting_alloc::allocations();
    for _ in 0..n {
        f();
    }
    (counting_alloc::allocations() - before) as f64 / n as f64
}

fn targeting(c: &mut Criterion) {
    let ours_ctx = Context::new()
        .with_targeting_key("customer-42")
        .with("plan", "gold")
        .with("region", "eu-2")
        .with("app", "2.3.1");
    let theirs_ctx = EvaluationContext::default()
        .with_targeting_key("customer-42")
        .with_custom_field("plan", "gold")
        .with_custom_field("region", "eu-2")
        .with_custom_field("app", "2.3.1");
    let engine = flagd_evaluation_engine::targeting::Operator::new();
    for (name, rule) in [("fractional", FRACTIONAL), ("three conditions", THREE_CONDITIONS)] {
        let def = format!(
            r#"{{"state":"ENABLED","variants":{{"a":true,"b":false}},"defaultVariant":"b","targeting":{rule}}}"#
        );
        let flag = Flag::compile("bench-flag", 1, 0, &def).expect("the flag compiles");
        // Both must agree before they are timed.
        let ours = flag.variant(&ours_ctx).map(|v| v.to_string());
        let theirs = engine
            .apply("bench-flag", rule, &theirs_ctx)
            .expect("flagd-evaluation-engine evaluates");
        assert_eq!(ours, theirs, "{name}: the evaluators disagree");
        c.bench_function(&format!("{name}: switchyard"), |b| {
            b.iter(|| flag.variant(black_box(&ours_ctx)))
        });
        c.bench_function(&format!("{name}: flagd-evaluation-engine"), |b| {
            b.iter(|| engine.apply(black_box("bench-flag"), black_box(rule), black_box(&theirs_ctx)))
        });
        let ours_allocs = allocations_per_call(|| {
            black_box(flag.variant(&ours_ctx));
        });
        let theirs_allocs = allocations_per_call(|| {
            let _ = black_box(engine.apply("bench-flag", rule, &theirs_ctx));
        });
        println!("{name}: allocations per evaluation: switchyard {ours_allocs:.1}, flagd-evaluation-engine {theirs_allocs:.1}");
    }
}

criterion_group!(benches, targeting);
criterion_main!(benches);
