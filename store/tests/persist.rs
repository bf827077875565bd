//! The batching persister: concurrent requests share fsyncs, every caller is answered
//! only after its records are durable.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{receipt, sid};
use ferry_store::{Persister, Record, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_persists_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let (store, _) = Store::open(&path).unwrap();
    let store = Arc::new(Mutex::new(store));
    let (p, task) = Persister::spawn(store.clone(), 64, Duration::from_millis(5));
    let mut joins = Vec::new();
    for s in 0..20u8 {
        for seq in 1..=5u64 {
            let p = p.clone();
            joins.push(tokio::spawn(async move {
                p.persist(vec![Record::CoSigned(receipt(s, seq))]).await
            }));
        }
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    let fsyncs = store.lock().unwrap().stats().fsyncs;
    assert!(fsyncs < 50, "{fsyncs} fsyncs for 100 receipts");
    drop(p);
    task.await.unwrap();
    drop(store);
    let (s, rep) = Store::open(&path).unwrap();
    assert_eq!(rep.records, 100);
    for n in 0..20u8 {
        assert_eq!(s.latest(&sid(n)).unwrap().body().seq, 5);
    }
}
