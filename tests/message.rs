//! Payload identity: two programs open the same typed object only if their payload
//! types agree on field names, types and offsets, recursively; otherwise the open
//! fails with `LayoutMismatch` naming the first field that differs. A garbled schema in
//! the segment is a typed error, never a panic.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};

use bytemuck::{Pod, Zeroable};
use common::{Guard, assert_err, assert_gone, shm_path};
use tally::{ByteRing, Error, Field, Kind, Message, Ring, Schema};

const PREFIX: &str = "msg";

/// The detail of a `LayoutMismatch`, or a panic naming what came instead.
fn mismatch<T>(res: tally::Result<T>) -> String {
    match assert_err!(res, Error::LayoutMismatch { .. }) {
        Error::LayoutMismatch { detail, .. } => detail,
        _ => unreachable!(),
    }
}

/// Creates a `Ring<A>` and opens it as a `Ring<B>`: the mismatch's detail.
fn open_as<A: Message, B: Message>(tag: &str) -> String {
    let g = Guard::new(PREFIX, tag);
    let ring = Ring::<A>::create(&g.name, 8).expect("create");
    let detail = mismatch(Ring::<B>::open(&g.name));
    assert_eq!(ring.info().refcount, 1, "the failed open registered");
    drop(ring);
    assert_gone(&g.name);
    detail
}

fn assert_starts(detail: &str, expected: &str) {
    assert!(
        detail.starts_with(expected),
        "detail {detail:?} does not start with {expected:?}"
    );
}

mod price_first {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Quote {
        pub px: f64,
        pub qty: u64,
    }
}

mod qty_first {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Quote {
        pub qty: u64,
        pub px: f64,
    }
}

/// The same layout as `price_first::Quote` under another name and path.
mod elsewhere {
    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Tick {
        pub px: f64,
        pub qty: u64,
    }
}

#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct Renamed {
    price: f64,
    qty: u64,
}

#[test]
fn the_two_field_orders_of_quote_are_a_mismatch_naming_the_field() {
    let detail = open_as::<price_first::Quote, qty_first::Quote>("order");
    assert_starts(
        &detail,
        "field `qty`: u64 at offset 0 here, u64 at offset 8 in the object",
    );
    assert!(detail.contains("Quote, 16 bytes"), "{detail}");
    let detail = open_as::<qty_first::Quote, price_first::Quote>("order2");
    assert_starts(
        &detail,
        "field `px`: f64 at offset 0 here, f64 at offset 8 in the object",
    );
}

#[test]
fn a_renamed_field_is_a_mismatch() {
    let detail = open_as::<price_first::Quote, Renamed>("rename");
    assert_starts(
        &detail,
        "field `price`: f64 at offset 0 here, missing in the object (it has `px`: f64 there)",
    );
}

#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct U {
    v: u64,
}
#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct I {
    v: i64,
}
#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct F {
    v: f64,
}

#[test]
fn a_field_of_another_type_of_the_same_size_is_a_mismatch() {
    assert_starts(
        &open_as::<U, I>("ui"),
        "field `v`: i64 at offset 0 here, u64 at offset 0 in the object",
    );
    assert_starts(
        &open_as::<I, F>("if"),
        "field `v`: f64 at offset 0 here, i64 at offset 0 in the object",
    );
    assert_starts(
        &open_as::<F, U>("fu"),
        "field `v`: u64 at offset 0 here, f64 at offset 0 in the object",
    );
}

mod deep_a {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Inner {
        pub w: u32,
        pub x: u32,
    }
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Middle {
        pub k: u64,
        pub inner: Inner,
    }
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Top {
        pub id: u64,
        pub outer: Middle,
    }
}

mod deep_b {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Inner {
        pub w: u32,
        pub x: f32,
    }
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Middle {
        pub k: u64,
        pub inner: Inner,
    }
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
    #[repr(C)]
    pub struct Top {
        pub id: u64,
        pub outer: Middle,
    }
}

#[test]
fn a_difference_deep_inside_a_nested_struct_is_named_by_its_path() {
    assert_starts(
        &open_as::<deep_a::Top, deep_b::Top>("deep"),
        "field `outer.inner.x`: f32 at offset 20 here, u32 at offset 20 in the object",
    );
}

#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct Four {
    v: [u8; 4],
    w: [u8; 4],
}
#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct Eight {
    v: [u8; 8],
}

#[test]
fn arrays_of_another_length_are_a_mismatch() {
    assert_starts(
        &open_as::<Four, Eight>("arr"),
        "field `v`: [u8; 8] at offset 0 here, [u8; 4] at offset 0 in the object",
    );
    assert_starts(
        &open_as::<[u32; 4], [u32; 2]>("arr2"),
        "payload: [u32; 2] here, [u32; 4] in the object",
    );
}

#[test]
fn primitives_and_arrays_need_no_derive() {
    let g = Guard::new(PREFIX, "prim");
    let ring = Ring::<u64>::create(&g.name, 8).expect("create");
    let same = Ring::<u64>::open(&g.name).expect("the same primitive opens");
    assert_starts(
        &mismatch(Ring::<i64>::open(&g.name)),
        "payload: i64 here, u64 in the object",
    );
    assert_starts(
        &mismatch(Ring::<[u16; 4]>::open(&g.name)),
        "payload: [u16; 4] here, u64 in the object",
    );
    assert_eq!(ring.info().payload_schema, "u64");
    drop((same, ring));

    let ring = Ring::<[[f32; 2]; 3]>::create(&g.name, 8).expect("create");
    Ring::<[[f32; 2]; 3]>::open(&g.name).expect("the same array opens");
    assert_eq!(ring.info().payload_schema, "[[f32;2];3]");
    drop(ring);
    assert_gone(&g.name);
}

#[test]
fn the_same_layout_under_another_type_name_opens() {
    let g = Guard::new(PREFIX, "alias");
    let ring = Ring::<price_first::Quote>::create(&g.name, 8).expect("create");
    let alias = Ring::<elsewhere::Tick>::open(&g.name).expect("same fields, other name");
    let mut tx = ring.producer().expect("producer");
    let mut rx = alias.consumer().expect("consumer");
    tx.try_send(price_first::Quote { px: 1.5, qty: 7 })
        .unwrap_or_else(|_| panic!("send"));
    assert_eq!(rx.try_recv(), Ok(elsewhere::Tick { px: 1.5, qty: 7 }));
    let info = alias.info();
    assert_eq!(info.payload_type, "Quote", "the creator's name is shown");
    assert_eq!(info.payload_schema, "{px@0:f64;qty@8:u64}");
    drop((tx, rx, alias, ring));
    assert_gone(&g.name);
}

#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct Pair(u32, f32);
#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct Swapped(f32, u32);

#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(transparent)]
struct Wrap<T>(T)
where
    T: Pod;

#[derive(Clone, Copy, Pod, Zeroable, Message)]
#[repr(C)]
struct Keyword {
    r#type: u32,
}

#[test]
fn tuple_generic_and_raw_named_structs_derive() {
    assert_eq!(Pair::schema().canonical(), "{0@0:u32;1@4:f32}");
    assert_eq!(
        Wrap::<price_first::Quote>::schema().canonical(),
        "{0@0:{px@0:f64;qty@8:u64}}"
    );
    assert_eq!(Wrap::<u16>::schema().type_name(), "Wrap<u16>");
    assert_eq!(Keyword::schema().canonical(), "{type@0:u32}");
    assert_starts(
        &open_as::<Pair, Swapped>("tuple"),
        "field `0`: f32 at offset 0 here, u32 at offset 0 in the object",
    );
    assert_starts(
        &open_as::<Wrap<u64>, Wrap<i64>>("generic"),
        "field `0`: i64 at offset 0 here, u64 at offset 0 in the object",
    );
}

#[test]
fn bytes_and_typed_rings_tell_each_other_apart() {
    // Byte rings are a kind of their own: the kind check answers before the schema.
    let g = Guard::new(PREFIX, "bytes");
    let bytes = ByteRing::create(&g.name, 8, 64).expect("create");
    assert!(matches!(
        Ring::<u64>::open(&g.name),
        Err(Error::KindMismatch {
            expected: Kind::SpscRing,
            found: Kind::ByteRing,
            ..
        })
    ));
    assert_eq!(bytes.info().payload_schema, "bytes");
    drop(bytes);
    let typed = Ring::<price_first::Quote>::create(&g.name, 8).expect("create");
    assert!(matches!(
        ByteRing::open(&g.name),
        Err(Error::KindMismatch {
            expected: Kind::ByteRing,
            found: Kind::SpscRing,
            ..
        })
    ));
    drop(typed);
    assert_gone(&g.name);
}

/// A hand-written schema that does not describe its type.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Liar {
    a: u64,
}

impl Message for Liar {
    fn schema() -> Schema {
        Schema::structure("Liar", 8, 8, vec![Field::new("a", 0, u32::schema())])
    }
}

/// A hand-written schema that does.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Honest {
    a: u32,
    b: u32,
}

impl Message for Honest {
    fn schema() -> Schema {
        Schema::structure(
            "Honest",
            8,
            4,
            vec![
                Field::new("a", 0, u32::schema()),
                Field::new("b", 4, u32::schema()),
            ],
        )
    }
}

#[test]
fn a_manual_schema_that_does_not_describe_its_type_is_refused() {
    let g = Guard::new(PREFIX, "liar");
    let err = assert_err!(
        Ring::<Liar>::create(&g.name, 8),
        Error::InvalidArgument(ref d) if d.contains("fields of Liar cover 4 of its 8 bytes")
    );
    assert!(err.to_string().contains("payload type Liar"), "{err}");
    assert!(!common::shm_exists(&g.name));
    let ring = Ring::<Honest>::create(&g.name, 8).expect("an honest manual impl works");
    assert_err!(Ring::<Liar>::open(&g.name), Error::InvalidArgument(_));
    drop(ring);
    assert_gone(&g.name);
}

// --- a garbled schema in the segment ----------------------------------------------------

/// Header field offsets (docs/ARCHITECTURE.md): the stored schema hash and length.
const SCHEMA_HASH_AT: u64 = 64;
const SCHEMA_OFFSET_AT: u64 = 160;
const SCHEMA_LEN_AT: u64 = 168;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Rewrites the segment file of `name`: `edit` gets its bytes and the schema's offset
/// (as the header gives it: the tests below never change that field).
fn rewrite(name: &str, edit: impl FnOnce(&mut Vec<u8>, usize)) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(name))
        .expect("open the segment file");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read");
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[SCHEMA_OFFSET_AT as usize..][..8]);
    let at = u64::from_ne_bytes(word) as usize;
    edit(&mut bytes, at);
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.write_all(&bytes).expect("write");
}

fn put_u64(bytes: &mut [u8], at: u64, v: u64) {
    bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Each garbling, then an open and an inspect: both typed errors, never a panic.
#[test]
fn a_garbled_stored_schema_is_a_typed_error() {
    type Quote = price_first::Quote;
    let corrupted = |res: tally::Result<Ring<Quote>>, what: &str| {
        assert_err!(res, Error::Corrupted { ref detail, .. } if detail.contains(what));
    };
    let g = Guard::new(PREFIX, "garbled");
    let ring = Ring::<Quote>::create(&g.name, 8).expect("create");
    rewrite(&g.name, |b, at| {
        assert_eq!(&b[at..at + 20], b"{px@0:f64;qty@8:u64}")
    });

    // Garbage in the schema area: the hash no longer matches.
    rewrite(&g.name, |b, at| {
        b[at..at + 20].copy_from_slice(b"\xff}{@@;;[[]]:0000\x00\x01xy")
    });
    corrupted(Ring::open(&g.name), "does not match its hash");
    assert_err!(tally::admin::inspect(&g.name), Error::Corrupted { .. });

    // Garbage with a matching hash: the decoder refuses it.
    rewrite(&g.name, |b, at| {
        b[at..at + 20].copy_from_slice(b"{px@0:f64;qty@8:u64]");
        let h = fnv1a(&b[at..at + 20]);
        put_u64(b, SCHEMA_HASH_AT, h);
    });
    corrupted(Ring::open(&g.name), "payload schema unreadable");

    // A well-formed, different schema: an honest mismatch naming the field.
    rewrite(&g.name, |b, at| {
        b[at..at + 20].copy_from_slice(b"{px@0:u64;qty@8:u64}");
        let h = fnv1a(&b[at..at + 20]);
        put_u64(b, SCHEMA_HASH_AT, h);
    });
    assert_starts(
        &mismatch(Ring::<Quote>::open(&g.name)),
        "field `px`: f64 at offset 0 here, u64 at offset 0 in the object",
    );

    // Hostile lengths: out of bounds, and past the object area.
    for len in [0, u64::MAX, 16 * 1024 + 1, 1 << 40] {
        rewrite(&g.name, |b, _| put_u64(b, SCHEMA_LEN_AT, len));
        corrupted(Ring::open(&g.name), "schema");
    }
    rewrite(&g.name, |b, _| put_u64(b, SCHEMA_LEN_AT, 200));
    corrupted(Ring::open(&g.name), "expected");

    // Restored, the object opens again.
    rewrite(&g.name, |b, at| {
        put_u64(b, SCHEMA_LEN_AT, 20);
        b[at..at + 20].copy_from_slice(b"{px@0:f64;qty@8:u64}");
        let h = fnv1a(&b[at..at + 20]);
        put_u64(b, SCHEMA_HASH_AT, h);
    });
    Ring::<Quote>::open(&g.name).expect("the restored schema opens");
    drop(ring);
    assert_gone(&g.name);
}
