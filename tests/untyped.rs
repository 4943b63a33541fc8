//! Rings whose payload type is known only at run time (what a bridge needs): an
//! `UntypedRing` opens a `Ring<T>` created elsewhere and moves its messages as byte
//! slices; one created from a decoded `Schema` is the object `Ring::<T>` would create,
//! so a typed program opens it. Another payload is a `LayoutMismatch`, bad schema text
//! a typed error. `UntypedBroadcast` does the same for broadcast rings, and lossless
//! subscribers read ahead of what they free.

mod common;

use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use common::{Guard, assert_err, assert_gone};
use tally::{
    Broadcast, ByteBroadcast, ByteRing, Error, Kind, Message, Options, Policy, Ring, Schema, Start,
    UntypedBroadcast, UntypedRing,
};

const PREFIX: &str = "untyped";
const SEC: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable, tally::Message)]
#[repr(C)]
struct Quote {
    px: f64,
    qty: u64,
    venue: [u8; 4],
    flags: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable, tally::Message)]
#[repr(C)]
struct Other {
    px: f64,
    qty: u64,
}

fn quote(i: u64) -> Quote {
    Quote {
        px: i as f64 * 0.5,
        qty: i,
        venue: *b"XLON",
        flags: i as u32 ^ 0xdead,
    }
}

#[test]
fn opens_a_typed_ring_and_reads_its_bytes() {
    let g = Guard::new(PREFIX, "open");
    let ring = Ring::<Quote>::create(&g.name, 8).unwrap();
    let mut tx = ring.producer().unwrap();
    for i in 0..3 {
        tx.try_send(quote(i)).unwrap();
    }

    let any = UntypedRing::open(&g.name).unwrap();
    assert_eq!(any.schema(), &Quote::schema());
    assert_eq!(
        any.schema().canonical_hash(),
        Quote::schema().canonical_hash()
    );
    assert_eq!(any.schema().type_name(), "Quote");
    assert_eq!(any.message_size(), std::mem::size_of::<Quote>());
    assert_eq!(any.align(), std::mem::align_of::<Quote>());
    assert_eq!(any.capacity(), 8);

    let mut rx = any.consumer().unwrap();
    for i in 0..3 {
        assert_eq!(rx.position(), i);
        let msg = rx.peek_timeout(SEC).unwrap();
        assert_eq!(msg.position(), i);
        assert_eq!(&*msg, bytemuck::bytes_of(&quote(i)));
        msg.release();
    }
    assert!(rx.peek().is_err(), "nothing more was sent");
    drop((rx, any, tx, ring));
    assert_gone(&g.name);
}

#[test]
fn the_consumer_position_survives_a_new_consumer() {
    let g = Guard::new(PREFIX, "resume");
    let ring = Ring::<u64>::create(&g.name, 16).unwrap();
    let mut tx = ring.producer().unwrap();
    for i in 0..10 {
        tx.try_send(i * 3).unwrap();
    }
    let any = UntypedRing::open(&g.name).unwrap();
    let mut rx = any.consumer().unwrap();
    for _ in 0..4 {
        rx.peek().unwrap().release();
    }
    // Peeked but not released: the next consumer sees it again.
    let msg = rx.peek().unwrap();
    assert_eq!(msg.position(), 4);
    drop(msg);
    drop(rx);
    let mut rx = any.consumer().unwrap();
    assert_eq!(rx.position(), 4);
    let msg = rx.peek().unwrap();
    assert_eq!(&*msg, &12u64.to_ne_bytes());
    msg.release();
}

#[test]
fn a_ring_created_from_a_decoded_schema_opens_as_ring_of_t() {
    let g = Guard::new(PREFIX, "create");
    let text = Quote::schema().canonical();
    let schema = Schema::from_canonical(&text).unwrap();
    assert_eq!(schema.canonical(), text);
    assert_eq!(schema.canonical_hash(), Quote::schema().canonical_hash());
    assert_eq!(schema.size(), std::mem::size_of::<Quote>());

    let any = UntypedRing::create(&g.name, &schema, 4, &Options::default()).unwrap();
    let mut tx = any.producer().unwrap();
    for i in 0..4 {
        assert_eq!(tx.position(), i);
        let mut slot = tx.reserve_timeout(SEC).unwrap();
        slot.copy_from_slice(bytemuck::bytes_of(&quote(i)));
        slot.commit();
    }
    // Full: a reservation times out.
    assert!(tx.reserve_timeout(Duration::from_millis(10)).is_err());

    let typed = Ring::<Quote>::open(&g.name).expect("Ring::<Quote>::open accepts it");
    let mut rx = typed.consumer().unwrap();
    for i in 0..4 {
        assert_eq!(rx.try_recv(), Ok(quote(i)));
    }
    // And another payload type is refused.
    assert_err!(Ring::<Other>::open(&g.name), Error::LayoutMismatch { .. });
    drop((rx, typed, tx, any));
    assert_gone(&g.name);
}

#[test]
fn open_or_create_refuses_another_payload() {
    let g = Guard::new(PREFIX, "mismatch");
    let _ring = Ring::<Quote>::create(&g.name, 8).unwrap();
    let other = Schema::from_canonical(&Other::schema().canonical()).unwrap();
    let e = assert_err!(
        UntypedRing::open_or_create(&g.name, &other, 8, &Options::default()),
        Error::LayoutMismatch { .. }
    );
    assert!(e.to_string().contains("venue"), "names the field: {e}");

    // The same payload opens, whatever the capacity asked for.
    let same = Schema::from_canonical(&Quote::schema().canonical()).unwrap();
    let (any, created) =
        UntypedRing::open_or_create(&g.name, &same, 64, &Options::default()).unwrap();
    assert!(!created);
    assert_eq!(any.capacity(), 8);
}

#[test]
fn open_or_create_creates_when_missing() {
    let g = Guard::new(PREFIX, "fresh");
    let schema = Schema::from_canonical("u32").unwrap();
    let (any, created) =
        UntypedRing::open_or_create(&g.name, &schema, 3, &Options::default()).unwrap();
    assert!(created);
    assert_eq!(any.capacity(), 4);
    assert_eq!(any.message_size(), 4);
    let typed = Ring::<u32>::open(&g.name).unwrap();
    assert_eq!(typed.capacity(), 4);
}

#[test]
fn other_kinds_are_a_kind_mismatch() {
    let g = Guard::new(PREFIX, "kind");
    let _bytes = ByteRing::create(&g.name, 8, 64).unwrap();
    assert_err!(
        UntypedRing::open(&g.name),
        Error::KindMismatch {
            found: Kind::ByteRing,
            ..
        }
    );
    assert_err!(
        UntypedRing::open(&common::unique(PREFIX, "missing")),
        Error::NotFound(_)
    );
}

#[test]
fn bad_schema_text_is_a_typed_error() {
    for text in [
        "",
        "bytes",
        "u7",
        "{a@0:u8;b@0:u8}",
        "{a@0:u8;a@1:u8}",
        "{a@1:u8}",
        "[u8;01]",
        "{a@0:u8",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[u8;1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1];1]",
        "[u64;99999999999999999999]",
        "{a@0:u8}x",
    ] {
        assert!(
            matches!(Schema::from_canonical(text), Err(Error::InvalidArgument(_))),
            "{text:?} decoded"
        );
    }
    // Decodes, but no ring can hold it.
    let huge = Schema::from_canonical("[u64;9999999999999999]").unwrap();
    assert_err!(
        UntypedRing::create(
            &common::unique(PREFIX, "huge"),
            &huge,
            1,
            &Options::default()
        ),
        Error::InvalidArgument(_)
    );
    // Round trips.
    for text in ["u8", "[f64;3]", "{a@0:u8;b@1:[u8;3];c@4:{x@0:u32}}", "{}"] {
        assert_eq!(Schema::from_canonical(text).unwrap().canonical(), text);
    }
}

#[test]
fn reading_ahead_keeps_messages_until_released() {
    let g = Guard::new(PREFIX, "ahead");
    let ring = Ring::<u64>::create(&g.name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    let any = UntypedRing::open(&g.name).unwrap();
    let mut rx = any.consumer().unwrap();
    assert!(rx.peek_at(0).is_none());
    assert_err!(
        rx.wait_at(0, Duration::from_millis(5)),
        tally::RecvTimeoutError::Timeout
    );
    for i in 0..4 {
        tx.try_send(100 + i).unwrap();
    }
    for i in 0..4 {
        assert_eq!(rx.peek_at(i).unwrap(), &(100 + i).to_ne_bytes());
    }
    assert!(rx.peek_at(4).is_none(), "beyond the capacity");
    assert!(
        tx.try_send(9).is_err(),
        "read ahead, but nothing released: full"
    );
    assert_eq!(rx.release_n(3), 3);
    assert_eq!(rx.position(), 3);
    assert_eq!(rx.peek_at(0).unwrap(), &103u64.to_ne_bytes());
    tx.try_send(104).unwrap();
    rx.wait_at(1, SEC).unwrap();
    assert_eq!(rx.peek_at(1).unwrap(), &104u64.to_ne_bytes());
    assert_eq!(rx.release_n(10), 2, "only what is committed");
    // A new consumer starts at the first unreleased message.
    drop(rx);
    let rx = any.consumer().unwrap();
    assert_eq!(rx.position(), 5);
}

#[test]
fn byte_rings_read_ahead_too() {
    let g = Guard::new(PREFIX, "bytes-ahead");
    let ring = ByteRing::create(&g.name, 4, 16).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    assert!(rx.peek_at(0).is_none());
    assert_err!(
        rx.wait_at(0, Duration::from_millis(5)),
        tally::RecvTimeoutError::Timeout
    );
    for (i, m) in [&b"a"[..], b"bc", b"", b"0123456789abcdef"]
        .iter()
        .enumerate()
    {
        assert_eq!(tx.position(), i as u64);
        tx.try_send(m).unwrap();
    }
    assert_eq!(rx.peek_at(1).unwrap(), b"bc");
    assert_eq!(rx.peek_at(2).unwrap(), b"");
    assert_eq!(rx.peek_at(3).unwrap(), b"0123456789abcdef");
    assert!(rx.peek_at(4).is_none());
    assert_eq!(rx.release_n(2), 2);
    assert_eq!(rx.position(), 2);
    tx.try_send(b"xyz").unwrap();
    rx.wait_at(2, SEC).unwrap();
    assert_eq!(rx.peek_at(2).unwrap(), b"xyz");
    assert_eq!(rx.release_n(9), 3);
    drop((rx, tx, ring));
    assert_gone(&g.name);
}

// --- broadcast rings ---------------------------------------------------------------------

#[test]
fn opens_a_typed_broadcast_ring_and_reads_its_bytes() {
    let g = Guard::new(PREFIX, "bcast-open");
    let ring = Broadcast::<Quote>::create(&g.name, 8, Policy::Lossy).unwrap();
    let any = UntypedBroadcast::open(&g.name).unwrap();
    assert_eq!(any.schema(), &Quote::schema());
    assert_eq!(any.schema().type_name(), "Quote");
    assert_eq!(any.message_size(), std::mem::size_of::<Quote>());
    assert_eq!(any.align(), std::mem::align_of::<Quote>());
    assert_eq!(any.capacity(), 8);
    assert_eq!(any.policy(), Policy::Lossy);
    let mut rx = any.subscribe(Start::Newest).unwrap();
    let mut tx = ring.publisher().unwrap();
    for i in 0..3 {
        tx.try_send(quote(i)).unwrap();
    }
    for i in 0..3 {
        let msg = rx.peek_timeout(SEC).unwrap();
        assert_eq!(msg.position(), i);
        assert_eq!(&*msg, bytemuck::bytes_of(&quote(i)));
        msg.release().unwrap();
    }
    // A lossy ring does not read ahead: the publisher may overwrite it meanwhile.
    tx.try_send(quote(3)).unwrap();
    assert!(rx.peek_at(0).is_none());
    assert_eq!(rx.release_n(1), 0);
    assert_err!(
        UntypedRing::open(&g.name),
        Error::KindMismatch {
            found: Kind::Broadcast,
            ..
        }
    );
    drop((rx, tx, any, ring));
    assert_gone(&g.name);
}

#[test]
fn a_broadcast_ring_created_from_a_decoded_schema_opens_as_broadcast_of_t() {
    let g = Guard::new(PREFIX, "bcast-create");
    let schema = Schema::from_canonical(&Quote::schema().canonical()).unwrap();
    let any = UntypedBroadcast::create(&g.name, &schema, 4, Policy::Lossless, &Options::default())
        .unwrap();
    let typed = Broadcast::<Quote>::open(&g.name).expect("Broadcast::<Quote>::open accepts it");
    let mut rx = typed.subscribe(Start::Newest).unwrap();
    let mut tx = any.publisher().unwrap();
    for i in 0..4 {
        assert_eq!(tx.position(), i);
        let mut slot = tx.reserve_timeout(SEC).unwrap();
        slot.copy_from_slice(bytemuck::bytes_of(&quote(i)));
        slot.commit();
    }
    // Lossless and a ring behind its subscriber: a reservation times out.
    assert!(tx.reserve_timeout(Duration::from_millis(10)).is_err());
    for i in 0..4 {
        assert_eq!(rx.try_recv(), Ok(quote(i)));
    }
    assert_err!(
        Broadcast::<Other>::open(&g.name),
        Error::LayoutMismatch { .. }
    );
    // Another payload, or another policy, is refused by open_or_create.
    let other = Schema::from_canonical(&Other::schema().canonical()).unwrap();
    assert_err!(
        UntypedBroadcast::open_or_create(&g.name, &other, 4, Policy::Lossless, &Options::default()),
        Error::LayoutMismatch { .. }
    );
    assert_err!(
        UntypedBroadcast::open_or_create(&g.name, &schema, 4, Policy::Lossy, &Options::default()),
        Error::LayoutMismatch { .. }
    );
    let (same, created) = UntypedBroadcast::open_or_create(
        &g.name,
        &schema,
        64,
        Policy::Lossless,
        &Options::default(),
    )
    .unwrap();
    assert!(!created);
    assert_eq!(same.capacity(), 4);
    drop((rx, tx, typed, any, same));
    assert_gone(&g.name);
}

#[test]
fn lossless_broadcast_subscribers_read_ahead_and_hold_the_publisher() {
    let g = Guard::new(PREFIX, "bcast-ahead");
    let ring = Broadcast::<u64>::create(&g.name, 4, Policy::Lossless).unwrap();
    let any = UntypedBroadcast::open(&g.name).unwrap();
    let mut rx = any.subscribe(Start::Newest).unwrap();
    let mut tx = ring.publisher().unwrap();
    assert!(rx.peek_at(0).is_none());
    assert_err!(
        rx.wait_at(0, Duration::from_millis(5)),
        tally::BroadcastRecvTimeoutError::Timeout
    );
    for i in 0..4 {
        tx.try_send(100 + i).unwrap();
    }
    for i in 0..4 {
        assert_eq!(rx.peek_at(i).unwrap(), &(100 + i).to_ne_bytes());
    }
    assert!(rx.peek_at(4).is_none(), "beyond the capacity");
    assert!(
        tx.try_send(9).is_err(),
        "read ahead, nothing released: full"
    );
    assert_eq!(rx.release_n(3), 3);
    assert_eq!(rx.position(), 3);
    tx.try_send(104).unwrap();
    rx.wait_at(1, SEC).unwrap();
    assert_eq!(rx.peek_at(1).unwrap(), &104u64.to_ne_bytes());
    assert_eq!(rx.release_n(10), 2, "only what is committed");

    // Byte broadcast rings too.
    let h = Guard::new(PREFIX, "bcast-bytes-ahead");
    let bytes = ByteBroadcast::create(&h.name, 4, 16, Policy::Lossless).unwrap();
    let mut brx = bytes.subscribe(Start::Newest).unwrap();
    let mut btx = bytes.publisher().unwrap();
    for m in [&b"a"[..], b"", b"0123456789abcdef"] {
        btx.try_send(m).unwrap();
    }
    assert_eq!(brx.peek_at(0).unwrap(), b"a");
    assert_eq!(brx.peek_at(1).unwrap(), b"");
    assert_eq!(brx.peek_at(2).unwrap(), b"0123456789abcdef");
    assert!(brx.peek_at(3).is_none());
    assert_eq!(brx.release_n(2), 2);
    assert_eq!(brx.peek_at(0).unwrap(), b"0123456789abcdef");
    drop((rx, tx, any, ring, brx, btx, bytes));
    assert_gone(&g.name);
    assert_gone(&h.name);
}
