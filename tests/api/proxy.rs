//! `FaultProxy`: a small TCP proxy that sits between the app and Redis or PostgreSQL, so
//! tests inject faults (refused connections, cut connections, latency) without touching
//! the shared servers. It runs on its own thread and runtime, so a test that blocks its
//! own thread (a synchronous Diesel or Redis call through the proxy) cannot stall it.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, Default)]
struct State {
    refusing: bool,
    latency: Duration,
    /// Added to replies sent to the app on every connection but one that reads the
    /// invalidation log (`XREAD`): the app hears of an invalidation before it gets the
    /// answers to reads sent before it.
    reply_latency_but_log: Duration,
    /// Bumped by `cut`: connections opened under an older value are closed.
    cuts: u64,
    shutdown: bool,
}

pub struct FaultProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("proxy address");
        let (state, rx) = watch::channel(State::default());
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                // Returning drops the runtime, and with it every connection task.
                runtime.block_on(accept_loop(listener, upstream, rx));
            })
            .expect("proxy thread");
        Self {
            addr,
            state,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Normal service: new connections are forwarded, without added latency.
    pub fn pass(&self) {
        self.state.send_modify(|s| {
            s.refusing = false;
            s.latency = Duration::ZERO;
            s.reply_latency_but_log = Duration::ZERO;
        });
    }

    /// Same as `pass`.
    pub fn restore(&self) {
        self.pass();
    }

    /// New connections are accepted and closed at once; open ones keep working.
    pub fn refuse(&self) {
        self.state.send_modify(|s| s.refusing = true);
    }

    /// Delays replies by `delay` on every connection but the invalidation log's.
    pub fn delay_replies_but_the_log(&self, delay: Duration) {
        self.state.send_modify(|s| s.reply_latency_but_log = delay);
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.refusing = true;
            s.cuts += 1;
        });
    }

    /// Delays every chunk, in both directions, by `delay` (a round trip costs twice that).
    pub fn latency(&self, delay: Duration) {
        self.state.send_modify(|s| s.latency = delay);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.send_modify(|s| s.shutdown = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    mut rx: watch::Receiver<State>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() || rx.borrow().shutdown {
                    return;
                }
            }
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let state = *rx.borrow();
                if !state.refusing {
                    tokio::spawn(relay(client, upstream, rx.clone(), state.cuts));
                } // else: dropped, i.e. closed at once
            }
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, rx: watch::Receiver<State>, cuts: u64) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut cut = rx.clone();
    let log_reader = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::select! {
        _ = async {
            tokio::join!(
                forward(client_read, server_write, rx.clone(), Direction::Requests(log_reader.clone())),
                forward(server_read, client_write, rx, Direction::Replies(log_reader)),
            )
        } => {}
        // Returning drops both sockets: the app sees its connection die.
        _ = cut.wait_for(|s| s.cuts != cuts || s.shutdown) => {}
    }
}

/// Which way a `forward` copies, with the connection's mark: whether the app has sent an
/// `XREAD` on it (it reads the invalidation log).
enum Direction {
    Requests(std::sync::Arc<std::sync::atomic::AtomicBool>),
    Replies(std::sync::Arc<std::sync::atomic::AtomicBool>),
}

/// Copies one direction; each chunk is written `latency` after it was read, without
/// holding up the chunks behind it (latency, not a bandwidth limit).
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    rx: watch::Receiver<State>,
    direction: Direction,
) {
    use std::sync::atomic::Ordering;
    let (queue, mut chunks) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let state = *rx.borrow();
            let extra = match &direction {
                Direction::Requests(log_reader) => {
                    if buf[..n]
                        .windows(5)
                        .any(|w| w.eq_ignore_ascii_case(b"XREAD"))
                    {
                        log_reader.store(true, Ordering::Relaxed);
                    }
                    Duration::ZERO
                }
                Direction::Replies(log_reader) if !log_reader.load(Ordering::Relaxed) => {
                    state.reply_latency_but_log
                }
                Direction::Replies(_) => Duration::ZERO,
            };
            let due = Instant::now() + state.latency + extra;
            if queue.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = chunks.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port (the task ends with the test's runtime).
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` and reads the echo; `Err` when the connection is closed or fails.
    async fn round_trip(socket: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        socket.write_all(msg).await?;
        let mut got = vec![0; msg.len()];
        tokio::time::timeout(Duration::from_secs(2), socket.read_exact(&mut got))
            .await
            .map_err(|_| std::io::Error::other("echo timed out"))??;
        Ok(got)
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        TcpStream::connect(proxy.addr())
            .await
            .expect("proxy accepts")
    }

    #[tokio::test]
    async fn a_passing_proxy_forwards_both_ways() {
        let proxy = FaultProxy::start(echo_server().await);
        assert_eq!(proxy.port(), proxy.addr().port());
        let mut socket = connect(&proxy).await;
        assert_eq!(round_trip(&mut socket, b"hello").await.unwrap(), b"hello");
        assert_eq!(round_trip(&mut socket, b"again").await.unwrap(), b"again");
    }

    #[tokio::test]
    async fn refusing_closes_new_connections_but_keeps_open_ones() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"warm").await.unwrap();

        proxy.refuse();
        let mut refused = connect(&proxy).await;

        assert!(round_trip(&mut refused, b"x").await.is_err());
        assert_eq!(round_trip(&mut open, b"still").await.unwrap(), b"still");
        proxy.restore();
        let mut fresh = connect(&proxy).await;
        assert_eq!(round_trip(&mut fresh, b"back").await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn a_cut_closes_open_connections_and_refuses_new_ones_until_restored() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"warm").await.unwrap();

        proxy.cut();

        assert!(
            round_trip(&mut open, b"x").await.is_err(),
            "open one closed"
        );
        let mut new = connect(&proxy).await;
        assert!(round_trip(&mut new, b"x").await.is_err(), "new one refused");
        proxy.restore();
        let mut fresh = connect(&proxy).await;
        assert_eq!(round_trip(&mut fresh, b"back").await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn latency_delays_each_direction_and_restore_removes_it() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut socket = connect(&proxy).await;
        round_trip(&mut socket, b"warm").await.unwrap();

        proxy.latency(Duration::from_millis(100));
        let started = std::time::Instant::now();
        round_trip(&mut socket, b"slow").await.unwrap();
        let slow = started.elapsed();
        proxy.restore();
        let started = std::time::Instant::now();
        round_trip(&mut socket, b"fast").await.unwrap();
        let fast = started.elapsed();

        assert!(
            slow >= Duration::from_millis(200),
            "round trip took {slow:?}"
        );
        assert!(
            fast < Duration::from_millis(100),
            "round trip took {fast:?}"
        );
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections_and_its_port() {
        let proxy = FaultProxy::start(echo_server().await);
        let addr = proxy.addr();
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"warm").await.unwrap();

        drop(proxy);

        assert!(round_trip(&mut open, b"x").await.is_err());
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
