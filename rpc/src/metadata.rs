//! Call metadata: string pairs that travel beside the payload in heads and trails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// String key and value pairs sent with a call (in the head) or with its outcome (in the trail).
///
/// Keys are unique; inserting an existing key replaces its value. Keys and values are free-form
/// text, but lowercase keys such as `traceparent` or `x-request-id` follow HTTP and gRPC habit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata {
    entries: BTreeMap<String, String>,
}

impl Metadata {
    /// Creates empty metadata.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Inserts a pair and returns the value it replaced, if any.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.entries.insert(key.into(), value.into())
    }

    /// Returns the value for a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Removes a key and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    /// Returns the number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iterates over the pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Metadata {
        Metadata {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_existing_value() {
        let mut metadata = Metadata::new();
        assert_eq!(metadata.insert("x-user", "ann"), None);
        assert_eq!(metadata.insert("x-user", "bob"), Some("ann".to_string()));
        assert_eq!(metadata.get("x-user"), Some("bob"));
        assert_eq!(metadata.len(), 1);
    }
}
