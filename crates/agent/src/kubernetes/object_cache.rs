//! The objects one kube-rs watcher has seen, keyed by namespace and name.
//!
//! kube's `watcher` re-lists after every restart (`Init`, `InitApply`…, `InitDone`): the
//! cache buffers the listed objects and swaps them in at `InitDone`, so an object deleted
//! while the watch was down disappears, and readers never see a half-listed set.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;

/// `(namespace, name)`.
pub type ObjectKey = (String, String);

/// The current objects of one watch.
#[derive(Debug, Default)]
pub struct ObjectCache {
    objects: BTreeMap<ObjectKey, DynamicObject>,
    /// Objects of a re-list in progress.
    listing: Option<BTreeMap<ObjectKey, DynamicObject>>,
    /// A complete list has been applied at least once.
    synced: bool,
}

impl ObjectCache {
    /// Applies one watcher event. Returns true if the visible objects may have changed.
    pub fn apply(&mut self, event: Event<DynamicObject>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                if let Some(listing) = &mut self.listing {
                    listing.insert(key(&object), object);
                }
                false
            }
            Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.objects = listing;
                }
                self.synced = true;
                true
            }
            Event::Apply(object) => {
                self.objects.insert(key(&object), object);
                true
            }
            Event::Delete(object) => {
                self.objects.remove(&key(&object));
                true
            }
        }
    }

    /// True once a complete list has been seen.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&DynamicObject> {
        self.objects.get(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &DynamicObject> {
        self.objects.values()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

fn key(object: &DynamicObject) -> ObjectKey {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn object(name: &str) -> DynamicObject {
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                ..ObjectMeta::default()
            },
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_relist_replaces_the_objects_only_when_it_is_complete() {
        let mut cache = ObjectCache::default();
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(object("a")));
        assert!(!cache.is_synced());
        assert!(cache.apply(Event::InitDone));
        assert!(cache.get("ns", "a").is_some());
        cache.apply(Event::Apply(object("b")));
        // Restarted: "a" was deleted while the watch was down.
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(object("b")));
        assert!(
            cache.get("ns", "a").is_some(),
            "the old set stays until InitDone"
        );
        cache.apply(Event::InitDone);
        assert!(cache.get("ns", "a").is_none());
        assert_eq!(cache.len(), 1);
        cache.apply(Event::Delete(object("b")));
        assert!(cache.is_empty());
    }
}
