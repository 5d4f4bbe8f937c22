//! The flags in effect, by feature: an immutable [`FlagSet`] that the SDK swaps atomically when
//! a change takes effect, so readers never take a lock. A change staged ahead of its
//! `effective_at` sits in the set beside the flag in effect, tied to a [`Flip`], and takes
//! effect the moment the flip fires, in every set tied to it at once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::eval::flag::Flag;
use crate::eval::flip::Flip;

/// One feature's flag in a [`FlagSet`]: the one in effect, and possibly a change waiting for
/// a flip, which takes effect the moment the flip fires.
#[derive(Debug, Clone, Default)]
struct Entry {
    current: Option<Arc<Flag>>,
    scheduled: Option<(Arc<Flip>, Arc<Flag>)>,
}

impl Entry {
    #[inline]
    fn effective(&self) -> Option<&Arc<Flag>> {
        match &self.scheduled {
            Some((flip, next)) if flip.has_fired() => Some(next),
            _ => self.current.as_ref(),
        }
    }
}

/// One feature's flags in a [`FlagSet`], as [`FlagSet::entries`] gives them.
#[derive(Debug, Clone, Copy)]
pub struct FeatureFlags<'a> {
    /// The feature.
    pub key: &'a str,
    /// The flag in effect now.
    pub in_effect: Option<&'a Arc<Flag>>,
    /// A change waiting for its flip, which has not fired yet.
    pub waiting: Option<(&'a Arc<Flag>, &'a Arc<Flip>)>,
}

/// The flags in effect, by feature. Immutable: a change builds a new set. A change staged for an
/// flip ([`FlagSet::with_scheduled`]) is part of the set ahead of time and takes effect when
/// the flip fires, without the set being replaced.
#[derive(Debug, Clone, Default)]
pub struct FlagSet {
    flags: HashMap<String, Entry>,
}

impl FlagSet {
    /// A flag, as in effect now.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Arc<Flag>> {
        self.flags.get(key)?.effective()
    }

    /// A copy with `flag` in effect (and no change waiting for it).
    pub fn with(&self, flag: Arc<Flag>) -> FlagSet {
        let mut flags = self.flags.clone();
        flags.insert(
            flag.key.clone(),
            Entry {
                current: Some(flag),
                scheduled: None,
            },
        );
        FlagSet { flags }
    }

    /// A copy in which `flag` takes effect when `flip` fires (replacing any change already
    /// waiting for that feature).
    pub fn with_scheduled(&self, flag: Arc<Flag>, flip: Arc<Flip>) -> FlagSet {
        let mut flags = self.flags.clone();
        let entry = flags.entry(flag.key.clone()).or_default();
        // A change whose flip already fired is in effect: keep it as the current one.
        if let Some((fired, next)) = entry.scheduled.take() {
            if fired.has_fired() {
                entry.current = Some(next);
            }
        }
        entry.scheduled = Some((flip, flag));
        FlagSet { flags }
    }

    /// The change waiting for `key`'s flip, if any: (revision, flip).
    pub fn scheduled(&self, key: &str) -> Option<(u64, &Arc<Flip>)> {
        self.flags
            .get(key)?
            .scheduled
            .as_ref()
            .map(|(i, f)| (f.revision, i))
    }

    /// A copy without `key`.
    pub fn without(&self, key: &str) -> FlagSet {
        let mut flags = self.flags.clone();
        flags.remove(key);
        FlagSet { flags }
    }

    /// Every feature with its flag in effect now (if any) and the change waiting for a flip
    /// that has not fired yet (if any), for serving the flags onward.
    pub fn entries(&self) -> impl Iterator<Item = FeatureFlags<'_>> {
        self.flags.iter().map(|(key, e)| FeatureFlags {
            key,
            in_effect: e.effective(),
            waiting: e
                .scheduled
                .as_ref()
                .filter(|(flip, _)| !flip.has_fired())
                .map(|(flip, flag)| (flag, flip)),
        })
    }

    /// Every flag in effect.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Flag>> {
        self.flags.values().filter_map(Entry::effective)
    }

    /// How many flags are in effect.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Context;

    fn flag(json: &str) -> Flag {
        Flag::compile("f", 3, 0, json).unwrap()
    }

    #[test]
    fn sets_are_copied_on_change() {
        let a = FlagSet::default().with(Arc::new(flag(
            r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}"#,
        )));
        let b = a.without("f");
        assert_eq!(a.len(), 1);
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn a_scheduled_change_takes_effect_when_its_flip_fires() {
        let on = Arc::new(flag(
            r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#,
        ));
        let off = Arc::new(
            Flag::compile(
                "f",
                4,
                0,
                r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}"#,
            )
            .unwrap(),
        );
        let flip = Arc::new(Flip::at(crate::clock::now_us() + 20_000));
        let firing = flip.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            firing.fire();
        });
        let set = FlagSet::default().with(on).with_scheduled(off, flip.clone());
        let ctx = Context::new();
        assert!(
            set.get("f").unwrap().bool_value(&ctx, false),
            "not before the flip"
        );
        assert_eq!(set.scheduled("f").map(|(r, _)| r), Some(4));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !flip.has_fired() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        assert!(
            !set.get("f").unwrap().bool_value(&ctx, true),
            "the same set, flipped"
        );
        assert_eq!(set.get("f").unwrap().revision, 4);
    }
}
