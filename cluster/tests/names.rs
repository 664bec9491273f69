//! The shared names on a three-server cluster: two nodes binding the same
//! new names at once agree on every id, numbers are never given twice,
//! the fleet's limit holds, and labels read back.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lastmile_cluster::names::Names;

async fn open(url: &str) -> Names {
    let js = lastmile_cluster::connect(url, Duration::from_secs(5))
        .await
        .unwrap();
    Names::open(&js, 3).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_binding_the_same_names_agree() {
    if !common::available() {
        return;
    }
    let nats = common::Nats::start("names");
    let (a, b) = (open(&nats.url()).await, open(&nats.url()).await);
    let names: Vec<String> = (0..40).map(|i| format!("van {i}")).collect();
    // Both nodes bind every name, in opposite orders, at once.
    let bind_all = |n: Names, order: Vec<String>| {
        tokio::spawn(async move {
            let mut got = HashMap::new();
            for name in order {
                let id = n.bind(1, 7, &name, 1000).await.unwrap().unwrap();
                got.insert(name, id);
            }
            got
        })
    };
    let mut reversed = names.clone();
    reversed.reverse();
    let (x, y) = (
        bind_all(a.clone(), names.clone()),
        bind_all(b.clone(), reversed),
    );
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_eq!(x, y, "both nodes see one number per name");
    let numbers: HashSet<u64> = x.values().copied().collect();
    assert_eq!(numbers.len(), names.len(), "no number twice");
    for (name, &n) in &x {
        assert_eq!(a.lookup(1, 7, name).await.unwrap(), Some(n));
        assert_eq!(
            b.label(1, 7, n).await.unwrap().as_deref(),
            Some(name.as_str())
        );
    }
    // Another kind or fleet is another space; an unknown name is none.
    assert_eq!(a.lookup(2, 7, "van 1").await.unwrap(), None);
    assert_eq!(a.lookup(1, 8, "van 1").await.unwrap(), None);
    // The limit: numbers drawn, whichever node drew them.
    assert_eq!(a.bind(1, 9, "one", 2).await.unwrap(), Some(0));
    assert_eq!(b.bind(1, 9, "two", 2).await.unwrap(), Some(1));
    assert_eq!(a.bind(1, 9, "three", 2).await.unwrap(), None);
    assert_eq!(
        b.bind(1, 9, "one", 2).await.unwrap(),
        Some(0),
        "bound before"
    );
}
