//! KV buckets in the NATS KV layout: the same answers on every backend.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use durabus::kv::{CasRetry, Entry, KvConfig, Operation, Watch};
use durabus::{Bus, Error, Kv, StorageType};
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use crate::{assert_err, eventually, impatient, increment_concurrently, names, QUIET, WAIT};

async fn bucket(bus: &Bus, case: &str, config: impl FnOnce(KvConfig) -> KvConfig) -> Kv {
    let name = names(case).stream("kv");
    bus.create_kv(config(KvConfig::new(name))).await.unwrap()
}

async fn next(w: &mut Watch) -> Entry {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("watch gave no entry within {WAIT:?}: {other:?}"),
    }
}

fn err<T: std::fmt::Debug>(r: durabus::Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

fn ops(entries: &[Entry]) -> Vec<(&str, Operation, &[u8])> {
    entries
        .iter()
        .map(|e| (e.key.as_str(), e.operation, &e.value[..]))
        .collect()
}

/// A bucket is the stream `KV_<bucket>` capturing `$KV.<bucket>.>`, and a
/// key's revision is the sequence of its entry in that stream.
pub async fn kv_bucket_uses_the_nats_layout(bus: &Bus) {
    let kv = bucket(bus, "kv_layout", |c| c.history(3)).await;
    let stream = format!("KV_{}", kv.bucket());
    let info = bus.stream_info(&stream).await.unwrap();
    assert_eq!(info.config.subjects, [format!("$KV.{}.>", kv.bucket())]);
    assert_eq!(info.config.max_msgs_per_subject, Some(3));
    assert!(info.config.allow_rollup && info.config.deny_delete);
    let rev = kv.put("a.b", "v").await.unwrap();
    let m = bus.get_message(&stream, rev).await.unwrap();
    assert_eq!(m.subject, format!("$KV.{}.a.b", kv.bucket()));
    assert_eq!(&m.payload[..], b"v");
}

/// put returns increasing revisions and get returns the newest value.
pub async fn kv_put_then_get_returns_the_newest_value(bus: &Bus) {
    let kv = bucket(bus, "kv_put", |c| c).await;
    assert_eq!(kv.get("k").await.unwrap(), None);
    let r1 = kv.put("k", "one").await.unwrap();
    let r2 = kv.put("k", "two").await.unwrap();
    let r3 = kv.put("other", "x").await.unwrap();
    assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"two"[..]));
    let e = kv.entry("k").await.unwrap().unwrap();
    assert_eq!((e.revision, e.operation), (r2, Operation::Put));
    assert_eq!(e.key, "k");
    assert_eq!(e.bucket, kv.bucket());
}

/// create succeeds only when the key has no value: an existing value is
/// KeyExists with its revision; after a delete or purge create works again.
pub async fn kv_create_only_when_the_key_has_no_value(bus: &Bus) {
    let kv = bucket(bus, "kv_create", |c| c.history(5)).await;
    let r1 = kv.create("k", "a").await.unwrap();
    let e = err(kv.create("k", "b").await);
    assert!(matches!(e, Error::KeyExists { .. }), "{e:?}");
    assert!(
        matches!(&e, Error::KeyExists { key, revision, .. } if key == "k" && *revision == r1),
        "{e:?}"
    );
    kv.delete("k").await.unwrap();
    let r3 = kv.create("k", "c").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"c"[..]));
    kv.purge("k").await.unwrap();
    let r5 = kv.create("k", "d").await.unwrap();
    assert!(r5 > r3);
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"d"[..]));
}

/// update is a compare-and-swap on the revision: a stale revision is
/// WrongRevision naming the expected and the current one, and stores nothing.
pub async fn kv_update_is_compare_and_swap_on_the_revision(bus: &Bus) {
    let kv = bucket(bus, "kv_update", |c| c).await;
    let r1 = kv.put("k", "a").await.unwrap();
    let r2 = kv.update("k", "b", r1).await.unwrap();
    let e = err(kv.update("k", "c", r1).await);
    assert!(matches!(e, Error::WrongRevision { .. }), "{e:?}");
    assert!(
        matches!(e, Error::WrongRevision { expected, current, .. } if expected == r1 && current == r2),
        "{e:?}"
    );
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
    // Revision 0 means "no entry yet".
    assert_err!(kv.update("k", "d", 0).await, Error::WrongRevision { .. });
    kv.update("new", "n", 0).await.unwrap();
}

/// delete hides the value and keeps the history; purge leaves only its
/// marker; both show in entry() as their operation.
pub async fn kv_delete_keeps_history_and_purge_drops_it(bus: &Bus) {
    let kv = bucket(bus, "kv_delete", |c| c.history(10)).await;
    kv.put("k", "a").await.unwrap();
    kv.put("k", "b").await.unwrap();
    let d = kv.delete("k").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), None);
    let e = kv.entry("k").await.unwrap().unwrap();
    assert_eq!((e.operation, e.revision), (Operation::Delete, d));
    assert_eq!(
        ops(&kv.history("k").await.unwrap()),
        [
            ("k", Operation::Put, &b"a"[..]),
            ("k", Operation::Put, b"b"),
            ("k", Operation::Delete, b""),
        ]
    );
    kv.put("k", "c").await.unwrap();
    kv.put("j", "x").await.unwrap();
    let p = kv.purge("k").await.unwrap();
    let h = kv.history("k").await.unwrap();
    assert_eq!(ops(&h), [("k", Operation::Purge, &b""[..])]);
    assert_eq!(h[0].revision, p);
    assert_eq!(kv.get("j").await.unwrap().as_deref(), Some(&b"x"[..]));
}

/// A key keeps at most `history` entries, the newest.
pub async fn kv_history_keeps_the_newest_entries_up_to_the_limit(bus: &Bus) {
    let kv = bucket(bus, "kv_history", |c| c.history(3)).await;
    for v in ["1", "2", "3", "4", "5"] {
        kv.put("k", v).await.unwrap();
    }
    kv.put("j", "other").await.unwrap();
    let h = kv.history("k").await.unwrap();
    let values: Vec<&[u8]> = h.iter().map(|e| &e.value[..]).collect();
    assert_eq!(values, [b"3", b"4", b"5"]);
    assert!(h.windows(2).all(|w| w[0].revision < w[1].revision));
    assert!(kv.history("none").await.unwrap().is_empty());
}

/// entry_at_revision returns the key's entry at that revision, and nothing
/// for another key's revision or one no longer kept.
pub async fn kv_entry_at_revision_returns_that_revision_of_the_key(bus: &Bus) {
    let kv = bucket(bus, "kv_at_rev", |c| c.history(2)).await;
    let r1 = kv.put("k", "a").await.unwrap();
    let r2 = kv.put("k", "b").await.unwrap();
    let other = kv.put("j", "x").await.unwrap();
    let e = kv.entry_at_revision("k", r1).await.unwrap().unwrap();
    assert_eq!((&e.value[..], e.revision), (&b"a"[..], r1));
    assert_eq!(kv.entry_at_revision("k", other).await.unwrap(), None);
    assert_eq!(kv.entry_at_revision("k", 999_999).await.unwrap(), None);
    kv.put("k", "c").await.unwrap(); // history 2: r1 goes
    assert_eq!(kv.entry_at_revision("k", r1).await.unwrap(), None);
    let e = kv.entry_at_revision("k", r2).await.unwrap().unwrap();
    assert_eq!(&e.value[..], b"b");
}

/// entry_at_time returns the value that was current at that time.
pub async fn kv_entry_at_time_returns_the_value_current_then(bus: &Bus) {
    let kv = bucket(bus, "kv_at_time", |c| c.history(10)).await;
    let before = SystemTime::now() - Duration::from_secs(3600);
    let mut times = Vec::new();
    for v in ["a", "b", "c"] {
        kv.put("k", v).await.unwrap();
        times.push(kv.entry("k").await.unwrap().unwrap().created);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(kv.entry_at_time("k", before).await.unwrap(), None);
    for (t, v) in times.iter().zip(["a", "b", "c"]) {
        let e = kv.entry_at_time("k", *t).await.unwrap().unwrap();
        assert_eq!(&e.value[..], v.as_bytes());
        let e = kv
            .entry_at_time("k", *t + Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&e.value[..], v.as_bytes());
    }
    kv.delete("k").await.unwrap();
    assert_eq!(
        kv.entry_at_time("k", SystemTime::now()).await.unwrap(),
        None
    );
    let e = kv.entry_at_time("k", times[2]).await.unwrap().unwrap();
    assert_eq!(&e.value[..], b"c");
}

/// keys lists the keys that have a value; filters take `*` and `>` tokens,
/// prefixes any string.
pub async fn kv_keys_lists_keys_with_values_by_filter_or_prefix(bus: &Bus) {
    let kv = bucket(bus, "kv_keys", |c| c.history(5)).await;
    assert!(kv.keys().await.unwrap().is_empty());
    for k in [
        "users.1",
        "users.2",
        "users.2",
        "users.3.x",
        "orders.1",
        "userspace",
    ] {
        kv.put(k, "v").await.unwrap();
    }
    kv.delete("users.1").await.unwrap();
    kv.put("gone", "v").await.unwrap();
    kv.purge("gone").await.unwrap();
    assert_eq!(
        kv.keys().await.unwrap(),
        ["orders.1", "users.2", "users.3.x", "userspace"]
    );
    assert_eq!(kv.keys_matching("users.*").await.unwrap(), ["users.2"]);
    assert_eq!(
        kv.keys_matching("users.>").await.unwrap(),
        ["users.2", "users.3.x"]
    );
    assert_eq!(
        kv.keys_with_prefix("users").await.unwrap(),
        ["users.2", "users.3.x", "userspace"]
    );
}

/// watch yields the newest entry of each key, then every change in order;
/// caught_up turns true right after the starting state.
pub async fn kv_watch_yields_current_values_then_every_change_in_order(bus: &Bus) {
    // History 10 keeps every change below until the watch reads it.
    let kv = bucket(bus, "kv_watch", |c| c.history(10)).await;
    kv.put("a", "1").await.unwrap();
    kv.put("a", "2").await.unwrap();
    kv.put("b", "1").await.unwrap();
    kv.put("c", "1").await.unwrap();
    kv.delete("c").await.unwrap();
    kv.put("other.x", "1").await.unwrap();
    let mut w = kv.watch("*").await.unwrap();
    assert!(!w.caught_up());
    let start = [next(&mut w).await, next(&mut w).await, next(&mut w).await];
    assert_eq!(
        ops(&start),
        [
            ("a", Operation::Put, &b"2"[..]),
            ("b", Operation::Put, b"1"),
            ("c", Operation::Delete, b""),
        ]
    );
    assert!(w.caught_up());
    let mut revs = Vec::new();
    for i in 0..20 {
        let key = ["a", "b", "d"][i % 3];
        revs.push(kv.put(key, format!("v{i}")).await.unwrap());
        kv.put("other.x", "skip").await.unwrap();
    }
    for (i, rev) in revs.iter().enumerate() {
        let e = next(&mut w).await;
        assert_eq!(
            (e.revision, &e.value[..]),
            (*rev, format!("v{i}").as_bytes())
        );
    }
    // After it was read: a purge removes the key's older entries.
    kv.purge("a").await.unwrap();
    assert_eq!(next(&mut w).await.operation, Operation::Purge);
}

/// A watch of an empty bucket is caught up at once and sees the first put.
pub async fn kv_watch_of_an_empty_bucket_is_caught_up_and_live(bus: &Bus) {
    let kv = bucket(bus, "kv_watch_empty", |c| c).await;
    let mut w = kv.watch(">").await.unwrap();
    assert!(w.caught_up());
    let rev = kv.put("k", "v").await.unwrap();
    assert_eq!(next(&mut w).await.revision, rev);
}

/// watch_from replays every entry from a revision on, then goes live;
/// watch_updates sees only later changes.
pub async fn kv_watch_from_revision_and_updates_only(bus: &Bus) {
    let kv = bucket(bus, "kv_watch_from", |c| c.history(10)).await;
    let r1 = kv.put("k", "1").await.unwrap();
    let r2 = kv.put("k", "2").await.unwrap();
    let r3 = kv.put("j", "3").await.unwrap();
    let mut from = kv.watch_from(">", r2).await.unwrap();
    let mut updates = kv.watch_updates("k").await.unwrap();
    assert!(from.caught_up() && updates.caught_up());
    assert_eq!(next(&mut from).await.revision, r2);
    assert_eq!(next(&mut from).await.revision, r3);
    let r4 = kv.put("k", "4").await.unwrap();
    assert_eq!(next(&mut from).await.revision, r4);
    let u = next(&mut updates).await;
    assert_eq!((u.revision, &u.value[..]), (r4, &b"4"[..]));
    assert!(r1 < r2);
}

/// Checks invariant 29 (docs/design.md).
///
/// A watch's `next()` is cancel safe (issue #24): with every call dropped
/// at once or after 1-50 µs, over a starting state of 200 keys and 200
/// changes written while watching (half to keys of the starting state),
/// every entry arrives exactly once and in revision order, `caught_up`
/// turns true right after the starting state, and the watch stays live.
pub async fn kv_watch_next_is_cancel_safe_and_the_watch_stays_live(bus: &Bus) {
    const KEYS: usize = 200;
    // History 64 keeps every entry until the watch reads it.
    let kv = bucket(bus, "kv_watch_cancel", |c| c.history(64)).await;
    let mut expected = Vec::new();
    for i in 0..KEYS {
        expected.push(kv.put(&format!("k.{i}"), format!("v{i}")).await.unwrap());
    }
    let mut w = kv.watch(">").await.unwrap();
    let writer = kv.clone();
    let task = tokio::spawn(async move {
        let mut revs = Vec::new();
        for i in 0..KEYS {
            let key = if i % 2 == 0 {
                format!("k.{i}")
            } else {
                format!("n.{i}")
            };
            revs.push(writer.put(&key, format!("w{i}")).await.unwrap());
            if i % 8 == 0 {
                // Let the watch catch up, so its calls also wait (and are
                // cancelled waiting) for what is not written yet.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        revs
    });
    let (mut got, mut cancelled, mut round) = (Vec::new(), 0u64, 0u64);
    let deadline = Instant::now() + 3 * WAIT;
    while got.len() < 2 * KEYS {
        assert!(
            Instant::now() < deadline,
            "stuck after {} entries ({cancelled} calls cancelled)",
            got.len()
        );
        round += 1;
        match impatient(round, w.next()).await {
            None => cancelled += 1,
            Some(Some(Ok(e))) => {
                got.push(e.revision);
                assert_eq!(
                    w.caught_up(),
                    got.len() >= KEYS,
                    "caught_up after {} entries",
                    got.len()
                );
            }
            Some(Some(Err(e))) => panic!("watch error after {} entries: {e}", got.len()),
            Some(None) => panic!("the watch ended after {} entries", got.len()),
        }
    }
    expected.extend(task.await.unwrap());
    assert_eq!(
        got, expected,
        "entries lost, repeated or out of order ({cancelled} calls cancelled)"
    );
    assert!(cancelled > 0);
    // Still live: nothing more now, and a later put arrives.
    assert!(w.next().now_or_never().is_none(), "an entry too many");
    assert!(tokio::time::timeout(QUIET, w.next()).await.is_err());
    let rev = kv.put("late", "1").await.unwrap();
    assert_eq!(next(&mut w).await.revision, rev);
}

/// A watch is a `Stream`: `StreamExt` combinators read it (here `take`
/// and `collect` over the starting state), and it goes on after them.
pub async fn kv_watch_is_a_stream(bus: &Bus) {
    let kv = bucket(bus, "kv_watch_stream", |c| c).await;
    for i in 0..5 {
        kv.put(&format!("k{i}"), "v").await.unwrap();
    }
    let mut w = kv.watch(">").await.unwrap();
    let start: Vec<Entry> =
        tokio::time::timeout(WAIT, (&mut w).take(5).map(Result::unwrap).collect())
            .await
            .unwrap();
    let keys: Vec<&str> = start.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    assert!(w.caught_up());
    let rev = kv.put("k9", "v").await.unwrap();
    let e = tokio::time::timeout(WAIT, StreamExt::next(&mut w))
        .await
        .unwrap()
        .expect("watch live")
        .unwrap();
    assert_eq!((e.key.as_str(), e.revision), ("k9", rev));
}

/// Keys and filters outside the NATS key rules are InvalidKey naming the
/// key; nothing is written.
pub async fn kv_invalid_key_is_refused_naming_it(bus: &Bus) {
    let kv = bucket(bus, "kv_bad_key", |c| c).await;
    for key in ["", ".a", "a.", "a..b", "a b", "a*", "é", "a.>", "*"] {
        let e = err(kv.put(key, "v").await);
        assert!(matches!(e, Error::InvalidKey { .. }), "{e:?}");
        assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
    }
    assert_err!(kv.watch("a.>.b").await, Error::InvalidKey { .. });
    assert_err!(kv.get("a b").await, Error::InvalidKey { .. });
    kv.keys_matching("a.*.>").await.unwrap();
    assert_eq!(kv.status().await.unwrap().values, 0);
}

/// A value over the bucket's max value size is refused with both sizes.
pub async fn kv_value_over_the_limit_names_both_sizes(bus: &Bus) {
    let kv = bucket(bus, "kv_big", |c| c.max_value_size(8)).await;
    kv.put("k", "12345678").await.unwrap();
    let e = err(kv.put("k", "123456789").await);
    assert!(matches!(e, Error::ValueTooLarge { .. }), "{e:?}");
    assert!(
        matches!(
            e,
            Error::ValueTooLarge {
                size: 9,
                max: 8,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("9 bytes") && e.to_string().contains("8 bytes"));
    assert_eq!(
        kv.get("k").await.unwrap().as_deref(),
        Some(&b"12345678"[..])
    );
}

/// Buckets: create is create-if-absent, a different config is refused,
/// open of a missing one is BucketNotFound, list and delete work, and an
/// invalid bucket name is refused.
pub async fn kv_buckets_are_created_opened_listed_and_deleted(bus: &Bus) {
    let name = names("kv_buckets").stream("kv");
    let cfg = KvConfig::new(&name)
        .history(4)
        .ttl(Duration::from_secs(3600))
        .storage(StorageType::Memory);
    let kv = bus.create_kv(cfg.clone()).await.unwrap();
    kv.put("k", "v").await.unwrap();
    let again = bus.create_kv(cfg.clone()).await.unwrap();
    assert_eq!(again.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_err!(
        bus.create_kv(cfg.clone().history(2)).await,
        Error::StreamNameInUse { .. }
    );
    let status = bus.kv(&name).await.unwrap().status().await.unwrap();
    assert_eq!(status.config, cfg);
    assert_eq!(status.values, 1);
    assert!(bus
        .list_kv()
        .await
        .unwrap()
        .iter()
        .any(|s| s.config.bucket == name));
    bus.delete_kv(&name).await.unwrap();
    assert_err!(bus.kv(&name).await, Error::BucketNotFound { .. });
    assert_err!(bus.delete_kv(&name).await, Error::BucketNotFound { .. });
    assert_err!(kv.put("k", "v").await, Error::BucketNotFound { .. });
    assert_err!(
        bus.create_kv(KvConfig::new("no.dots")).await,
        Error::InvalidName { .. }
    );
    assert_err!(
        bus.create_kv(KvConfig::new(&name).history(65)).await,
        Error::InvalidConfig { .. }
    );
}

/// Entries older than the bucket's ttl expire.
pub async fn kv_entries_expire_after_the_ttl(bus: &Bus) {
    let kv = bucket(bus, "kv_ttl", |c| c.ttl(Duration::from_millis(500))).await;
    kv.put("k", "v").await.unwrap();
    assert!(kv.get("k").await.unwrap().is_some());
    eventually("the entry expires", WAIT, || async {
        kv.get("k").await.unwrap().is_none()
    })
    .await;
}

/// get_json / put_json round-trip; a value that is not JSON is a Decode
/// error naming the key's subject.
pub async fn kv_json_values_round_trip_and_bad_json_is_a_decode_error(bus: &Bus) {
    let kv = bucket(bus, "kv_json", |c| c).await;
    let v: BTreeMap<String, u32> = [("a".to_owned(), 1), ("b".to_owned(), 2)].into();
    kv.put_json("m", &v).await.unwrap();
    assert_eq!(
        kv.get_json::<BTreeMap<String, u32>>("m").await.unwrap(),
        Some(v)
    );
    assert_eq!(kv.get_json::<u32>("none").await.unwrap(), None);
    kv.put("bad", "{not json").await.unwrap();
    let e = err(kv.get_json::<u32>("bad").await);
    assert!(
        matches!(&e, Error::Decode { subject, .. } if subject.ends_with(".bad")),
        "{e:?}"
    );
}

/// Concurrent update_json increments: every increment that returned Ok is
/// counted exactly once in the final value.
pub async fn kv_concurrent_update_json_counts_every_successful_swap(bus: &Bus) {
    let kv = bucket(bus, "kv_cas", |c| c).await;
    let n = increment_concurrently(&kv, "n", 8, 10).await;
    assert!(n > 0);
    assert_eq!(kv.get_json::<u64>("n").await.unwrap(), Some(n));
}

/// When every swap loses, update_json gives up with Conflict naming the
/// key, the attempts and the last revision seen.
pub async fn kv_update_json_gives_up_with_conflict_when_swaps_keep_losing(bus: &Bus) {
    let kv = bucket(bus, "kv_conflict", |c| c).await;
    kv.put_json("k", &0u64).await.unwrap();
    let writer = kv.clone();
    let retry = CasRetry {
        max_retries: 2,
        ..CasRetry::default()
    };
    // The closure itself changes the key each time, so each swap loses.
    let e = kv
        .update_json_with("k", retry, |n: Option<u64>| {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(writer.put_json("k", &100u64))
                    .unwrap()
            });
            n.unwrap_or(0) + 1
        })
        .await
        .unwrap_err();
    let last = kv.entry("k").await.unwrap().unwrap().revision;
    match &e {
        Error::Conflict {
            key,
            revision,
            attempts,
            ..
        } => {
            assert_eq!((key.as_str(), *attempts), ("k", 3));
            assert_eq!(*revision, last);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(kv.get_json::<u64>("k").await.unwrap(), Some(100));
}
