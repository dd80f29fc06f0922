//! The simulator's object store: every object as JSON, one global resourceVersion counter,
//! a bounded event history for watch resume, and mutating admission hooks on create.
//!
//! This is the contract between the HTTP API server (`api/`) and the simulated cluster
//! components (`mesh/`): both read and write objects only through [`Store`]. Controllers
//! use the same semantics a client gets over HTTP (resourceVersion, generation, status
//! subresource), but skip serialization.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

/// How many events the store keeps for watches that resume from an older resourceVersion.
/// Older versions answer `410 Gone` (clients relist). Each entry may pin an old version of an
/// object, so this bounds memory under churn (10,000 pods restarting, each a few events).
pub const DEFAULT_HISTORY: usize = 25_000;

/// How many list snapshots (the consistent views that the continuation pages of paginated
/// lists are served from) are kept at once. A continue token whose snapshot was dropped, to
/// stay within this bound or because the history was compacted past it, answers
/// `410 Expired`, as a real server does once etcd has compacted the list's revision.
pub const MAX_LIST_SNAPSHOTS: usize = 16;

/// A resource type: `(group, plural)` identifies it; `version`, `kind` and scope describe it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// API group, "" for core.
    pub group: String,
    /// Plural resource name, e.g. "pods".
    pub plural: String,
}

impl ResourceKey {
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }
}

/// Description of a served resource type.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub key: ResourceKey,
    /// Served version (one per type in this simulator).
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Whether a `status` subresource exists (status writes go only through it).
    pub status_subresource: bool,
    pub categories: Vec<String>,
    /// Printer columns from a CRD (`additionalPrinterColumns`), if any.
    pub printer_columns: Vec<Value>,
    pub verbs: Vec<String>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.key.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.key.group, self.version)
        }
    }
}

/// A store error, mapped to a Kubernetes `Status` by the API layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("Operation cannot be fulfilled on {plural} {name:?}: the object has been modified; please apply your changes to the latest version and try again")]
    Conflict { plural: String, name: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the server could not find the requested resource")]
    UnknownResource,
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("{0}")]
    Forbidden(String),
}

/// A watch event as the API serves it.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    /// "ADDED", "MODIFIED" or "DELETED".
    pub kind: &'static str,
    pub key: ResourceKey,
    pub namespace: Option<String>,
    pub resource_version: u64,
    pub object: Arc<Value>,
    /// The object before this change (MODIFIED only), so selector-filtered watches can
    /// tell an object that stopped matching (DELETED for them) from one that started.
    pub previous: Option<Arc<Value>>,
    /// The event as one line of a watch response, encoded once and shared by every watcher.
    pub(crate) wire: Arc<OnceLock<bytes::Bytes>>,
}

impl WatchEvent {
    /// `{"type":..,"object":..}\n`, serialized on first use and shared by all watchers.
    pub fn wire_json(&self) -> bytes::Bytes {
        self.wire
            .get_or_init(|| {
                let mut buf = Vec::with_capacity(1024);
                buf.extend_from_slice(b"{\"type\":\"");
                buf.extend_from_slice(self.kind.as_bytes());
                buf.extend_from_slice(b"\",\"object\":");
                // Serializing a `Value` into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut buf, &*self.object);
                buf.extend_from_slice(b"}\n");
                bytes::Bytes::from(buf)
            })
            .clone()
    }
}

/// Mutating admission on create (the proxy injector is one). Called with the store unlocked
/// is not guaranteed: a hook must not call back into the store's write methods.
pub trait AdmissionHook: Send + Sync {
    fn on_create(
        &self,
        store: &Store,
        key: &ResourceKey,
        obj: &mut Value,
    ) -> Result<(), StoreError>;
}

type ObjKey = (Option<String>, String);

/// A page of objects from [`Store::list_page`].
#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    /// The store's resourceVersion when the page was read.
    pub resource_version: u64,
    /// Where the next page starts (exclusive), when there is one.
    pub next_after: Option<(Option<String>, String)>,
    /// How many matching objects follow this page (only when asked).
    pub remaining: Option<usize>,
}

/// Where a chunk of a paginated list starts ([`Store::list_chunk`]).
#[derive(Debug, Clone, Copy)]
pub enum ListFrom<'a> {
    /// A new list: the first page, read from the current state.
    Start,
    /// A continuation page: after `after`, in the snapshot taken at resourceVersion
    /// `snapshot` when the first page was read.
    Snapshot {
        snapshot: u64,
        after: &'a (Option<String>, String),
    },
    /// After `after`, in the current state: what a continue token whose snapshot has
    /// expired offers (objects changed since the first page may show up, or not).
    Latest { after: &'a (Option<String>, String) },
}

/// The CustomResourceDefinition type's key: creating one of these serves a new kind.
pub fn crd_key() -> ResourceKey {
    ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions")
}

/// The type a CustomResourceDefinition serves (its storage version, or its first served
/// version), or why the definition is not acceptable.
pub fn crd_resource_type(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let group = spec["group"]
        .as_str()
        .filter(|g| !g.is_empty())
        .ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"]
        .as_str()
        .filter(|k| !k.is_empty())
        .ok_or("spec.names.kind: Required value")?;
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        return Err(format!(
            "metadata.name: Invalid value: {:?}: must be spec.names.plural+\".\"+spec.group",
            crd["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
            "spec.scope: Unsupported value: {:?}: supported values: \"Cluster\", \"Namespaced\"",
            other.unwrap_or("")
        ))
        }
    };
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    let version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .or_else(|| {
            versions
                .iter()
                .find(|v| v["served"].as_bool() != Some(false))
        })
        .ok_or(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        )?;
    let vname = version["name"]
        .as_str()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions[0].name: Required value")?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ResourceType {
        key: ResourceKey::new(group, plural),
        version: vname.to_string(),
        kind: kind.to_string(),
        list_kind: names["listKind"]
            .as_str()
            .map_or_else(|| format!("{kind}List"), str::to_string),
        singular: names["singular"]
            .as_str()
            .map_or_else(|| kind.to_lowercase(), str::to_string),
        namespaced,
        short_names: strings(&names["shortNames"]),
        status_subresource: version["subresources"]["status"].is_object(),
        categories: strings(&names["categories"]),
        printer_columns: version["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        verbs: [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    })
}

#[derive(Default)]
struct Inner {
    types: BTreeMap<ResourceKey, ResourceType>,
    objects: HashMap<ResourceKey, BTreeMap<ObjKey, Arc<Value>>>,
    /// Per type, the objects whose controller (`ownerReferences` entry with
    /// `controller: true`) has a given uid: what controllers look up instead of scanning
    /// every object of the type. Kept in step with `objects` by [`Inner::put`] and
    /// [`Inner::take`].
    /// The index holds the objects themselves (shared), so reading a controller's objects
    /// costs no lookups in `objects`.
    owned: HashMap<ResourceKey, HashMap<String, BTreeMap<ObjKey, Arc<Value>>>>,
    rv: u64,
    history: VecDeque<WatchEvent>,
    history_limit: usize,
    /// The newest resourceVersion whose event is no longer in the history.
    compacted: u64,
    uid_counter: u64,
    /// Snapshots that continuation pages are served from, oldest first (at most
    /// [`MAX_LIST_SNAPSHOTS`]).
    snapshots: VecDeque<ListSnapshot>,
}

/// Every object of one type as it was at one resourceVersion, in (namespace, name) order.
/// The objects are shared with the store (and with other snapshots): a snapshot costs one
/// pointer per object, plus the old versions of objects changed since it was taken.
struct ListSnapshot {
    key: ResourceKey,
    rv: u64,
    items: Arc<Vec<Arc<Value>>>,
}

/// An object's place in list order, read from the object itself.
fn order_key(v: &Value) -> (Option<&str>, &str) {
    let m = &v["metadata"];
    (m["namespace"].as_str(), m["name"].as_str().unwrap_or(""))
}

fn owned_key(v: &Value) -> ObjKey {
    let (ns, name) = order_key(v);
    (ns.map(str::to_string), name.to_string())
}

/// One page from `iter` (objects in list order, already restricted to the requested
/// namespace): up to `limit` objects that pass `filter`, where the next page starts, and
/// how many matching objects follow (when `count_remaining`).
fn page_of<'a>(
    mut iter: impl Iterator<Item = &'a Arc<Value>>,
    limit: Option<usize>,
    count_remaining: bool,
    filter: &dyn Fn(&Value) -> bool,
) -> (Vec<Arc<Value>>, Option<ObjKey>, Option<usize>) {
    let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut next = None;
    for v in iter.by_ref() {
        if !filter(v) {
            continue;
        }
        items.push(v.clone());
        if items.len() >= limit {
            next = Some(owned_key(v));
            break;
        }
    }
    let mut remaining = None;
    if next.is_some() {
        let rest = iter.filter(|v| filter(v)).count();
        if rest == 0 {
            next = None;
        } else if count_remaining {
            remaining = Some(rest);
        }
    }
    (items, next, remaining)
}

/// The uid of an object's controller (its `ownerReferences` entry with `controller: true`).
pub fn controller_uid(v: &Value) -> Option<&str> {
    v["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .and_then(|r| r["uid"].as_str())
}

impl Inner {
    /// Stores `obj` under `k` (the type's map must exist unless `create`), keeping the
    /// owner index in step.
    fn put(&mut self, key: &ResourceKey, k: ObjKey, obj: Arc<Value>, create: bool) {
        let objs = if create {
            self.objects.entry(key.clone()).or_default()
        } else {
            match self.objects.get_mut(key) {
                Some(m) => m,
                None => return,
            }
        };
        let old = objs.insert(k.clone(), obj.clone());
        let old_owner = old.as_deref().and_then(controller_uid);
        let new_owner = controller_uid(&obj);
        if let Some(o) = old_owner.filter(|o| Some(*o) != new_owner) {
            self.unindex(key, o, &k);
        }
        if let Some(n) = new_owner {
            self.owned
                .entry(key.clone())
                .or_default()
                .entry(n.to_string())
                .or_default()
                .insert(k, obj.clone());
        }
    }

    /// Removes the object under `k`, keeping the owner index in step.
    fn take(&mut self, key: &ResourceKey, k: &ObjKey) -> Option<Arc<Value>> {
        let old = self.objects.get_mut(key)?.remove(k)?;
        if let Some(o) = controller_uid(&old) {
            self.unindex(key, o, k);
        }
        Some(old)
    }

    fn unindex(&mut self, key: &ResourceKey, owner: &str, k: &ObjKey) {
        if let Some(by_owner) = self.owned.get_mut(key) {
            if let Some(set) = by_owner.get_mut(owner) {
                set.remove(k);
                if set.is_empty() {
                    by_owner.remove(owner);
                }
            }
        }
    }

    /// Forgets every object of a type (its type went away).
    fn drop_type(&mut self, key: &ResourceKey) {
        self.objects.remove(key);
        self.owned.remove(key);
    }

    /// Drops the snapshots that compaction has overtaken.
    fn expire_snapshots(&mut self) {
        let compacted = self.compacted;
        self.snapshots.retain(|s| s.rv >= compacted);
    }

    /// The snapshot of type `key` at the current resourceVersion, taken now unless one
    /// already exists (lists that page at the same version share it).
    fn snapshot_now(&mut self, key: &ResourceKey) {
        let rv = self.rv;
        if self.snapshots.iter().any(|s| s.rv == rv && s.key == *key) {
            return;
        }
        let items: Vec<Arc<Value>> = self
            .objects
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        self.snapshots.push_back(ListSnapshot {
            key: key.clone(),
            rv,
            items: Arc::new(items),
        });
        while self.snapshots.len() > MAX_LIST_SNAPSHOTS {
            self.snapshots.pop_front();
        }
    }
}

impl Inner {
    /// The type, the object's key and the current object, or the error a client gets.
    fn locate(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(ResourceType, ObjKey, Arc<Value>), StoreError> {
        let t = self
            .types
            .get(key)
            .cloned()
            .ok_or(StoreError::UnknownResource)?;
        let k = (
            ns.map(str::to_string).filter(|_| t.namespaced),
            name.to_string(),
        );
        let current = self
            .objects
            .get(key)
            .and_then(|m| m.get(&k))
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: t.plural_or_kind(),
                name: name.to_string(),
            })?;
        Ok((t, k, current))
    }
}

/// The object store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<WatchEvent>,
    hooks: Arc<Mutex<Vec<Arc<dyn AdmissionHook>>>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(obj: &Value) -> (Option<String>, Option<String>) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().map(str::to_string),
        m["name"].as_str().map(str::to_string),
    )
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(65_536);
        let inner = Inner {
            history_limit: DEFAULT_HISTORY,
            rv: 1,
            ..Default::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            events,
            hooks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // === types ===

    pub fn register_type(&self, t: ResourceType) {
        let mut inner = self.lock();
        inner.objects.entry(t.key.clone()).or_default();
        inner.types.insert(t.key.clone(), t);
    }

    pub fn unregister_type(&self, key: &ResourceKey) {
        let mut inner = self.lock();
        inner.types.remove(key);
        inner.drop_type(key);
        inner.snapshots.retain(|s| s.key != *key);
    }

    pub fn resource_type(&self, key: &ResourceKey) -> Option<ResourceType> {
        self.lock().types.get(key).cloned()
    }

    pub fn resource_types(&self) -> Vec<ResourceType> {
        self.lock().types.values().cloned().collect()
    }

    /// Finds a type by group and kind (e.g. for `kubectl apply`, which knows the kind).
    pub fn type_for_kind(&self, group: &str, kind: &str) -> Option<ResourceType> {
        self.lock()
            .types
            .values()
            .find(|t| t.key.group == group && t.kind == kind)
            .cloned()
    }

    pub fn add_admission_hook(&self, hook: Arc<dyn AdmissionHook>) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    // === reads ===

    pub fn get(&self, key: &ResourceKey, ns: Option<&str>, name: &str) -> Option<Arc<Value>> {
        let inner = self.lock();
        inner
            .objects
            .get(key)?
            .get(&(ns.map(str::to_string), name.to_string()))
            .cloned()
    }

    /// All objects of a type (in one namespace, or all when `ns` is None), sorted by
    /// namespace and name, with the store's resourceVersion at the time of the list.
    pub fn list(&self, key: &ResourceKey, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        use std::ops::Bound;
        let inner = self.lock();
        let items = match (inner.objects.get(key), ns) {
            (Some(objs), None) => objs.values().cloned().collect(),
            // One namespace is one contiguous range of the (namespace, name) order.
            (Some(objs), Some(ns)) => objs
                .range((
                    Bound::Included((Some(ns.to_string()), String::new())),
                    Bound::Unbounded,
                ))
                .take_while(|((ons, _), _)| ons.as_deref() == Some(ns))
                .map(|(_, v)| v.clone())
                .collect(),
            (None, _) => Vec::new(),
        };
        (items, inner.rv)
    }

    /// The objects of a type whose controller (`ownerReferences` with `controller: true`)
    /// has uid `owner`, in (namespace, name) order: what a controller reads instead of
    /// listing every object of the type.
    pub fn list_owned(&self, key: &ResourceKey, owner: &str) -> Vec<Arc<Value>> {
        let inner = self.lock();
        inner
            .owned
            .get(key)
            .and_then(|m| m.get(owner))
            .map(|objs| objs.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One page of a list: objects of a type (in `ns`, or all namespaces), in (namespace, name)
    /// order, starting after `after`, that pass `filter`, at most `limit` of them. The page
    /// says where the next one starts and, when `count_remaining`, how many objects follow.
    /// Runs in one pass under the lock, so a page is a consistent snapshot.
    pub fn list_page(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        after: Option<&(Option<String>, String)>,
        limit: Option<usize>,
        count_remaining: bool,
        filter: &dyn Fn(&Value) -> bool,
    ) -> ListPage {
        use std::ops::Bound;
        let inner = self.lock();
        let mut page = ListPage {
            items: Vec::new(),
            resource_version: inner.rv,
            next_after: None,
            remaining: None,
        };
        let Some(objs) = inner.objects.get(key) else {
            return page;
        };
        let lower: Bound<ObjKey> = match (after, ns) {
            (Some(a), _) => Bound::Excluded(a.clone()),
            (None, Some(ns)) => Bound::Included((Some(ns.to_string()), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut iter = objs
            .range((lower, Bound::Unbounded))
            .take_while(|((ons, _), _)| ns.is_none() || ons.as_deref() == ns);
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        for (k, v) in iter.by_ref() {
            if !filter(v) {
                continue;
            }
            page.items.push(v.clone());
            if page.items.len() >= limit {
                page.next_after = Some(k.clone());
                break;
            }
        }
        if page.next_after.is_some() {
            let rest = iter.filter(|(_, v)| filter(v)).count();
            if rest == 0 {
                page.next_after = None;
            } else if count_remaining {
                page.remaining = Some(rest);
            }
        }
        page
    }

    /// One chunk of a paginated list, as a real API server serves it: the first page comes
    /// from the current state, and when more follow, a snapshot of the type is kept so that
    /// every continuation page is read at the first page's resourceVersion (an object deleted
    /// or created in between is neither lost nor duplicated). Objects are in (namespace,
    /// name) order, restricted to `ns` (all namespaces when None), filtered by `filter`, at
    /// most `limit` of them (all when None or 0).
    ///
    /// A continuation whose snapshot has been compacted away (or dropped to keep at most
    /// [`MAX_LIST_SNAPSHOTS`]) is [`StoreError::Gone`].
    pub fn list_chunk(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        from: ListFrom<'_>,
        limit: Option<usize>,
        count_remaining: bool,
        filter: &dyn Fn(&Value) -> bool,
    ) -> Result<ListPage, StoreError> {
        use std::ops::Bound;
        let mut inner = self.lock();
        let in_ns = |v: &&Arc<Value>| ns.is_none() || order_key(v).0 == ns;
        let (items, next, remaining, rv) = match from {
            ListFrom::Snapshot { snapshot, after } => {
                let oldest = inner
                    .history
                    .front()
                    .map_or(inner.rv, |e| e.resource_version);
                let gone = StoreError::Gone {
                    requested: snapshot,
                    oldest,
                };
                if snapshot < inner.compacted {
                    return Err(gone);
                }
                let Some(snap) = inner
                    .snapshots
                    .iter()
                    .find(|s| s.rv == snapshot && s.key == *key)
                else {
                    return Err(gone);
                };
                let items = snap.items.clone();
                drop(inner);
                let after = (after.0.as_deref(), after.1.as_str());
                let start = items.partition_point(|v| order_key(v) <= after);
                let (page, next, remaining) = page_of(
                    items[start..].iter().take_while(in_ns),
                    limit,
                    count_remaining,
                    filter,
                );
                return Ok(ListPage {
                    items: page,
                    resource_version: snapshot,
                    next_after: next,
                    remaining,
                });
            }
            ListFrom::Start | ListFrom::Latest { .. } => {
                let rv = inner.rv;
                let Some(objs) = inner.objects.get(key) else {
                    return Ok(ListPage {
                        resource_version: rv,
                        ..Default::default()
                    });
                };
                let lower: Bound<ObjKey> = match (from, ns) {
                    (ListFrom::Latest { after }, _) => Bound::Excluded(after.clone()),
                    (_, Some(ns)) => Bound::Included((Some(ns.to_string()), String::new())),
                    (_, None) => Bound::Unbounded,
                };
                let (page, next, remaining) = page_of(
                    objs.range((lower, Bound::Unbounded))
                        .map(|(_, v)| v)
                        .take_while(in_ns),
                    limit,
                    count_remaining,
                    filter,
                );
                (page, next, remaining, rv)
            }
        };
        if next.is_some() {
            inner.snapshot_now(key);
        }
        Ok(ListPage {
            items,
            resource_version: rv,
            next_after: next,
            remaining,
        })
    }

    /// How many list snapshots are held (see [`MAX_LIST_SNAPSHOTS`]).
    pub fn list_snapshots(&self) -> usize {
        self.lock().snapshots.len()
    }

    pub fn count(&self, key: &ResourceKey) -> usize {
        self.lock().objects.get(key).map_or(0, |m| m.len())
    }

    // === writes ===

    /// Creates an object: fills uid, creationTimestamp, resourceVersion, generation (1),
    /// resolves `generateName`, runs admission hooks.
    pub fn create(&self, key: &ResourceKey, mut obj: Value) -> Result<Arc<Value>, StoreError> {
        let hooks: Vec<_> = self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for h in &hooks {
            h.on_create(self, key, &mut obj)?;
        }
        let mut inner = self.lock();
        let t = inner
            .types
            .get(key)
            .cloned()
            .ok_or(StoreError::UnknownResource)?;
        if !obj.is_object() {
            return Err(StoreError::Invalid(format!(
                "{} is invalid: the object must be a JSON object",
                t.kind
            )));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if obj["metadata"]["name"].as_str().unwrap_or("").is_empty() {
            if let Some(prefix) = obj["metadata"]["generateName"].as_str().map(str::to_string) {
                inner.uid_counter += 1;
                let suffix = random_suffix(inner.uid_counter);
                obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
            }
        }
        let (ns, name) = meta(&obj);
        let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
            StoreError::Invalid(format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", t.kind))
        })?;
        if t.namespaced && ns.as_deref().is_none_or(str::is_empty) {
            return Err(StoreError::Invalid(format!(
                "{} {name:?} is invalid: metadata.namespace: Required value",
                t.kind
            )));
        }
        let ns = if t.namespaced { ns } else { None };
        let k = (ns.clone(), name.clone());
        if inner
            .objects
            .get(key)
            .is_some_and(|objs| objs.contains_key(&k))
        {
            return Err(StoreError::AlreadyExists {
                kind: t.plural_or_kind(),
                name,
            });
        }
        obj["apiVersion"] = json!(t.api_version());
        obj["kind"] = json!(t.kind);
        let served = if *key == crd_key() {
            let served = crd_resource_type(&obj).map_err(|e| {
                StoreError::Invalid(format!("CustomResourceDefinition {name:?} is invalid: {e}"))
            })?;
            if inner.types.contains_key(&served.key) {
                return Err(StoreError::Invalid(format!(
                    "CustomResourceDefinition {name:?} is invalid: spec.names.plural: Invalid value: {:?}: is already served",
                    served.key.plural
                )));
            }
            obj["status"] = crd_status(&obj);
            Some(served)
        } else {
            None
        };
        inner.uid_counter += 1;
        inner.rv += 1;
        let rv = inner.rv;
        // A uid set by admission (e.g. a Job's defaulted selector names it) is kept; clients
        // cannot set one (the API layer strips it before admission).
        let uid = obj["metadata"]["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map_or_else(|| uuid_like(inner.uid_counter), str::to_string);
        let m_has_spec = obj.get("spec").is_some();
        let m = &mut obj["metadata"];
        m["uid"] = json!(uid);
        m["resourceVersion"] = json!(rv.to_string());
        m["creationTimestamp"] = json!(now_rfc3339());
        // Kinds with a spec or status (Deployments, custom resources) track generation;
        // ConfigMaps, Secrets and the like have none, as on a real server.
        if t.status_subresource || m_has_spec {
            m["generation"] = json!(1);
        }
        if let Some(m) = m.as_object_mut() {
            if !t.namespaced {
                m.remove("namespace");
            }
            m.retain(|_, v| !v.is_null());
        }
        if let Some(served) = served {
            inner.objects.entry(served.key.clone()).or_default();
            inner.types.insert(served.key.clone(), served);
        }
        let obj = Arc::new(obj);
        inner.put(key, k, obj.clone(), true);
        self.record(&mut inner, "ADDED", key, ns, rv, obj.clone(), None);
        Ok(obj)
    }

    /// Atomically reads, changes and writes one object. `f` gets the current object and may
    /// change anything but identity fields; a no-op change keeps the resourceVersion.
    /// `generation` moves when `spec` (or anything outside metadata/status) changed.
    pub fn mutate<F>(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        f: F,
    ) -> Result<Arc<Value>, StoreError>
    where
        F: FnOnce(&mut Value) -> Result<(), StoreError>,
    {
        let mut inner = self.lock();
        let (t, k, current) = inner.locate(key, ns, name)?;
        let mut next = (*current).clone();
        f(&mut next)?;
        if !next.is_object() {
            return Err(StoreError::Invalid(format!(
                "{} {name:?} is invalid: the object must be a JSON object",
                t.kind
            )));
        }
        if !next["metadata"].is_object() {
            next["metadata"] = json!({});
        }
        // Identity is not the caller's to change.
        for field in ["uid", "creationTimestamp", "name", "namespace"] {
            next["metadata"][field] = current["metadata"][field].clone();
        }
        // Once deleting, always deleting.
        if current["metadata"]["deletionTimestamp"].is_string() {
            next["metadata"]["deletionTimestamp"] =
                current["metadata"]["deletionTimestamp"].clone();
        }
        if let Some(m) = next["metadata"].as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        next["apiVersion"] = current["apiVersion"].clone();
        next["kind"] = current["kind"].clone();
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        match current["metadata"].get("generation") {
            Some(g) => next["metadata"]["generation"] = g.clone(),
            None => {
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("generation");
                }
            }
        }
        if next == *current {
            return Ok(current);
        }
        if current["metadata"]["generation"].is_i64() && spec_changed(&current, &next) {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(g + 1);
        }
        // A deleting object whose last finalizer was just removed disappears (a pod in its
        // grace period, deleting with no finalizers, stays until the kubelet deletes it).
        let had_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let finalizers_empty = had_finalizers
            && next["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|a| a.is_empty());
        inner.rv += 1;
        let rv = inner.rv;
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        let next = Arc::new(next);
        let is_crd = *key == crd_key();
        if next["metadata"]["deletionTimestamp"].is_string() && finalizers_empty {
            inner.take(key, &k);
            if is_crd {
                sync_crd(&mut inner, &current, None);
            }
            self.record(
                &mut inner,
                "DELETED",
                key,
                k.0.clone(),
                rv,
                next.clone(),
                None,
            );
        } else {
            inner.put(key, k.clone(), next.clone(), false);
            if is_crd {
                sync_crd(&mut inner, &current, Some(&next));
            }
            self.record(
                &mut inner,
                "MODIFIED",
                key,
                k.0.clone(),
                rv,
                next.clone(),
                Some(current.clone()),
            );
        }
        Ok(next)
    }

    /// Deletes an object. With finalizers it only gets a deletionTimestamp.
    pub fn delete(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let (_, k, current) = inner.locate(key, ns, name)?;
        inner.rv += 1;
        let rv = inner.rv;
        let has_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let mut next = (*current).clone();
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        if has_finalizers {
            if next["metadata"]["deletionTimestamp"].is_null() {
                next["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            }
            let next = Arc::new(next);
            inner.put(key, k.clone(), next.clone(), false);
            self.record(
                &mut inner,
                "MODIFIED",
                key,
                k.0.clone(),
                rv,
                next.clone(),
                Some(current.clone()),
            );
            return Ok(next);
        }
        inner.take(key, &k);
        if *key == crd_key() {
            sync_crd(&mut inner, &current, None);
        }
        let next = Arc::new(next);
        self.record(
            &mut inner,
            "DELETED",
            key,
            k.0.clone(),
            rv,
            next.clone(),
            None,
        );
        Ok(next)
    }

    // === watch ===

    /// Subscribes to events. Events with resourceVersion greater than `since` that are still
    /// in the history are returned first (for resume); a `since` older than the history is
    /// `Gone`. Filtering by type and namespace is the caller's.
    pub fn watch(
        &self,
        since: Option<u64>,
    ) -> Result<(Vec<WatchEvent>, broadcast::Receiver<WatchEvent>), StoreError> {
        let inner = self.lock();
        let rx = self.events.subscribe();
        let mut backlog = Vec::new();
        if let Some(since) = since {
            let oldest = inner
                .history
                .front()
                .map_or(inner.rv, |e| e.resource_version);
            if since < inner.compacted {
                return Err(StoreError::Gone {
                    requested: since,
                    oldest,
                });
            }
            backlog.extend(
                inner
                    .history
                    .iter()
                    .filter(|e| e.resource_version > since)
                    .cloned(),
            );
        }
        Ok((backlog, rx))
    }

    /// Drops history up to and including `rv`, and the list snapshots older than what is
    /// left (tests use it to force `410 Gone` on watches and continue tokens).
    pub fn compact(&self, rv: u64) {
        let mut inner = self.lock();
        while inner
            .history
            .front()
            .is_some_and(|e| e.resource_version <= rv)
        {
            inner.history.pop_front();
        }
        inner.compacted = inner.compacted.max(rv.min(inner.rv));
        inner.expire_snapshots();
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        inner: &mut Inner,
        kind: &'static str,
        key: &ResourceKey,
        ns: Option<String>,
        rv: u64,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let ev = WatchEvent {
            previous,
            kind,
            key: key.clone(),
            namespace: ns,
            resource_version: rv,
            object,
            wire: Arc::default(),
        };
        // The history does not pin previous versions: a resumed selector watch treats a
        // replayed change by whether the object matches now.
        inner.history.push_back(WatchEvent {
            previous: None,
            ..ev.clone()
        });
        if inner.history.len() > inner.history_limit {
            while inner.history.len() > inner.history_limit {
                if let Some(dropped) = inner.history.pop_front() {
                    inner.compacted = inner.compacted.max(dropped.resource_version);
                }
            }
            inner.expire_snapshots();
        }
        let _ = self.events.send(ev);
    }
}

impl ResourceType {
    fn plural_or_kind(&self) -> String {
        if self.key.group.is_empty() {
            self.plural_name()
        } else {
            format!("{}.{}", self.key.plural, self.key.group)
        }
    }
    fn plural_name(&self) -> String {
        self.key.plural.clone()
    }
}

/// The status a real API server gives an accepted CustomResourceDefinition.
fn crd_status(crd: &Value) -> Value {
    let now = now_rfc3339();
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": crd["spec"]["names"].clone(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "storedVersions": stored,
    })
}

/// Keeps the served types in step with the CustomResourceDefinitions: called under the lock
/// whenever a CRD object changes or goes away.
fn sync_crd(inner: &mut Inner, old: &Value, new: Option<&Value>) {
    let Ok(old_t) = crd_resource_type(old) else {
        return;
    };
    match new.map(crd_resource_type) {
        Some(Ok(t)) => {
            if t.key != old_t.key {
                inner.types.remove(&old_t.key);
                inner.drop_type(&old_t.key);
            }
            inner.objects.entry(t.key.clone()).or_default();
            inner.types.insert(t.key.clone(), t);
        }
        Some(Err(_)) => {}
        None => {
            // Deleting a CRD deletes its objects, as a real API server does.
            inner.types.remove(&old_t.key);
            inner.drop_type(&old_t.key);
        }
    }
}

fn spec_changed(a: &Value, b: &Value) -> bool {
    // Compared in place: this runs on every write, and objects can be large.
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a != b;
    };
    let rest = |m: &'_ serde_json::Map<String, Value>| {
        m.iter()
            .filter(|(k, _)| k.as_str() != "metadata" && k.as_str() != "status")
            .count()
    };
    rest(a) != rest(b)
        || a.iter()
            .filter(|(k, _)| k.as_str() != "metadata" && k.as_str() != "status")
            .any(|(k, v)| b.get(k) != Some(v))
}

/// A new object uid (random, in the UUID text form).
pub fn new_uid() -> String {
    uuid_like(rand::random::<u64>() & 0xff_ffff)
}

fn uuid_like(n: u64) -> String {
    let r: u64 = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (r >> 32) as u32,
        (r >> 16) as u16,
        n & 0xfff,
        (n >> 12) & 0xfff,
        (r ^ n) & 0xffff_ffff_ffff
    )
}

fn random_suffix(seed: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x: u64 = rand::random::<u64>() ^ seed;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_pods() -> (Store, ResourceKey) {
        let store = Store::new();
        crate::api::builtin::install(&store).unwrap();
        (store, ResourceKey::new("", "pods"))
    }

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> Value {
        let mut p =
            json!({"metadata": {"name": name, "namespace": ns}, "spec": {"containers": []}});
        if let Some(o) = owner {
            p["metadata"]["ownerReferences"] = json!([
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true},
            ]);
        }
        p
    }

    fn names(v: &[Arc<Value>]) -> Vec<&str> {
        v.iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    /// The owner index follows every way an object comes, changes owner and goes: a stale
    /// entry would hand a controller a pod that is gone, a missing one would hide a pod.
    #[test]
    fn list_owned_follows_creates_owner_changes_and_deletions() {
        let (store, pods) = store_with_pods();
        store.create(&pods, pod("b", "p2", Some("u1"))).unwrap();
        store.create(&pods, pod("a", "p1", Some("u1"))).unwrap();
        store.create(&pods, pod("a", "p3", Some("u2"))).unwrap();
        store.create(&pods, pod("a", "bare", None)).unwrap();
        assert_eq!(names(&store.list_owned(&pods, "u1")), ["p1", "p2"]);
        assert_eq!(names(&store.list_owned(&pods, "u2")), ["p3"]);
        assert!(store.list_owned(&pods, "nobody").is_empty());

        // Adopted by another controller, orphaned, adopted again.
        store
            .mutate(&pods, Some("a"), "p1", |p| {
                p["metadata"]["ownerReferences"][0]["uid"] = json!("u2");
                Ok(())
            })
            .unwrap();
        assert_eq!(names(&store.list_owned(&pods, "u1")), ["p2"]);
        assert_eq!(names(&store.list_owned(&pods, "u2")), ["p1", "p3"]);
        store
            .mutate(&pods, Some("a"), "p3", |p| {
                p["metadata"]["ownerReferences"][0]["controller"] = json!(false);
                Ok(())
            })
            .unwrap();
        assert_eq!(names(&store.list_owned(&pods, "u2")), ["p1"]);
        store
            .mutate(&pods, Some("a"), "bare", |p| {
                p["metadata"]["ownerReferences"] =
                    json!([{"kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]);
                Ok(())
            })
            .unwrap();
        assert_eq!(names(&store.list_owned(&pods, "u1")), ["bare", "p2"]);
        // The index hands out the current version of an object.
        store
            .mutate(&pods, Some("b"), "p2", |p| {
                p["metadata"]["labels"] = json!({"v": "2"});
                Ok(())
            })
            .unwrap();
        assert_eq!(
            store.list_owned(&pods, "u1")[1]["metadata"]["labels"]["v"],
            "2"
        );

        // Deleted at once, and deleted through a finalizer.
        store.delete(&pods, Some("a"), "bare").unwrap();
        assert_eq!(names(&store.list_owned(&pods, "u1")), ["p2"]);
        store
            .mutate(&pods, Some("b"), "p2", |p| {
                p["metadata"]["finalizers"] = json!(["x/y"]);
                Ok(())
            })
            .unwrap();
        store.delete(&pods, Some("b"), "p2").unwrap();
        assert_eq!(
            names(&store.list_owned(&pods, "u1")),
            ["p2"],
            "still there while a finalizer holds it"
        );
        store
            .mutate(&pods, Some("b"), "p2", |p| {
                p["metadata"]["finalizers"] = json!([]);
                Ok(())
            })
            .unwrap();
        assert!(store.list_owned(&pods, "u1").is_empty());
        assert!(store.get(&pods, Some("b"), "p2").is_none());
    }

    #[test]
    fn listing_one_namespace_is_exactly_its_objects() {
        let (store, pods) = store_with_pods();
        for (ns, name) in [("a", "x"), ("ab", "y"), ("b", "z"), ("a", "w")] {
            store.create(&pods, pod(ns, name, None)).unwrap();
        }
        assert_eq!(names(&store.list(&pods, Some("a")).0), ["w", "x"]);
        assert_eq!(names(&store.list(&pods, Some("ab")).0), ["y"]);
        assert!(store.list(&pods, Some("c")).0.is_empty());
        assert_eq!(store.list(&pods, None).0.len(), 4);
        let ns = ResourceKey::new("", "namespaces");
        assert!(store.list(&ns, Some("a")).0.is_empty(), "cluster-scoped");
    }
}
