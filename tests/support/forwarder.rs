//! A TCP forwarder with a target that can be switched: clients that take one address (such as
//! OpenFeature's flagd provider) are pointed at it, and a test moves it to another node, as a
//! load balancer would after a node is lost. Switching cuts the connections it carries.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

/// A running forwarder; it stops when dropped.
pub struct Forwarder {
    /// Where clients connect.
    pub addr: String,
    target: Arc<Mutex<String>>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Forwards a new loopback port to `target`.
    pub async fn start(target: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the forwarder");
        let addr = listener.local_addr().expect("forwarder address").to_string();
        let target = Arc::new(Mutex::new(target.to_string()));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (t, c) = (target.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.lock().clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut held = c.lock();
                held.retain(|h| !h.is_finished());
                held.push(task.abort_handle());
            }
        });
        Forwarder {
            addr,
            target,
            connections,
            accept,
        }
    }

    /// Sends new connections to `target` and cuts the current ones.
    pub fn switch_to(&self, target: &str) {
        *self.target.lock() = target.to_string();
        for c in self.connections.lock().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.connections.lock().drain(..) {
            c.abort();
        }
    }
}
