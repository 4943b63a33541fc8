//! Payload identity: what two programs must agree on to share a typed object.
//!
//! A payload type describes itself as a [`Schema`]: primitives by name, arrays by
//! element and length, structs by their fields' names, offsets and schemas,
//! recursively. The schema's canonical text (`{px@0:f64;qty@8:u64}`) is stored in
//! the segment when an object is created, and an opener compares its own against it:
//! any difference is a [`LayoutMismatch`](crate::Error::LayoutMismatch) that names
//! the first field that differs.
//!
//! # Canonical text
//!
//! ```text
//! schema := primitive | array | struct
//! array  := '[' schema ';' len ']'
//! struct := '{' [ field { ';' field } ] '}'
//! field  := name '@' offset ':' schema
//! ```
//!
//! Names are `[A-Za-z0-9_]+`; numbers are decimal without leading zeros. Fields appear in
//! offset order. A struct's own type name is not part of it (two programs may name or
//! path the type differently); neither is anything about what a field means. Untyped
//! byte objects carry the text `bytes`.

use std::fmt;

/// Longest canonical schema a segment may store. A bound on what an opener reads and
/// parses from shared memory; a payload type whose schema is longer cannot be shared.
pub(crate) const MAX_SCHEMA_LEN: usize = 16 * 1024;
/// Deepest nesting of arrays and structs a schema may have: bounds the decoder's
/// recursion on untrusted text.
pub(crate) const MAX_DEPTH: usize = 32;
/// The canonical text of untyped byte objects.
pub(crate) const BYTES: &str = "bytes";

/// A payload type whose layout tally can describe and compare between programs.
///
/// Typed objects ([`Ring<T>`](crate::Ring)) store `T::schema()` when they are created
/// and compare it when they are opened: field names, field types and field offsets,
/// recursively. Any difference fails the open with
/// [`Error::LayoutMismatch`](crate::Error::LayoutMismatch) naming the first field that
/// differs, instead of two programs reading each other's bytes as garbage.
///
/// Derive it (feature `derive`, on by default) next to `bytemuck::Pod`:
///
/// ```
/// use bytemuck::{Pod, Zeroable};
///
/// #[derive(Clone, Copy, Pod, Zeroable, tally::Message)]
/// #[repr(C)]
/// struct Quote {
///     px: f64,
///     qty: u64,
/// }
///
/// use tally::Message;
/// assert_eq!(Quote::schema().canonical(), "{px@0:f64;qty@8:u64}");
/// ```
///
/// Primitives (`u8`..`u128`, `i8`..`i128`, `usize`, `isize`, `f32`, `f64`) and arrays
/// `[T; N]` of a `Message` implement it already.
///
/// The trait is safe to implement: the schema only describes. Soundness rests on
/// `Pod` and on the size and alignment check tally makes in any case. A manual
/// implementation must still describe the real layout, or the comparison means
/// nothing; tally rejects (with [`Error::InvalidArgument`](crate::Error::InvalidArgument))
/// a schema whose size or alignment differ from the type's, or whose fields overlap,
/// leave gaps or run past the end.
pub trait Message: bytemuck::Pod {
    /// The type's layout: names, offsets and schemas of its fields, recursively.
    fn schema() -> Schema;
}

/// The layout of a payload type, as [`Message::schema`] describes it.
///
/// Two schemas are equal (`==`) when their [canonical texts](Schema::canonical) are:
/// struct type names are shown but not compared.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Schema {
    /// A built-in number type.
    #[non_exhaustive]
    Primitive {
        /// Its Rust name (`u64`, `f32`, ...).
        name: &'static str,
        /// `size_of`.
        size: usize,
        /// `align_of`.
        align: usize,
    },
    /// `[element; len]`.
    #[non_exhaustive]
    Array {
        /// The element's schema.
        element: Box<Schema>,
        /// The number of elements.
        len: usize,
    },
    /// A struct: its fields in offset order.
    #[non_exhaustive]
    Struct {
        /// The type's name without module paths, for messages only.
        name: String,
        /// `size_of`.
        size: usize,
        /// `align_of`.
        align: usize,
        /// Its fields, in offset order.
        fields: Vec<Field>,
    },
}

/// One field of a [`Schema::Struct`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Field {
    /// The field's name (`0`, `1`, ... in a tuple struct).
    pub name: String,
    /// Its offset from the start of the struct (`core::mem::offset_of!`).
    pub offset: usize,
    /// Its type's schema.
    pub schema: Schema,
}

impl Field {
    /// A field `name` at byte `offset` of its struct, of type `schema`.
    pub fn new(name: impl Into<String>, offset: usize, schema: Schema) -> Self {
        Field {
            name: name.into(),
            offset,
            schema,
        }
    }
}

impl Schema {
    /// A struct named `type_name` (module paths are dropped; any name will do, it is
    /// not compared) of `size` bytes aligned to `align`, with `fields` in offset order.
    pub fn structure(type_name: &str, size: usize, align: usize, fields: Vec<Field>) -> Self {
        Schema::Struct {
            name: short_type_name(type_name),
            size,
            align,
            fields,
        }
    }

    /// `[element; len]`.
    pub fn array(element: Schema, len: usize) -> Self {
        Schema::Array {
            element: Box::new(element),
            len,
        }
    }

    /// The size in bytes the schema describes (saturating for absurd arrays).
    pub fn size(&self) -> usize {
        match self {
            Schema::Primitive { size, .. } | Schema::Struct { size, .. } => *size,
            Schema::Array { element, len } => element.size().saturating_mul(*len),
        }
    }

    /// The alignment the schema describes.
    pub fn align(&self) -> usize {
        match self {
            Schema::Primitive { align, .. } | Schema::Struct { align, .. } => *align,
            Schema::Array { element, .. } => element.align(),
        }
    }

    /// A short name for messages: `u64`, `[u8; 4]`, or the struct's type name.
    pub fn type_name(&self) -> String {
        match self {
            Schema::Primitive { name, .. } => (*name).to_owned(),
            Schema::Array { element, len } => format!("[{}; {len}]", element.type_name()),
            Schema::Struct { name, .. } => name.clone(),
        }
    }

    /// The canonical text compared between programs, e.g. `{px@0:f64;qty@8:u64}`.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.encode(&mut out);
        out
    }

    /// FNV-1a of [`canonical`](Schema::canonical), as stored in the segment header.
    pub fn canonical_hash(&self) -> u64 {
        crate::sys::fnv1a(self.canonical().as_bytes())
    }

    fn encode(&self, out: &mut String) {
        use fmt::Write;
        match self {
            Schema::Primitive { name, .. } => out.push_str(name),
            Schema::Array { element, len } => {
                out.push('[');
                element.encode(out);
                let _ = write!(out, ";{len}]");
            }
            Schema::Struct { fields, .. } => {
                out.push('{');
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(';');
                    }
                    let _ = write!(out, "{}@{}:", f.name, f.offset);
                    f.schema.encode(out);
                }
                out.push('}');
            }
        }
    }

    /// Whether the schema describes a real `Pod` layout and can be stored: valid field
    /// names, unique within their struct; fields in offset order that tile their struct
    /// exactly (`Pod` has no padding); a power-of-two alignment; bounded depth.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.check_at("the payload", 0)
    }

    fn check_at(&self, path: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{path}: nested more than {MAX_DEPTH} levels deep"));
        }
        match self {
            Schema::Primitive { .. } => Ok(()),
            Schema::Array { element, len } => {
                if element.size().checked_mul(*len).is_none() {
                    return Err(format!("{path}: array of {len} elements overflows"));
                }
                element.check_at(&format!("{path}[]"), depth + 1)
            }
            Schema::Struct {
                name,
                size,
                align,
                fields,
            } => {
                if !align.is_power_of_two() || size % align != 0 {
                    return Err(format!(
                        "{path} ({name}): {size} bytes aligned to {align} is not a Rust layout"
                    ));
                }
                let mut end = 0usize;
                for (i, f) in fields.iter().enumerate() {
                    let fpath = if depth == 0 {
                        f.name.clone()
                    } else {
                        format!("{path}.{}", f.name)
                    };
                    if !valid_name(f.name.as_bytes()) {
                        return Err(format!(
                            "field {:?} of {name}: names are ASCII letters, digits and '_'",
                            f.name
                        ));
                    }
                    if fields[..i].iter().any(|g| g.name == f.name) {
                        return Err(format!("field `{fpath}` appears twice in {name}"));
                    }
                    if f.offset != end {
                        return Err(format!(
                            "field `{fpath}` of {name} at offset {} where {end} was expected: fields must be in offset order with no gap or overlap",
                            f.offset
                        ));
                    }
                    f.schema.check_at(&fpath, depth + 1)?;
                    end = f
                        .offset
                        .checked_add(f.schema.size())
                        .ok_or_else(|| format!("field `{fpath}` of {name} overflows"))?;
                }
                if end != *size {
                    return Err(format!(
                        "the fields of {name} cover {end} of its {size} bytes"
                    ));
                }
                Ok(())
            }
        }
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl Eq for Schema {}

impl fmt::Display for Schema {
    /// `Quote { px: f64 @0, qty: u64 @8 }`, nested structs inline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schema::Primitive { name, .. } => f.write_str(name),
            Schema::Array { element, len } => write!(f, "[{element}; {len}]"),
            Schema::Struct { name, fields, .. } => {
                write!(f, "{name} {{")?;
                for (i, field) in fields.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{}: {} @{}", field.name, field.schema, field.offset)?;
                }
                f.write_str(if fields.is_empty() { "}" } else { " }" })
            }
        }
    }
}

macro_rules! primitives {
    ($($t:ident)*) => {$(
        impl Message for $t {
            fn schema() -> Schema {
                Schema::Primitive {
                    name: stringify!($t),
                    size: std::mem::size_of::<$t>(),
                    align: std::mem::align_of::<$t>(),
                }
            }
        }
    )*};
}

primitives!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64);

impl<T: Message, const N: usize> Message for [T; N]
where
    [T; N]: bytemuck::Pod,
{
    fn schema() -> Schema {
        Schema::array(T::schema(), N)
    }
}

/// `a::b::Msg<c::D>` → `Msg<D>`: drops every module path from a type name.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut ident_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(ident_start);
            continue;
        }
        if !(c.is_alphanumeric() || c == '_') {
            out.push(c);
            ident_start = out.len();
            continue;
        }
        out.push(c);
    }
    out
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

// --- decoding (of untrusted text) ----------------------------------------------------

/// A decoded canonical schema, borrowing its names from the text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Node<'a> {
    /// Untyped bytes (top level only).
    Bytes,
    Primitive(&'a str),
    Array(Box<Node<'a>>, u64),
    Struct(Vec<FieldNode<'a>>),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FieldNode<'a> {
    name: &'a str,
    offset: u64,
    node: Node<'a>,
}

/// Decodes canonical text. Bounded: at most [`MAX_SCHEMA_LEN`] bytes, one pass,
/// recursion at most [`MAX_DEPTH`] deep. Any malformed input is an error, never a panic.
pub(crate) fn parse(text: &[u8]) -> Result<Node<'_>, String> {
    if text.len() > MAX_SCHEMA_LEN {
        return Err(format!(
            "{} bytes, over the {MAX_SCHEMA_LEN}-byte bound",
            text.len()
        ));
    }
    if text == BYTES.as_bytes() {
        return Ok(Node::Bytes);
    }
    let mut p = Parser { text, pos: 0 };
    let node = p.schema(0)?;
    if p.pos != text.len() {
        return Err(p.error("trailing bytes"));
    }
    Ok(node)
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", b as char)))
        }
    }

    fn name(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected a name"));
        }
        // ASCII only, so always UTF-8.
        std::str::from_utf8(&self.text[start..self.pos]).map_err(|_| self.error("bad name"))
    }

    fn number(&mut self) -> Result<u64, String> {
        let start = self.pos;
        let mut value = 0u64;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            if self.pos > start && self.text[start] == b'0' {
                return Err(self.error("leading zero"));
            }
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.error("number overflows"))?;
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected a number"));
        }
        Ok(value)
    }

    fn schema(&mut self, depth: usize) -> Result<Node<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(self.error(&format!("nested over {MAX_DEPTH} levels")));
        }
        match self.peek() {
            Some(b'[') => {
                self.pos += 1;
                let element = self.schema(depth + 1)?;
                self.expect(b';')?;
                let len = self.number()?;
                self.expect(b']')?;
                Ok(Node::Array(Box::new(element), len))
            }
            Some(b'{') => {
                self.pos += 1;
                let mut fields = Vec::new();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Node::Struct(fields));
                }
                loop {
                    let name = self.name()?;
                    self.expect(b'@')?;
                    let offset = self.number()?;
                    self.expect(b':')?;
                    let node = self.schema(depth + 1)?;
                    fields.push(FieldNode { name, offset, node });
                    match self.peek() {
                        Some(b';') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Node::Struct(fields));
                        }
                        _ => return Err(self.error("expected ';' or '}'")),
                    }
                }
            }
            _ => Ok(Node::Primitive(self.name()?)),
        }
    }
}

/// Longest type rendering in a message before it is cut with `…`.
const RENDER_LEN: usize = 60;

/// A short rendering of a decoded type for messages: `u64`, `[u8; 4]`, `{a: u8, b: u8}`.
fn render(node: &Node<'_>) -> String {
    fn go(node: &Node<'_>, out: &mut String) {
        if out.len() > RENDER_LEN {
            return;
        }
        match node {
            Node::Bytes => out.push_str(BYTES),
            Node::Primitive(name) => out.push_str(name),
            Node::Array(element, len) => {
                out.push('[');
                go(element, out);
                out.push_str(&format!("; {len}]"));
            }
            Node::Struct(fields) => {
                out.push('{');
                for (i, f) in fields.iter().enumerate() {
                    if out.len() > RENDER_LEN {
                        break;
                    }
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(f.name);
                    out.push_str(": ");
                    go(&f.node, out);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    go(node, &mut out);
    if out.len() > RENDER_LEN {
        let cut = (0..=RENDER_LEN)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Names the first difference between our canonical schema and the one stored in the
/// object (`theirs`, untrusted), or `None` if they are the same text.
///
/// Fields are matched by name in our offset order: the first of ours that is missing
/// in the object, sits at another offset, or has another type is reported; then the
/// first of theirs that we lack. Offsets in messages count from the payload's start.
pub(crate) fn first_difference(ours: &[u8], theirs: &[u8]) -> Option<String> {
    if ours == theirs {
        return None;
    }
    let theirs = match parse(theirs) {
        Ok(node) => node,
        Err(e) => return Some(format!("the object's payload schema is unreadable: {e}")),
    };
    let ours = match parse(ours) {
        Ok(node) => node,
        Err(e) => return Some(format!("this program's payload schema is unreadable: {e}")),
    };
    Some(match (&ours, &theirs) {
        (Node::Bytes, _) => format!("the object's payload is {}, not bytes", render(&theirs)),
        (_, Node::Bytes) => "the object's payload is bytes".to_owned(),
        _ => diff("", 0, 0, &ours, &theirs)
            .unwrap_or_else(|| "the payload schemas differ in field order".to_owned()),
    })
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn mismatch(path: &str, ours: (&Node<'_>, u64), theirs: (&Node<'_>, u64)) -> String {
    if path.is_empty() {
        format!(
            "payload: {} here, {} in the object",
            render(ours.0),
            render(theirs.0)
        )
    } else {
        format!(
            "field `{path}`: {} at offset {} here, {} at offset {} in the object",
            render(ours.0),
            ours.1,
            render(theirs.0),
            theirs.1
        )
    }
}

/// The first difference between `ours` at payload offset `at` and `theirs` at `their_at`.
/// Recursion is bounded by the parsers' depth limit.
fn diff(path: &str, at: u64, their_at: u64, ours: &Node<'_>, theirs: &Node<'_>) -> Option<String> {
    match (ours, theirs) {
        (Node::Primitive(a), Node::Primitive(b)) if a == b => None,
        (Node::Array(a, n), Node::Array(b, m)) if n == m && a == b => None,
        // Into arrays of structs, to name the field; other arrays are named whole.
        (Node::Array(a, n), Node::Array(b, m))
            if n == m && matches!((&**a, &**b), (Node::Struct(_), Node::Struct(_))) =>
        {
            diff(&format!("{path}[]"), at, their_at, a, b)
        }
        (Node::Struct(ours_f), Node::Struct(theirs_f)) => {
            for f in ours_f {
                let p = child(path, f.name);
                let here = at.saturating_add(f.offset);
                let Some(g) = theirs_f.iter().find(|g| g.name == f.name) else {
                    let instead = theirs_f
                        .iter()
                        .find(|g| g.offset == f.offset)
                        .map(|g| {
                            format!(
                                " (it has `{}`: {} there)",
                                child(path, g.name),
                                render(&g.node)
                            )
                        })
                        .unwrap_or_default();
                    return Some(format!(
                        "field `{p}`: {} at offset {here} here, missing in the object{instead}",
                        render(&f.node)
                    ));
                };
                let there = their_at.saturating_add(g.offset);
                if f.offset != g.offset {
                    return Some(mismatch(&p, (&f.node, here), (&g.node, there)));
                }
                if let Some(d) = diff(&p, here, there, &f.node, &g.node) {
                    return Some(d);
                }
            }
            theirs_f
                .iter()
                .find(|g| !ours_f.iter().any(|f| f.name == g.name))
                .map(|g| {
                    format!(
                        "field `{}`: missing here, {} at offset {} in the object",
                        child(path, g.name),
                        render(&g.node),
                        their_at.saturating_add(g.offset)
                    )
                })
        }
        _ => Some(mismatch(path, (ours, at), (theirs, their_at))),
    }
}

// The tests derive their types, as users do.
#[cfg(all(test, feature = "derive"))]
mod tests {
    use super::*;

    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, crate::Message)]
    #[repr(C)]
    struct Inner {
        x: u32,
        y: [u16; 2],
    }

    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, crate::Message)]
    #[repr(C)]
    struct Outer {
        id: u64,
        inner: Inner,
    }

    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, crate::Message)]
    #[repr(C)]
    struct Pair(u32, f32);

    #[test]
    fn primitives_and_arrays_encode_by_name() {
        assert_eq!(u64::schema().canonical(), "u64");
        assert_eq!(<[[i8; 3]; 2]>::schema().canonical(), "[[i8;3];2]");
        assert_eq!(<[f32; 4]>::schema().type_name(), "[f32; 4]");
        assert_eq!(<[f32; 4]>::schema().size(), 16);
    }

    #[test]
    fn structs_encode_fields_with_offsets_and_nest_inline() {
        assert_eq!(
            Outer::schema().canonical(),
            "{id@0:u64;inner@8:{x@0:u32;y@4:[u16;2]}}"
        );
        assert_eq!(Pair::schema().canonical(), "{0@0:u32;1@4:f32}");
        assert_eq!(Outer::schema().type_name(), "Outer");
        assert_eq!(
            Outer::schema().to_string(),
            "Outer { id: u64 @0, inner: Inner { x: u32 @0, y: [u16; 2] @4 } @8 }"
        );
        Outer::schema().check().unwrap();
    }

    #[test]
    fn equality_ignores_the_struct_name() {
        let a = Schema::structure("a::Q", 8, 8, vec![Field::new("v", 0, u64::schema())]);
        let b = Schema::structure("b::R", 8, 8, vec![Field::new("v", 0, u64::schema())]);
        let c = Schema::structure("a::Q", 8, 8, vec![Field::new("w", 0, u64::schema())]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.type_name(), "Q");
    }

    #[test]
    fn encodings_round_trip_through_the_decoder() {
        for text in [
            Outer::schema().canonical(),
            Pair::schema().canonical(),
            "{}".into(),
            "[u8;0]".into(),
        ] {
            let node = parse(text.as_bytes()).unwrap();
            assert!(!matches!(node, Node::Bytes));
        }
        assert_eq!(parse(b"bytes"), Ok(Node::Bytes));
    }

    #[test]
    fn check_rejects_schemas_that_cannot_describe_a_pod_type() {
        let field = |n: &str, off| Field::new(n, off, u32::schema());
        let gap = Schema::structure("G", 12, 4, vec![field("a", 0), field("b", 8)]);
        assert!(gap.check().unwrap_err().contains("offset order"));
        let short = Schema::structure("S", 8, 4, vec![field("a", 0)]);
        assert!(short.check().unwrap_err().contains("cover 4 of its 8"));
        let twice = Schema::structure("T", 8, 4, vec![field("a", 0), field("a", 4)]);
        assert!(twice.check().unwrap_err().contains("twice"));
        let bad_name = Schema::structure("B", 4, 4, vec![field("a;b", 0)]);
        assert!(bad_name.check().unwrap_err().contains("names are"));
        let mut deep = u8::schema();
        for _ in 0..=MAX_DEPTH {
            deep = Schema::array(deep, 1);
        }
        assert!(deep.check().unwrap_err().contains("nested"));
        let huge = Schema::array(Schema::array(u64::schema(), usize::MAX / 4), 8);
        assert!(huge.check().unwrap_err().contains("overflows"));
    }

    #[test]
    fn the_decoder_rejects_garbage_without_panicking() {
        let bad: &[&[u8]] = &[
            b"",
            b"{",
            b"}",
            b"[u8;",
            b"[u8;01]",
            b"[u8;99999999999999999999999]",
            b"{a@0:u8",
            b"{a@0:u8;}",
            b"{@0:u8}",
            b"{a@:u8}",
            b"u8 ",
            b"\xff\xfe",
            b"{a@0:u8}}",
        ];
        for text in bad {
            assert!(
                parse(text).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(text)
            );
        }
        let deep = format!("{}u8{}", "[".repeat(1_000), ";1]".repeat(1_000));
        assert!(parse(deep.as_bytes()).unwrap_err().contains("nested"));
        let long = vec![b'a'; MAX_SCHEMA_LEN + 1];
        assert!(parse(&long).unwrap_err().contains("bound"));
        // Every prefix and every single-byte corruption of a valid text.
        let good = Outer::schema().canonical().into_bytes();
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
            let _ = first_difference(&good, &good[..cut]);
            for b in [
                0u8, b'{', b'}', b'[', b']', b';', b'@', b':', b'9', b'x', 0xff,
            ] {
                let mut bent = good.clone();
                bent[cut] = b;
                let _ = first_difference(&good, &bent);
            }
        }
    }

    fn first(ours: &str, theirs: &str) -> String {
        first_difference(ours.as_bytes(), theirs.as_bytes()).expect("a difference")
    }

    #[test]
    fn first_difference_names_the_field() {
        assert_eq!(first_difference(b"u64", b"u64"), None);
        assert_eq!(
            first("{px@0:f64;qty@8:u64}", "{qty@0:u64;px@8:f64}"),
            "field `px`: f64 at offset 0 here, f64 at offset 8 in the object"
        );
        assert_eq!(
            first("{px@0:f64;qty@8:u64}", "{px@0:u64;qty@8:u64}"),
            "field `px`: f64 at offset 0 here, u64 at offset 0 in the object"
        );
        assert_eq!(
            first("{price@0:f64;qty@8:u64}", "{px@0:f64;qty@8:u64}"),
            "field `price`: f64 at offset 0 here, missing in the object (it has `px`: f64 there)"
        );
        assert_eq!(
            first("{a@0:u32}", "{a@0:u32;b@4:u32}"),
            "field `b`: missing here, u32 at offset 4 in the object"
        );
        assert_eq!(
            first(
                "{id@0:u64;outer@8:{k@0:u32;inner@4:{x@0:u32}}}",
                "{id@0:u64;outer@8:{k@0:u32;inner@4:{x@0:i32}}}"
            ),
            "field `outer.inner.x`: u32 at offset 12 here, i32 at offset 12 in the object"
        );
        assert_eq!(
            first("{v@0:[u8;4]}", "{v@0:[u8;8]}"),
            "field `v`: [u8; 4] at offset 0 here, [u8; 8] at offset 0 in the object"
        );
        assert_eq!(
            first("{legs@0:[{a@0:u8};2]}", "{legs@0:[{b@0:u8};2]}"),
            "field `legs[].a`: u8 at offset 0 here, missing in the object (it has `legs[].b`: u8 there)"
        );
        assert_eq!(first("u64", "f64"), "payload: u64 here, f64 in the object");
        assert_eq!(first("u64", "bytes"), "the object's payload is bytes");
        assert_eq!(
            first("bytes", "[u8;4]"),
            "the object's payload is [u8; 4], not bytes"
        );
        assert!(first("u64", "{").starts_with("the object's payload schema is unreadable"));
    }

    #[test]
    fn long_types_are_cut_in_messages() {
        let fields: Vec<String> = (0..40).map(|i| format!("f{i}@{i}:u8")).collect();
        let theirs = format!("{{{}}}", fields.join(";"));
        let msg = first("u64", &theirs);
        assert!(msg.ends_with("… in the object"), "{msg}");
        assert!(msg.len() < 120, "{msg}");
    }

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(short_type_name("a::b::Msg"), "Msg");
        assert_eq!(
            short_type_name("a::Wrap<b::c::D, [u64; 2]>"),
            "Wrap<D, [u64; 2]>"
        );
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(short_type_name("(x::A, y::B)"), "(A, B)");
    }
}

// --- schemas known only at run time --------------------------------------------------

impl Schema {
    /// Decodes [canonical text](Schema::canonical) (for instance the
    /// [`payload_schema`](crate::SegmentInfo::payload_schema) an object stores, or one
    /// received from another host) into a schema with the same canonical text, so the
    /// same [`canonical_hash`](Schema::canonical_hash).
    ///
    /// Struct type names are not part of the text: decoded structs are named `struct`.
    /// A struct's size is the end of its last field and its alignment the largest of
    /// its fields' (a `Pod` struct has no padding).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for text that is not a
    /// canonical schema (including `bytes`, the identity of untyped byte objects, which
    /// describes no fixed-size payload), names an unknown primitive, or describes a
    /// layout [`Message`] types cannot have (gaps, overlaps, out-of-order fields).
    pub fn from_canonical(text: &str) -> crate::Result<Schema> {
        let bad = |why: String| {
            crate::Error::InvalidArgument(format!("payload schema {:?}: {why}", render_text(text)))
        };
        let node = parse(text.as_bytes()).map_err(bad)?;
        let schema = schema_of(&node).map_err(bad)?;
        schema.check().map_err(bad)?;
        if schema.canonical() != text {
            return Err(bad("not in canonical form".to_owned()));
        }
        Ok(schema)
    }
}

/// The payload of the object in `seg`, for a handle that does not know its type: the
/// schema the segment stores (decoded, keeping the segment's type name for messages)
/// and the alignment, from the schema's up to [`OBJECT_ALIGN`], whose slot shape
/// `fits(size, align)` the object's slots (an over-aligned struct is aligned above its
/// fields').
///
/// # Errors
/// [`Error::Corrupted`](crate::Error::Corrupted) if the stored schema is unreadable or
/// disagrees with the payload size; [`Error::LayoutMismatch`](crate::Error::LayoutMismatch)
/// if no alignment fits.
pub(crate) fn stored_payload(
    seg: &crate::segment::Segment,
    fits: impl Fn(usize, usize) -> bool,
) -> crate::Result<(Schema, usize)> {
    use crate::segment::layout::OBJECT_ALIGN;
    let info = seg.info();
    let name = seg.name();
    let schema = Schema::from_canonical(&info.payload_schema)
        .map_err(|e| crate::Error::corrupted(name, format!("stored payload schema: {e}")))?;
    let size = info.payload_size as usize;
    if schema.size() != size {
        return Err(crate::Error::corrupted(
            name,
            format!(
                "the stored schema describes {} bytes, the payload is {size}",
                schema.size()
            ),
        ));
    }
    let align = (schema.align()..=OBJECT_ALIGN)
        .filter(|a| a.is_power_of_two())
        .find(|&a| fits(size, a))
        .ok_or_else(|| crate::Error::LayoutMismatch {
            name: name.to_owned(),
            detail: format!("no alignment of {size}-byte payloads matches the object's slots"),
        })?;
    let schema = match schema {
        Schema::Struct {
            size,
            align,
            fields,
            ..
        } => Schema::Struct {
            name: info.payload_type.clone(),
            size,
            align,
            fields,
        },
        other => other,
    };
    Ok((schema, align))
}

/// At most [`RENDER_LEN`] characters of untrusted text, for messages.
fn render_text(text: &str) -> String {
    match text.char_indices().nth(RENDER_LEN) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The schema a decoded node describes. Recursion is bounded by the parser's depth.
fn schema_of(node: &Node<'_>) -> Result<Schema, String> {
    Ok(match node {
        Node::Bytes => return Err("`bytes` describes byte messages, not a payload type".into()),
        Node::Primitive(name) => primitive_schema(name)?,
        Node::Array(element, len) => {
            let len = usize::try_from(*len).map_err(|_| format!("array of {len} elements"))?;
            let element = schema_of(element)?;
            if element.size().checked_mul(len).is_none() {
                return Err(format!("array of {len} elements overflows"));
            }
            Schema::array(element, len)
        }
        Node::Struct(nodes) => {
            let mut fields = Vec::with_capacity(nodes.len());
            let (mut size, mut align) = (0usize, 1usize);
            for f in nodes {
                let schema = schema_of(&f.node)?;
                let offset =
                    usize::try_from(f.offset).map_err(|_| format!("offset {}", f.offset))?;
                size = offset
                    .checked_add(schema.size())
                    .ok_or_else(|| format!("field `{}` overflows", f.name))?;
                align = align.max(schema.align());
                fields.push(Field::new(f.name, offset, schema));
            }
            Schema::Struct {
                name: "struct".to_owned(),
                size,
                align,
                fields,
            }
        }
    })
}

fn primitive_schema(name: &str) -> Result<Schema, String> {
    macro_rules! lookup {
        ($($t:ident)*) => {
            match name {
                $(stringify!($t) => Ok(<$t as Message>::schema()),)*
                _ => Err(format!("unknown primitive type `{name}`")),
            }
        };
    }
    lookup!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64)
}
