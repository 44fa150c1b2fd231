//! Listeners: how their addresses are laid out over proxy shards (one listening socket per
//! shard and address, `SO_REUSEPORT`, each with its own key for Pingora's socket table),
//! their TLS ([`tls`]: certificates per handshake, client certificates verified once per
//! connection, the leaf → chain table for resumed sessions) and their session tickets
//! ([`tickets`]: shared keys, the chain carried in a ticket).

pub mod tickets;
pub mod tls;

/// The address string shard `n` binds for a listener. Pingora keys listening sockets by
/// this string (to hand them to a new process on `--upgrade`), so each shard needs its own:
/// shard 0 uses the plain address, shard n pads the port with n leading zeros
/// (`127.0.0.1:08443`), which resolves to the same socket address.
pub(crate) fn shard_address(listen: std::net::SocketAddr, shard: usize) -> String {
    // the address as written for one socket (IPv6 brackets and scope id included)
    let plain = listen.to_string();
    let host = plain.rsplit_once(':').map_or(plain.as_str(), |(h, _)| h);
    format!("{host}:{}{}", "0".repeat(shard), listen.port())
}

#[cfg(test)]
mod shard_tests {
    use super::shard_address;
    use std::net::{SocketAddr, ToSocketAddrs};

    #[test]
    fn every_shard_address_resolves_to_the_listener_address() {
        for listen in [
            "127.0.0.1:8443",
            "[::1]:443",
            "[fe80::1%1]:8443",
            "0.0.0.0:65535",
        ] {
            let listen: SocketAddr = listen.parse().unwrap();
            let mut seen = std::collections::HashSet::new();
            for shard in 0..8 {
                let s = shard_address(listen, shard);
                if shard == 0 {
                    assert_eq!(
                        s,
                        listen.to_string(),
                        "shard 0 binds the address as written"
                    );
                }
                assert!(seen.insert(s.clone()), "distinct key per shard: {s}");
                // what Pingora does with the string before binding
                let resolved: Vec<SocketAddr> = s.to_socket_addrs().unwrap().collect();
                assert_eq!(resolved, vec![listen], "{s}");
            }
        }
    }
}
