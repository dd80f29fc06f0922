//! Values many pods hold alike, kept once while anyone uses them.
//!
//! At 50,000 pods, every proxy presents the same issuer certificate after its leaf and was
//! injected with the same trust-anchor PEM: a copy per pod would be most of the operator's
//! memory. An [`Interner`] hands out one shared [`Arc`] per key and forgets it once nobody
//! holds it any more (it keeps only a [`Weak`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Past this many entries, dead ones are dropped on the next insert.
const PRUNE_ABOVE: usize = 64;

pub(crate) struct Interner<T: ?Sized> {
    table: OnceLock<Mutex<HashMap<Box<str>, Weak<T>>>>,
}

impl<T: ?Sized> Interner<T> {
    pub(crate) const fn new() -> Self {
        Self {
            table: OnceLock::new(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Weak<T>>> {
        self.table
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The value kept under `key`, while somebody still holds it.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<T>> {
        self.table().get(key)?.upgrade()
    }

    /// Keeps `value` under `key` for the next [`Interner::get`].
    pub(crate) fn keep(&self, key: &str, value: &Arc<T>) {
        let mut table = self.table();
        if table.len() >= PRUNE_ABOVE {
            table.retain(|_, w| w.strong_count() > 0);
        }
        table.insert(key.into(), Arc::downgrade(value));
    }

    /// The value kept under `key`, or `make()`'s, kept from now on.
    pub(crate) fn share(&self, key: &str, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(v) = self.get(key) {
            return v;
        }
        let v = make();
        self.keep(key, &v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_one_value_while_it_is_held() {
        let interner: Interner<str> = Interner::new();
        let a = interner.share("pem", || Arc::from("pem"));
        let b = interner.share("pem", || Arc::from("pem"));
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert!(
            interner.get("pem").is_none(),
            "forgotten once nobody holds it"
        );
    }

    #[test]
    fn dead_entries_are_pruned_so_the_table_stays_small() {
        let interner: Interner<str> = Interner::new();
        for i in 0..1000 {
            let key = i.to_string();
            drop(interner.share(&key, || Arc::from(key.as_str())));
        }
        assert!(interner.table().len() <= PRUNE_ABOVE + 1);
    }
}
