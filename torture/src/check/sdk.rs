//! What SDK instances put into effect: never before `effective_at`, and each feature's changes
//! in revision order (an instance never goes back to an older definition).

use std::collections::BTreeMap;

use switchyard::sdk::FlagChange;

use super::Anomaly;

/// How early a change may take effect, for clock-offset estimation error (all processes of a
/// run share one clock, so the SDK's estimate should be near zero).
pub const EARLY_TOLERANCE_US: i64 = 50_000;

pub fn check(changes: &[(String, FlagChange)]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut last: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (who, c) in changes {
        if !c.removed && c.late_ms == 0 && c.applied_at_us < c.effective_at_ms * 1000 - EARLY_TOLERANCE_US {
            out.push(Anomaly::new(
                "sdk-early",
                format!(
                    "{who}: {} revision {} took effect {} ms before its effective_at",
                    c.feature,
                    c.revision,
                    (c.effective_at_ms * 1000 - c.applied_at_us) / 1000
                ),
            ));
        }
        if let Some(prev) = last.insert((who.as_str(), c.feature.as_str()), c.revision) {
            if prev >= c.revision {
                out.push(Anomaly::new(
                    "sdk-order",
                    format!("{who}: {} went from revision {prev} to {}", c.feature, c.revision),
                ));
            }
        }
        if out.len() >= 10 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64, effective_at_ms: i64, applied_at_us: i64) -> (String, FlagChange) {
        (
            "i1".into(),
            FlagChange {
                feature: "f".into(),
                revision,
                effective_at_ms,
                received_at_us: 0,
                applied_at_us,
                late_ms: 0,
                removed: false,
            },
        )
    }

    #[test]
    fn on_time_and_in_order_passes() {
        assert!(check(&[change(1, 1000, 1_000_100), change(2, 2000, 2_000_000)]).is_empty());
    }

    #[test]
    fn early_is_caught() {
        let a = check(&[change(1, 1000, 900_000)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].checker, "sdk-early");
    }

    #[test]
    fn going_back_is_caught() {
        let a = check(&[change(2, 1000, 1_000_000), change(1, 1000, 1_000_000)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].checker, "sdk-order");
    }
}
