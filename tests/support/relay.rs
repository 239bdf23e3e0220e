//! A TCP relay on 127.0.0.1 whose backend can be switched: the address a
//! managed Redis or a virtual IP keeps across a failover. `switch` closes
//! every relayed connection and sends new ones to the new backend, so a
//! client that reconnects by itself lands on the promoted replica.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Relay {
    pub port: u16,
    target: Arc<AtomicU16>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    pub async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let to = Arc::new(AtomicU16::new(target));
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (to2, open2) = (to.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let port = to2.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open2.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay {
            port,
            target: to,
            open,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// New connections go to `port`; the open ones are closed.
    pub fn switch(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
        for t in self.open.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}
