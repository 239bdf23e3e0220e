//! Tunnels for upgraded connections (WebSocket and other `Upgrade`s): once
//! both sides have switched protocols, bytes are copied both ways until
//! either side closes.

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use super::slots::Slot;

/// Joins the client's and the origin's upgraded connections in a task.
/// The origin slot is given back once the tunnel stands: a long-lived
/// WebSocket should not hold one of the origin's request slots.
pub fn tunnel(client: OnUpgrade, origin: OnUpgrade, slot: Slot) {
    tokio::spawn(async move {
        let joined = tokio::try_join!(client, origin);
        drop(slot);
        match joined {
            Ok((c, o)) => {
                let (mut c, mut o): (TokioIo<Upgraded>, TokioIo<Upgraded>) =
                    (TokioIo::new(c), TokioIo::new(o));
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut o).await {
                    tracing::debug!(error = %e, "upgraded tunnel ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
    });
}
