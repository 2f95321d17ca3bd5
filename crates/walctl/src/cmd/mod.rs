//! The log subcommands (everything but `bench`).

pub mod dump;
pub mod etcd;
pub mod inspect;
pub mod list;
pub mod repair;
pub mod tail;
pub mod verify;
