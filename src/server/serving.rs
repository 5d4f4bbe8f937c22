//! Serving threads: the gRPC listeners' connections, each kept on one thread.
//!
//! Each serving thread runs its own single-threaded runtime and accepts from the same
//! listening socket, so a connection, its HTTP/2 connection task and every stream on it (a
//! watch is one stream) live on one thread. With the watch bells ([`crate::watch::bell`]),
//! which wake a thread's streams in one go on that thread, a commit's frames for a connection
//! are all queued before the connection task writes, and it writes them together. On tokio's
//! work-stealing runtime a connection's streams ran on every worker while its connection task
//! flushed after a frame or two: at 10,000 subscribers on three nodes sharing two cores that
//! was ~13,000 socket writes per change and ~1.7x the CPU of one thread per node, with twice
//! its p99 lag (`perf`: thread parking and `writev`); now ~600 writes, as with one thread.
//! Several threads still use several cores: connections spread over them.
//!
//! The rest of the node (Raft, storage, the apply loop, the HTTP listener) stays on the
//! process's runtime.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};

/// Where the serving threads are in their shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Stop accepting; let calls in progress finish.
    Draining,
    /// Close every connection now.
    Closing,
}

/// The serving threads of one node.
pub(crate) struct Serving {
    phase: watch::Sender<Phase>,
    done: Vec<oneshot::Receiver<()>>,
}

/// The signal a server run by [`Serving::start`] stops accepting on.
pub(crate) struct Drain(watch::Receiver<Phase>);

impl Drain {
    /// Completes once the node begins to shut down (or is dropped without shutting down).
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|p| *p >= Phase::Draining).await;
    }
}

/// How many serving threads by default: one per core this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Serving {
    /// Starts `threads` serving threads for `listener`, each running `serve(listener, drain)`
    /// on its own clone of the listening socket until `drain` completes and the server's
    /// connections have closed (or [`Serving::shutdown`] closes them).
    pub(crate) fn start<F, Fut>(
        name: &str,
        listener: TcpListener,
        threads: usize,
        serve: F,
    ) -> Result<Serving>
    where
        F: Fn(TcpListener, Drain) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let listener = listener
            .into_std()
            .map_err(|e| Error::internal(format!("listener for the serving threads: {e}")))?;
        let (phase, _) = watch::channel(Phase::Serving);
        let mut serving = Serving {
            phase,
            done: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let socket = listener
                .try_clone()
                .map_err(|e| Error::internal(format!("listener for serving thread {i}: {e}")))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::internal(format!("runtime of serving thread {i}: {e}")))?;
            let (done, finished) = oneshot::channel();
            let mut phase = serving.phase.subscribe();
            let drain = Drain(serving.phase.subscribe());
            let serve = serve.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match TcpListener::from_std(socket) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(error = %e, "a serving thread cannot use the listener");
                                return;
                            }
                        };
                        tokio::select! {
                            () = serve(listener, drain) => {}
                            // Closing, or the node was dropped without a shutdown.
                            _ = phase.wait_for(|p| *p == Phase::Closing) => {}
                        }
                    });
                    // Dropping the runtime drops every connection still open on it.
                    runtime.shutdown_timeout(Duration::from_millis(100));
                    let _ = done.send(());
                })
                .map_err(|e| Error::internal(format!("starting serving thread {i}: {e}")))?;
            serving.done.push(finished);
        }
        Ok(serving)
    }

    /// Stops accepting; calls in progress may go on.
    pub(crate) fn drain(&self) {
        self.phase.send_replace(Phase::Draining);
    }

    /// Waits up to `grace` for the connections to close, then closes those still open.
    /// Returns whether it had to close some.
    pub(crate) async fn shutdown(&mut self, grace: Duration) -> bool {
        self.drain();
        // Each thread's end is awaited once (a finished receiver must not be polled again).
        let mut done = futures::future::join_all(std::mem::take(&mut self.done));
        if tokio::time::timeout(grace, &mut done).await.is_ok() {
            return false;
        }
        self.phase.send_replace(Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
        true
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Closing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections land on the serving threads, each served until shutdown closes them.
    #[tokio::test]
    async fn threads_serve_until_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut serving = Serving::start("test-serving", listener, 2, |listener, drain| async move {
            let accept = async {
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(async move {
                        let name = std::thread::current().name().unwrap_or("").to_string();
                        let _ = conn.write_all(name.as_bytes()).await;
                        // Held open until the runtime drops it.
                        let mut buf = [0u8; 1];
                        let _ = conn.read(&mut buf).await;
                    });
                }
            };
            tokio::select! {
                () = accept => {}
                () = drain.wait() => std::future::pending::<()>().await,
            }
        })
        .unwrap();
        let mut conns = Vec::new();
        for _ in 0..8 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 16];
            let n = c.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("test-serving-"));
            conns.push(c);
        }
        // The server never ends by itself here: shutdown closes its connections.
        assert!(serving.shutdown(Duration::from_millis(200)).await);
        for mut c in conns {
            let mut buf = [0u8; 1];
            assert_eq!(c.read(&mut buf).await.unwrap(), 0, "the connection was closed");
        }
    }

    /// One thread done within the grace, another not: shutdown closes the other (and waits
    /// for each thread's end only once).
    #[tokio::test]
    async fn shutdown_closes_what_outlives_the_grace() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let mut serving = Serving::start("test-grace", listener, 2, move |_listener, drain| {
            let first = started.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                drain.wait().await;
                if !first {
                    // A connection that does not finish.
                    std::future::pending::<()>().await;
                }
            }
        })
        .unwrap();
        let began = std::time::Instant::now();
        assert!(
            serving.shutdown(Duration::from_millis(200)).await,
            "one had to be closed"
        );
        assert!(began.elapsed() < Duration::from_secs(2));
    }
}
