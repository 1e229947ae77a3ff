//! Label values from a bounded set: the first `max` distinct values are
//! kept, later ones fold into `other`, so no input can grow the number of
//! series without limit.

use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashSet;

pub const OTHER: &str = "other";

pub struct BoundedLabels {
    max: usize,
    seen: RwLock<FxHashSet<Arc<str>>>,
}

impl BoundedLabels {
    pub fn new(max: usize) -> Self {
        Self { max, seen: RwLock::new(FxHashSet::default()) }
    }

    /// The label to use for `value`: itself while room remains, else `other`.
    pub fn get(&self, value: &str) -> Arc<str> {
        if let Some(known) = self.seen.read().get(value) {
            return known.clone();
        }
        let mut seen = self.seen.write();
        if let Some(known) = seen.get(value) {
            return known.clone();
        }
        if seen.len() >= self.max || value == OTHER {
            return Arc::from(OTHER);
        }
        let label: Arc<str> = Arc::from(value);
        seen.insert(label.clone());
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_beyond_the_bound_fold_into_other() {
        let labels = BoundedLabels::new(2);
        assert_eq!(&*labels.get("rs"), "rs");
        assert_eq!(&*labels.get("py"), "py");
        assert_eq!(&*labels.get("go"), "other");
        assert_eq!(&*labels.get("rs"), "rs");
    }
}
