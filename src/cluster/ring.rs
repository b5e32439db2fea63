//! The hash ring: which live node a new object is placed on.
//!
//! The ring is advisory: it suggests the first owner of an id, and the
//! ownership record in the engine (`engine.rs`) decides. Keys and nodes enter
//! the ring as fixed `u64` digests (the first 8 bytes of SHA-256), never through
//! Rust's `Hash` of a string, so every build of edged places ids the same way.
//! Each region has its own ring too, for location hints.

use std::collections::{BTreeMap, HashMap};

use consistent_hash_ring::{Ring, RingBuilder};
use sha2::{Digest, Sha256};

/// A stable 64-bit digest of `parts` (separated by NUL).
pub fn digest(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first)
}

/// The ring over a set of live nodes (node id → region).
pub struct Placement {
    all: Ring<u64>,
    regions: HashMap<String, Ring<u64>>,
    names: HashMap<u64, String>,
    members: BTreeMap<String, String>,
}

impl Placement {
    pub fn new(members: BTreeMap<String, String>, vnodes: usize) -> Placement {
        let names: HashMap<u64, String> =
            members.keys().map(|n| (digest(&[n]), n.clone())).collect();
        let all = RingBuilder::default()
            .vnodes(vnodes)
            .nodes_iter(names.keys().copied())
            .build();
        let mut by_region: HashMap<String, Vec<u64>> = HashMap::new();
        for (node, region) in &members {
            by_region
                .entry(region.clone())
                .or_default()
                .push(digest(&[node]));
        }
        let regions = by_region
            .into_iter()
            .map(|(r, nodes)| {
                (
                    r,
                    RingBuilder::default()
                        .vnodes(vnodes)
                        .nodes_iter(nodes)
                        .build(),
                )
            })
            .collect();
        Placement {
            all,
            regions,
            names,
            members,
        }
    }

    /// The live nodes (id → region) the ring was built from.
    pub fn members(&self) -> &BTreeMap<String, String> {
        &self.members
    }

    /// The first candidate for `key` (a [`digest`]), among the nodes of
    /// `region` when given and present, else among all.
    pub fn first(&self, key: u64, region: Option<&str>) -> Option<&str> {
        let ring = region
            .and_then(|r| self.regions.get(r))
            .unwrap_or(&self.all);
        ring.try_get(key)
            .and_then(|d| self.names.get(d))
            .map(|s| s.as_str())
    }

    /// Of `samples` evenly spread keys, how many land on each node.
    pub fn shares(&self, samples: u64) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self.members.keys().map(|n| (n.clone(), 0)).collect();
        let step = u64::MAX / samples.max(1);
        for i in 0..samples {
            if let Some(n) = self.first(i.wrapping_mul(step), None) {
                *out.entry(n.to_owned()).or_default() += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(n: usize) -> Placement {
        Placement::new(
            (0..n)
                .map(|i| (format!("pop-{i}"), format!("r{}", i % 3)))
                .collect(),
            128,
        )
    }

    #[test]
    fn digests_are_stable() {
        // Fixed values: a change here would move every object in a cluster.
        assert_eq!(digest(&["a"]), 0xca978112ca1bbdca);
        assert_ne!(digest(&["a", "b"]), digest(&["ab"]));
    }

    #[test]
    fn split_is_even_enough_and_adding_a_node_moves_a_quarter() {
        let three = placement(3);
        for (_, n) in three.shares(30_000) {
            assert!((7_000..=13_000).contains(&n), "uneven split: {n}");
        }
        let four = placement(4);
        let moved = (0..10_000u64)
            .map(|i| digest(&[&i.to_string()]))
            .filter(|k| three.first(*k, None) != four.first(*k, None))
            .count();
        assert!(moved < 4_000, "{moved} of 10000 keys moved");
        assert!(four.first(1, None).is_some());
    }

    #[test]
    fn hints_choose_the_region_and_empty_rings_place_nothing() {
        let p = placement(6);
        for i in 0..100u64 {
            let n = p
                .first(digest(&[&i.to_string()]), Some("r1"))
                .expect("a node");
            assert_eq!(p.members()[n], "r1");
        }
        assert!(p.first(5, Some("nowhere")).is_some());
        assert!(Placement::new(BTreeMap::new(), 16).first(5, None).is_none());
    }
}
