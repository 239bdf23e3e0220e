//! The room with `[store]`: opening the store at start (the local line's
//! files, or the shared line in Redis), reserving ticket numbers on disk
//! before they are handed out, and writing the local snapshot.

use std::sync::Arc;

use super::backend::LineBackend;
use super::{
    before_opening, line_config, persist, shared, wall_ms, Prepared, Room, RoomError, State,
};
use crate::config::room::RoomConfig;
use crate::config::store::StoreConfig;
use crate::metrics::Metrics;
use crate::store::line::files::{LineFiles, LineFilesError, RESERVE_BLOCK};
use crate::tokens::event_id;

impl Room {
    /// A room whose line lives in `store` (in memory without one): the
    /// line, the active set and the rate resume from the last snapshot, and
    /// numbering resumes above the reserved mark.
    pub fn with_store(
        cfg: Option<&RoomConfig>,
        prepared: Prepared,
        metrics: Arc<Metrics>,
        store: Option<&StoreConfig>,
    ) -> Result<Room, RoomError> {
        let Some(store) = store else {
            return Ok(Room::new(cfg, prepared, metrics));
        };
        let dir = match store {
            StoreConfig::Local { state_dir } => state_dir,
            StoreConfig::Redis(r) => {
                let default = RoomConfig::defaults();
                let c = cfg.unwrap_or(&default);
                let sh = shared::Shared::new(r, &c.event, c, metrics.room.store_up.clone())
                    .map_err(RoomError::Shared)?;
                let mut room = Room::new(cfg, prepared, metrics);
                room.backend = LineBackend::Redis(Box::new(sh));
                return Ok(room);
            }
        };
        let files = LineFiles::open(dir)?;
        let default = RoomConfig::defaults();
        let c = cfg.unwrap_or(&default);
        let prequeue = before_opening(c, wall_ms());
        let resumed =
            persist::resume(&files, event_id(&c.event), line_config(c, c.mode), prequeue)?;
        Ok(Room::build(cfg, prepared, metrics, Some((files, resumed))))
    }

    /// Makes sure the next ticket number is reserved on disk (durable
    /// store only; one fsync per [`RESERVE_BLOCK`] tickets). False when it
    /// cannot be: no ticket is issued rather than risk a number twice.
    pub(super) fn reserve(&self, s: &mut State) -> bool {
        let Some(files) = self.files() else {
            return true;
        };
        if !s.reserved_ok {
            return false;
        }
        let issued = s.line.issued();
        if issued < s.reserved {
            return true;
        }
        let to = issued + RESERVE_BLOCK;
        match files.reserve(s.event_id, to) {
            Ok(()) => {
                s.reserved = to;
                true
            }
            Err(e) => {
                tracing::error!("cannot reserve ticket numbers, no new ticket is issued: {e}");
                false
            }
        }
    }

    /// Writes the line's snapshot (durable store only): every second from
    /// the admission task, and at shutdown. The copy is taken under the
    /// lock; the write and fsync happen outside it.
    pub fn persist(&self) -> Result<(), LineFilesError> {
        let Some(files) = self.files() else {
            return Ok(());
        };
        let now = self.now_ms();
        let s = self.lock();
        let bytes = persist::encode(now, &s.line, &s.active, &s.rate);
        let event = s.event_id;
        drop(s);
        files.write_snapshot(event, &bytes)
    }

    /// Whether the line is kept on disk.
    pub fn is_durable(&self) -> bool {
        self.files().is_some()
    }
}
