//! Rooms: ephemeral ones fan out live, persisted ones keep scrollback and
//! resume each peer where it left.

use std::time::Duration;

use durabus::room::{History, Member, Room, RoomMessage, RoomPolicy};
use durabus::Bus;
use futures::StreamExt;
use tokio::time::Instant;

use crate::{impatient, names, WAIT};

/// The next message of `member`, waiting at most [`WAIT`].
async fn next(member: &mut Member) -> RoomMessage {
    match tokio::time::timeout(WAIT, member.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => panic!("{} got an error: {e}", member.peer()),
        Ok(None) => panic!("{}'s room closed", member.peer()),
        Err(_) => panic!("{} got nothing within {WAIT:?}", member.peer()),
    }
}

fn text(m: &RoomMessage) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

fn texts(ms: &[RoomMessage]) -> Vec<String> {
    ms.iter().map(text).collect()
}

/// A peer joining a persisted room after messages were sent reads them as
/// scrollback, oldest first, with their senders and sequences; then gets
/// what is sent next.
pub async fn persisted_room_late_joiner_gets_the_scrollback(bus: &Bus) {
    let n = names("room_scrollback");
    let room = Room::open(bus, n.root(), RoomPolicy::persisted())
        .await
        .unwrap();
    let alice = room.join("alice").await.unwrap();
    for line in ["one", "two", "three"] {
        assert!(alice.send(line).await.unwrap().is_some());
    }
    let mut bob = room.join("bob").await.unwrap();
    assert!(!bob.resumed());
    let all = bob.scrollback(10).await.unwrap();
    assert_eq!(texts(&all), ["one", "two", "three"]);
    assert!(all.iter().all(|m| m.sender == "alice"));
    let seqs: Vec<_> = all.iter().map(|m| m.seq.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(texts(&bob.scrollback(2).await.unwrap()), ["two", "three"]);
    alice.send("four").await.unwrap();
    assert_eq!(text(&next(&mut bob).await), "four");
}

/// A persisted room keeps only the history it was opened with.
pub async fn persisted_room_scrollback_is_bounded_by_its_history(bus: &Bus) {
    let n = names("room_history");
    let policy = RoomPolicy::Persisted(History::new().max_msgs(Some(3)));
    let room = Room::open(bus, n.root(), policy).await.unwrap();
    let alice = room.join("alice").await.unwrap();
    for i in 0..5 {
        alice.send(i.to_string()).await.unwrap();
    }
    assert_eq!(texts(&room.scrollback(10).await.unwrap()), ["2", "3", "4"]);
}

/// An ephemeral room stores nothing: a late joiner has no scrollback and
/// gets only what is sent after it joined.
pub async fn ephemeral_room_has_no_scrollback(bus: &Bus) {
    let n = names("room_ephemeral");
    let room = Room::open(bus, n.root(), RoomPolicy::Ephemeral)
        .await
        .unwrap();
    assert_eq!(room.stream(), None);
    let alice = room.join("alice").await.unwrap();
    assert_eq!(alice.send("before").await.unwrap(), None);
    let mut bob = room.join("bob").await.unwrap();
    assert!(bob.scrollback(10).await.unwrap().is_empty());
    alice.send("after").await.unwrap();
    let m = next(&mut bob).await;
    assert_eq!((text(&m).as_str(), m.sender.as_str()), ("after", "alice"));
    assert_eq!(m.seq, None);
}

/// A peer of a persisted room that left and came back resumes with the
/// first message after its last one, and sees nothing twice.
pub async fn offline_peer_of_a_persisted_room_resumes_from_its_last_ack_without_repeats(bus: &Bus) {
    let n = names("room_resume");
    let room = Room::open(bus, n.root(), RoomPolicy::persisted())
        .await
        .unwrap();
    let alice = room.join("alice").await.unwrap();
    let mut bob = room.join("bob").await.unwrap();
    alice.send("m1").await.unwrap();
    alice.send("m2").await.unwrap();
    assert_eq!(text(&next(&mut bob).await), "m1");
    assert_eq!(text(&next(&mut bob).await), "m2");
    bob.leave().await.unwrap();

    alice.send("m3").await.unwrap();
    alice.send("m4").await.unwrap();
    let mut bob = room.join("bob").await.unwrap();
    assert!(bob.resumed());
    assert_eq!(text(&next(&mut bob).await), "m3");
    assert_eq!(text(&next(&mut bob).await), "m4");
    alice.send("m5").await.unwrap();
    assert_eq!(text(&next(&mut bob).await), "m5", "nothing repeated");

    room.remove_peer("bob").await.unwrap();
    let bob = room.join("bob").await.unwrap();
    assert!(!bob.resumed(), "a removed peer starts afresh");
}

/// `next` never yields the peer's own messages, in either kind of room;
/// scrollback (the room's history) includes them.
pub async fn a_peer_never_receives_its_own_messages(bus: &Bus) {
    let n = names("room_own");
    for (i, policy) in [RoomPolicy::Ephemeral, RoomPolicy::persisted()]
        .into_iter()
        .enumerate()
    {
        let room = Room::open(bus, &format!("{}_{i}", n.root()), policy)
            .await
            .unwrap();
        let mut alice = room.join("alice").await.unwrap();
        let bob = room.join("bob").await.unwrap();
        alice.send("mine").await.unwrap();
        bob.send("theirs").await.unwrap();
        let m = next(&mut alice).await;
        assert_eq!((text(&m).as_str(), m.sender.as_str()), ("theirs", "bob"));
        if room.stream().is_some() {
            assert_eq!(
                texts(&alice.scrollback(10).await.unwrap()),
                ["mine", "theirs"]
            );
        }
    }
}

/// Room names that sanitize to the same stream name (`a.b`, `a_b`) are
/// still different rooms.
pub async fn rooms_whose_names_sanitize_alike_stay_apart(bus: &Bus) {
    let n = names("room_names");
    let dotted = Room::open(bus, &format!("{}.x y", n.root()), RoomPolicy::persisted())
        .await
        .unwrap();
    let plain = Room::open(bus, &format!("{}_x_y", n.root()), RoomPolicy::persisted())
        .await
        .unwrap();
    assert_ne!(dotted.stream(), plain.stream());
    dotted
        .join("a")
        .await
        .unwrap()
        .send("dotted")
        .await
        .unwrap();
    plain.join("a").await.unwrap().send("plain").await.unwrap();
    assert_eq!(texts(&dotted.scrollback(5).await.unwrap()), ["dotted"]);
    assert_eq!(texts(&plain.scrollback(5).await.unwrap()), ["plain"]);
}

/// Checks invariant 29 (docs/design.md).
///
/// A member's `next()` is cancel safe in both kinds of room: with every
/// call dropped at once or after 1-50 µs while 200 messages from another
/// peer (and 100 of its own) are sent, each of the other peer's messages
/// arrives exactly once and in order, none of its own, and the member
/// stays live; it is a `Stream` (`take` and `collect` read it).
pub async fn a_members_next_is_cancel_safe_and_a_stream(bus: &Bus) {
    const N: usize = 200;
    let n = names("room_cancel");
    for (r, policy) in [RoomPolicy::persisted(), RoomPolicy::Ephemeral]
        .into_iter()
        .enumerate()
    {
        let room = Room::open(bus, &format!("{}_{r}", n.root()), policy)
            .await
            .unwrap();
        let alice = room.join("alice").await.unwrap().sender();
        let mut bob = room.join("bob").await.unwrap();
        let own = bob.sender();
        let task = tokio::spawn(async move {
            for i in 0..N {
                alice.send(i.to_string()).await.unwrap();
                if i % 2 == 0 {
                    own.send(format!("own {i}")).await.unwrap();
                }
                if i % 8 == 0 {
                    // Let bob catch up, so his calls also wait (and are
                    // cancelled waiting) for what is not sent yet.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            alice
        });
        let (mut got, mut cancelled, mut round) = (Vec::new(), 0u64, 0u64);
        let deadline = Instant::now() + 3 * WAIT;
        while got.len() < N {
            assert!(
                Instant::now() < deadline,
                "{policy:?}: stuck after {} messages ({cancelled} calls cancelled)",
                got.len()
            );
            round += 1;
            match impatient(round, bob.next()).await {
                None => cancelled += 1,
                Some(Some(Ok(m))) => {
                    assert_eq!(m.sender, "alice", "{policy:?}: {m:?}");
                    got.push(text(&m));
                }
                Some(Some(Err(e))) => panic!("{policy:?}: error after {}: {e}", got.len()),
                Some(None) => panic!("{policy:?}: ended after {} messages", got.len()),
            }
        }
        let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(
            got, want,
            "{policy:?}: messages lost, repeated or out of order ({cancelled} calls cancelled)"
        );
        assert!(cancelled > 0);
        let alice = task.await.unwrap();
        for i in 0..3 {
            alice.send(format!("late {i}")).await.unwrap();
        }
        let late: Vec<String> = tokio::time::timeout(
            WAIT,
            (&mut bob).take(3).map(|m| text(&m.unwrap())).collect(),
        )
        .await
        .unwrap();
        assert_eq!(late, ["late 0", "late 1", "late 2"], "{policy:?}");
        bob.leave().await.unwrap();
    }
}
