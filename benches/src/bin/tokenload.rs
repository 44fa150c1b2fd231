//! Load with many distinct access tokens, which `oha` cannot do (its headers are fixed):
//! keep-alive HTTP/1.1 over mutual TLS, each request carrying `Authorization: Bearer
//! <prefix>-<i>`.
//!
//! ```text
//! tokenload prime URL N      # every token 0..N once (each a cache miss: fills the cache)
//! tokenload load URL N SECS  # uniformly random tokens from 0..N for SECS seconds
//! ```
//! Environment: `CERT_DIR` (ca.pem, client.pem, client.key), `CONNS` (64),
//! `TOKEN_PREFIX` (`tok`). Prints one tab-separated line:
//! `mode tokens requests secs rps p50_ms p99_ms non_200`.

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVersion};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, BoxError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("the URL must be https://")?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = hostport.rsplit_once(':').ok_or("the URL needs a port")?;
    Ok(Target {
        host: host.to_owned(),
        port: port.parse()?,
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    })
}

/// Tokens for one connection: in `prime` mode its share of 0..n in order, else random.
enum Tokens {
    Sequence { next: u64, end: u64, step: u64 },
    Random { state: u64, n: u64 },
}

impl Tokens {
    fn next(&mut self) -> Option<u64> {
        match self {
            Tokens::Sequence { next, end, step } => {
                let i = *next;
                *next += *step;
                (i < *end).then_some(i)
            }
            Tokens::Random { state, n } => {
                // xorshift64*: uniform enough for picking cache entries
                *state ^= *state >> 12;
                *state ^= *state << 25;
                *state ^= *state >> 27;
                Some(state.wrapping_mul(0x2545_F491_4F6C_DD1D) % *n)
            }
        }
    }
}

struct Stats {
    latencies_us: Vec<u32>,
    non_200: u64,
}

async fn connection(
    connector: SslConnector,
    target: Arc<Target>,
    prefix: Arc<str>,
    mut tokens: Tokens,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Result<Stats, BoxError> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    let ssl = connector.configure()?.into_ssl(&target.host)?;
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp)?;
    std::pin::Pin::new(&mut tls).connect().await?;
    let mut stats = Stats {
        latencies_us: Vec::with_capacity(1 << 16),
        non_200: 0,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut req = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        let Some(i) = tokens.next() else { break };
        req.clear();
        req.extend_from_slice(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {prefix}-{i}\r\n\r\n",
                target.path, target.host
            )
            .as_bytes(),
        );
        let t0 = Instant::now();
        tls.write_all(&req).await?;
        // read the head, then Content-Length bytes of body
        let mut have = 0;
        let head_end = loop {
            let n = tls.read(&mut buf[have..]).await?;
            if n == 0 {
                return Err("connection closed mid-response".into());
            }
            have += n;
            if let Some(p) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if have == buf.len() {
                return Err("response head too large".into());
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])?;
        let ok = head.get(9..12).ok_or("bad status line")? == "200";
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or("responses must carry Content-Length")?;
        let mut body_have = have - head_end;
        while body_have < len {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                return Err("connection closed mid-body".into());
            }
            body_have += n;
        }
        let us = t0.elapsed().as_micros();
        stats
            .latencies_us
            .push(u32::try_from(us).unwrap_or(u32::MAX));
        if !ok {
            stats.non_200 += 1;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(stats)
}

fn connector() -> Result<SslConnector, BoxError> {
    let dir = std::env::var("CERT_DIR").map_err(|_| "set CERT_DIR")?;
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_ca_file(format!("{dir}/ca.pem"))?;
    b.set_certificate_chain_file(format!("{dir}/client.pem"))?;
    b.set_private_key_file(format!("{dir}/client.key"), SslFiletype::PEM)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_groups_list("X25519")?;
    Ok(b.build())
}

async fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tokenload prime URL N | tokenload load URL N SECS";
    let mode = args.first().ok_or(usage)?.clone();
    let target = Arc::new(parse_url(args.get(1).ok_or(usage)?)?);
    let n: u64 = args.get(2).ok_or(usage)?.parse()?;
    let secs: u64 = match mode.as_str() {
        "prime" => 0,
        "load" => args.get(3).ok_or(usage)?.parse()?,
        _ => return Err(usage.into()),
    };
    let conns: u64 = std::env::var("CONNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let prefix: Arc<str> = std::env::var("TOKEN_PREFIX")
        .unwrap_or_else(|_| "tok".into())
        .into();
    let connector = connector()?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let tokens = if mode == "prime" {
            Tokens::Sequence {
                next: c,
                end: n,
                step: conns,
            }
        } else {
            Tokens::Random {
                state: 0x9E37_79B9_7F4A_7C15 ^ (c + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                n,
            }
        };
        tasks.push(tokio::spawn(connection(
            connector.clone(),
            target.clone(),
            prefix.clone(),
            tokens,
            stop.clone(),
            done.clone(),
        )));
    }
    if secs > 0 {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut latencies = Vec::new();
    let mut non_200 = 0;
    for t in tasks {
        let s = t.await??;
        latencies.extend(s.latencies_us);
        non_200 += s.non_200;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let reqs = latencies.len();
    println!(
        "{mode}\t{n}\t{reqs}\t{elapsed:.1}\t{:.0}\t{:.2}\t{:.2}\t{non_200}",
        reqs as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenload: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenload: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
