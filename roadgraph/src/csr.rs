//! Compressed-sparse-row grouping shared by the graph and CCH builders.

/// Groups items `0..keys.len()` by their key (a stable counting sort):
/// returns offsets (one per key, plus one) and the item indices in key order,
/// so the items with key `k` are `items[offsets[k]..offsets[k + 1]]`.
pub fn group_by_key(keys: &[u32], key_count: usize) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; key_count + 1];
    for &k in keys {
        offsets[k as usize + 1] += 1;
    }
    for k in 0..key_count {
        offsets[k + 1] += offsets[k];
    }
    let mut fill = offsets.clone();
    let mut items = vec![0u32; keys.len()];
    for (i, &k) in keys.iter().enumerate() {
        items[fill[k as usize] as usize] = i as u32;
        fill[k as usize] += 1;
    }
    (offsets, items)
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_stably() {
        let (offsets, items) = super::group_by_key(&[2, 0, 2, 1, 0], 4);
        assert_eq!(offsets, vec![0, 2, 3, 5, 5]);
        assert_eq!(items, vec![1, 4, 3, 0, 2]);
    }
}
