//! Epoch Merkle trees over accepted receipts (RFC 6962 / RFC 9162 shape, SHA-256) with
//! Ferry's own domain-separated hashing:
//!
//! ```text
//! leaf  = SHA-256("ferry/v1/merkle-leaf\0" || co-signed receipt encoding)
//! node  = SHA-256("ferry/v1/merkle-node\0" || left || right)
//! empty = SHA-256("ferry/v1/merkle-empty\0")
//! ```
//!
//! A tree of n > 1 leaves splits at k, the largest power of two below n: root =
//! node(root(leaves[..k]), root(leaves[k..])). Leaves are ordered by (relay key, session
//! id, seq). An audit path lists sibling hashes from the leaf up.

use ring::digest::{Context, SHA256};

/// Tag of leaf hashes.
pub const LEAF_TAG: &[u8] = b"ferry/v1/merkle-leaf\0";
/// Tag of interior node hashes.
pub const NODE_TAG: &[u8] = b"ferry/v1/merkle-node\0";
/// Tag hashed alone for the root of an empty tree.
pub const EMPTY_TAG: &[u8] = b"ferry/v1/merkle-empty\0";

/// A SHA-256 value.
pub type Hash = [u8; 32];

fn hash_parts(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Hash of one leaf (a co-signed receipt's canonical encoding).
pub fn leaf_hash(data: &[u8]) -> Hash {
    hash_parts(&[LEAF_TAG, data])
}

/// Hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_parts(&[NODE_TAG, left, right])
}

/// Root over leaf hashes, in order.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => hash_parts(&[EMPTY_TAG]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Audit path for leaf `index`, bottom-up; `None` if out of range.
pub fn proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    path_rec(leaves, index, &mut path);
    Some(path)
}

fn path_rec(leaves: &[Hash], index: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index < k {
        path_rec(&leaves[..k], index, out);
        out.push(root(&leaves[k..]));
    } else {
        path_rec(&leaves[k..], index - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Checks that `leaf` sits at `index` of a `size`-leaf tree with `root` (RFC 9162
/// §2.1.3.2).
pub fn verify(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &r == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_leaf_of_every_small_tree_verifies() {
        for n in 1..70 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = proof(&l, i).unwrap();
                assert!(verify(&l[i], i as u64, n as u64, &p, &r), "n={n} i={i}");
                // A size whose tree has a longer path for this index must fail.
                assert!(
                    !verify(&l[i], i as u64, n as u64 * 2 + 1, &p, &r),
                    "n={n} i={i}"
                );
                if n > 1 {
                    let other = (i + 1) % n;
                    assert!(
                        !verify(&l[i], other as u64, n as u64, &p, &r),
                        "n={n} i={i}"
                    );
                }
            }
        }
    }

    #[test]
    fn leaf_and_node_hashes_are_domain_separated() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut concat = Vec::new();
        concat.extend_from_slice(&a);
        concat.extend_from_slice(&b);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
        assert_ne!(root(&[]), leaf_hash(b""));
    }

    #[test]
    fn root_matches_hand_computed_three_leaf_tree() {
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
    }

    proptest! {
        #[test]
        fn tampered_path_or_leaf_fails(n in 2usize..200, i in 0usize..200, byte in 0usize..32) {
            let i = i % n;
            let l = leaves(n);
            let r = root(&l);
            let mut p = proof(&l, i).unwrap();
            prop_assert!(verify(&l[i], i as u64, n as u64, &p, &r));
            let mut bad_leaf = l[i];
            bad_leaf[byte] ^= 1;
            prop_assert!(!verify(&bad_leaf, i as u64, n as u64, &p, &r));
            p[0][byte] ^= 1;
            prop_assert!(!verify(&l[i], i as u64, n as u64, &p, &r));
        }
    }
}
