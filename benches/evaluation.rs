//! Local evaluation cost in the SDK's read path: `is_enabled` on a flag without targeting,
//! through the same lock-free flag set the SDK swaps on each change. Also counts heap
//! allocations per evaluation with a counting global allocator (target: none).
//!
//!   cargo bench --bench evaluation

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::eval::{Context, Flag, FlagSet};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

fn flags(n: usize) -> ArcSwap<FlagSet> {
    let mut set = FlagSet::default();
    for i in 0..n {
        let json = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
        set = set.with(Arc::new(
            Flag::compile(&format!("feature-{i}"), 1, 0, json).unwrap(),
        ));
    }
    ArcSwap::from_pointee(set)
}

fn is_enabled(set: &ArcSwap<FlagSet>, key: &str, ctx: &Context) -> bool {
    match set.load().get(key) {
        Some(f) => f.bool_value(ctx, false),
        None => false,
    }
}

fn evaluation(c: &mut Criterion) {
    let ctx = Context::new().with_targeting_key("customer-42");
    for n in [1usize, 100, 10_000] {
        let set = flags(n);
        let key = format!("feature-{}", n / 2);
        c.bench_function(&format!("is_enabled, no targeting, {n} flags"), |b| {
            b.iter(|| is_enabled(black_box(&set), black_box(&key), black_box(&ctx)))
        });
        let before = counting_alloc::allocations();
        for _ in 0..100_000 {
            black_box(is_enabled(&set, &key, &ctx));
        }
        let per = (counting_alloc::allocations() - before) as f64 / 100_000.0;
        println!("allocations per is_enabled ({n} flags): {per}");
        assert_eq!(per, 0.0, "the read path allocates");
    }
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
