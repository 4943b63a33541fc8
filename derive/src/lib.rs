//! `#[derive(Message)]` for tally-ipc payload types.
//!
//! Use it through the library, as `#[derive(tally::Message)]` (feature `derive`, on by
//! default); the generated code names `::tally`. See the `tally::Message` trait for
//! what the schema holds and what tally compares.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, parse_macro_input, parse_quote};

/// Derives `tally::Message` for a struct with named fields or a tuple struct.
///
/// The schema lists every field in declaration order with its name (tuple fields are
/// `0`, `1`, ...), its offset (`core::mem::offset_of!`) and its type's own schema, so
/// every field type must implement `tally::Message` too (primitives and arrays do;
/// derive it on nested structs). Each type parameter gets a `tally::Message` bound.
/// The struct must also be `bytemuck::Pod`, the trait's supertrait.
///
/// ```
/// use bytemuck::{Pod, Zeroable};
///
/// #[derive(Clone, Copy, Pod, Zeroable, tally::Message)]
/// #[repr(C)]
/// struct Level {
///     px: f64,
///     qty: u64,
/// }
///
/// #[derive(Clone, Copy, Pod, Zeroable, tally::Message)]
/// #[repr(C)]
/// struct Book {
///     seq: u64,
///     bids: [Level; 4],
/// }
///
/// use tally::Message;
/// assert_eq!(
///     Book::schema().canonical(),
///     "{seq@0:u64;bids@8:[{px@0:f64;qty@8:u64};4]}"
/// );
/// ```
///
/// Enums and unions are refused at compile time: their bytes do not say which variant
/// or member they hold. Describe a union by hand (`impl tally::Message`) as the byte
/// array it is, if it must travel.
///
/// ```compile_fail
/// #[derive(tally::Message)]
/// enum Side {
///     Buy,
///     Sell,
/// }
/// ```
#[proc_macro_derive(Message)]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input).into()
}

fn expand(mut input: DeriveInput) -> TokenStream2 {
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            return error(
                e.enum_token.span(),
                "#[derive(tally::Message)] is for structs: an enum's bytes do not say which variant they hold",
            );
        }
        Data::Union(u) => {
            return error(
                u.union_token.span(),
                "#[derive(tally::Message)] is for structs: a union's bytes do not say which member they hold; implement tally::Message by hand as a byte array",
            );
        }
    };
    let entries: Vec<TokenStream2> = match fields {
        Fields::Named(named) => named
            .named
            .iter()
            .map(|f| {
                let ident = f.ident.as_ref().expect("named fields have names");
                let name = ident.unraw().to_string();
                field_entry(&name, quote!(#ident), &f.ty)
            })
            .collect(),
        Fields::Unnamed(unnamed) => unnamed
            .unnamed
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let index = syn::Index::from(i);
                field_entry(&i.to_string(), quote!(#index), &f.ty)
            })
            .collect(),
        Fields::Unit => Vec::new(),
    };
    let type_params: Vec<syn::Ident> = input
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .collect();
    let where_clause = input.generics.make_where_clause();
    for param in type_params {
        where_clause
            .predicates
            .push(parse_quote!(#param: ::tally::Message));
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        // The added `Message` bounds may sit beside the user's own.
        #[allow(clippy::multiple_bound_locations)]
        impl #impl_generics ::tally::Message for #ident #ty_generics #where_clause {
            fn schema() -> ::tally::Schema {
                ::tally::Schema::structure(
                    ::core::any::type_name::<Self>(),
                    ::core::mem::size_of::<Self>(),
                    ::core::mem::align_of::<Self>(),
                    ::std::vec![#(#entries),*],
                )
            }
        }
    }
}

fn field_entry(name: &str, member: TokenStream2, ty: &syn::Type) -> TokenStream2 {
    quote_spanned! {ty.span()=>
        ::tally::Field::new(
            #name,
            ::core::mem::offset_of!(Self, #member),
            <#ty as ::tally::Message>::schema(),
        )
    }
}

fn error(span: proc_macro2::Span, message: &str) -> TokenStream2 {
    quote_spanned! {span=> ::core::compile_error!(#message); }
}
