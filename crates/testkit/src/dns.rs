//! A small authoritative DNS server on loopback (UDP) whose answers a test changes: the
//! wire format is hickory's, only the zone is this file's.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Zone {
    names: Mutex<HashMap<String, Vec<Ipv4Addr>>>,
    failing: AtomicBool,
    queries: AtomicUsize,
}

/// The DNS server. Names are absolute and lower case (`api.test.`).
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start() -> Self {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Zone::default());
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                z.queries.fetch_add(1, Ordering::Relaxed);
                let mut r = Message::response(q.metadata.id, q.metadata.op_code);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.authoritative = true;
                let mut known = true;
                for query in &q.queries {
                    r.add_query(query.clone());
                    let name = query.name().to_ascii().to_ascii_lowercase();
                    let names = z.names.lock().unwrap();
                    match names.get(&name) {
                        Some(ips) if query.query_type() == RecordType::A => {
                            for ip in ips {
                                r.add_answer(Record::from_rdata(
                                    query.name().clone(),
                                    1,
                                    RData::A(A(*ip)),
                                ));
                            }
                        }
                        Some(_) => {}
                        None => known = false,
                    }
                }
                if z.failing.load(Ordering::Relaxed) {
                    r.metadata.response_code = ResponseCode::ServFail;
                    r.answers.clear();
                } else if !known {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
                if let Ok(bytes) = r.to_vec() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, zone, task }
    }

    /// Answer `name` with these addresses from now on.
    pub fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        self.zone
            .names
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), ips.to_vec());
    }

    /// Answer every query with SERVFAIL (`true`) or normally again.
    pub fn fail(&self, failing: bool) {
        self.zone.failing.store(failing, Ordering::Relaxed);
    }

    /// Queries answered so far.
    pub fn queries(&self) -> usize {
        self.zone.queries.load(Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
