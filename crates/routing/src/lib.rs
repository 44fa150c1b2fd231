//! What the router decides on is what the upstream receives: the request target made
//! canonical once ([`normalize_path`], [`normalize_host`]) and the route table that
//! matches on it ([`RouteKey`], [`select`]).
#![forbid(unsafe_code)]

mod table;
mod target;

pub use table::{select, RouteKey, RouteRequest};
pub use target::{
    host_name, normalize_host, normalize_path, normalize_path_keeping_encoded_slashes,
    normalize_query, split_target, SplitTarget, TargetError,
};

#[cfg(test)]
mod tests;
