//! One connection policy for the HTTP server, so that nobody who reaches the port can hold it:
//!
//! - HTTP/1.1 only: no protocol sniffing (which read without a timeout) and no HTTP/2.
//! - Every state a connection can wait in has a timeout: the TLS handshake, the request
//!   headers, and the idle time between keep-alive requests (`web.header_read_timeout_seconds`;
//!   hyper restarts that timer whenever it waits for the next request's head).
//! - Request headers are bounded per connection (`MAX_HEADER_BYTES`).
//! - At most `web.max_connections` are open. A new connection over the limit closes the one
//!   that has been idle longest (no request being answered), so a scrape still gets in while a
//!   client holds every other connection; an accept that fails for want of file descriptors
//!   does the same.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Request-head bytes a connection may buffer (hyper's read buffer): a few headers of a
/// scrape need far less; hyper's floor is 8 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long a stopping server waits for the requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub max_connections: usize,
    /// TLS handshake, request headers, and keep-alive idle time.
    pub read_timeout: Duration,
}

/// One open connection, as the table sees it.
struct Slot {
    /// Requests being answered on it (their response bodies included).
    busy: AtomicUsize,
    /// Since when it has had no request in flight.
    idle_since: Mutex<Instant>,
    /// Told to close: evicted for a newer connection, or the server stops.
    close: Notify,
}

/// A request in flight on a connection, from its head until its response body is sent or
/// dropped (a handler cancelled with its connection ends it too).
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Table {
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
    next: AtomicUsize,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection idle longest; false when every one is answering a request.
    fn evict_idlest(&self) -> bool {
        let mut slots = self.lock();
        let idlest = slots
            .iter()
            .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, s)| *s.idle_since.lock().unwrap_or_else(|e| e.into_inner()))
            .map(|(id, _)| *id);
        match idlest.and_then(|id| slots.remove(&id)) {
            Some(slot) => {
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn admit(&self, max: usize) -> (u64, Arc<Slot>) {
        if self.lock().len() >= max {
            // Every connection busy: admitted above the limit; requests end quickly and the
            // scrape slots (web.max_requests) bound the slow ones.
            self.evict_idlest();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close: Notify::new(),
        });
        self.lock().insert(id, slot.clone());
        (id, slot)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn close_all(&self) {
        for s in std::mem::take(&mut *self.lock()).into_values() {
            s.close.notify_one();
        }
    }
}

/// A response body that keeps its connection counted busy until it is sent or dropped.
struct Counted {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `app` on `listener` under `policy` until `stop` completes, then lets the requests
/// in flight finish (up to 5 s).
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    app: Router,
    policy: Policy,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let table = Arc::new(Table::default());
    let mut tasks = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connection tasks as we go.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_out_of_fds(&e) => {
                // Free a descriptor by closing the idlest connection; if none is idle, wait.
                let evicted = table.evict_idlest();
                tracing::warn!(target: "web", event = "accept_failed", error = %e, evicted, "out of file descriptors");
                if !evicted {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(target: "web", event = "accept_failed", error = %e);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, slot) = table.admit(policy.max_connections);
        let (table, tls, app) = (table.clone(), tls.clone(), app.clone());
        tasks.spawn(async move {
            connection(stream, peer, tls, app, policy, slot).await;
            table.remove(id);
        });
    }
    drop(listener);
    table.close_all();
    let _ = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

fn is_out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    app: Router,
    policy: Policy,
    slot: Arc<Slot>,
) {
    match tls {
        None => http1(stream, peer, app, policy, slot).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.get_inner());
            let handshake = tokio::select! {
                _ = slot.close.notified() => return,
                r = tokio::time::timeout(policy.read_timeout, acceptor.accept(stream)) => r,
            };
            match handshake {
                Ok(Ok(stream)) => http1(stream, peer, app, policy, slot).await,
                Ok(Err(e)) => {
                    tracing::debug!(target: "web", event = "tls_handshake_failed", error = %e)
                }
                Err(_) => tracing::debug!(target: "web", event = "tls_handshake_timeout"),
            }
        }
    }
}

async fn http1<I>(io: I, peer: std::net::SocketAddr, app: Router, policy: Policy, slot: Arc<Slot>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let slot = slot.clone();
        hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let (app, busy) = (app.clone(), Busy::new(slot.clone()));
            // The peer, for handlers that tell clients apart (the bcrypt scheduler).
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            async move {
                let response: Response = match app.oneshot(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                Ok::<_, Infallible>(response.map(|body| Counted { body, _busy: busy }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(policy.read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(target: "web", event = "connection_error", error = %e);
            }
        }
        _ = slot.close.notified() => {
            // Evicted or the server stops: an idle connection (or one still sending its
            // head) has nothing to lose; a request in flight is finished first.
            if slot.busy.load(Ordering::Acquire) > 0 {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, conn).await;
            }
        }
    }
}
