//! `#[derive(Message)]` for tally-ipc payload types.
