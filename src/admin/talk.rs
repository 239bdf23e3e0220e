//! The admin side of talking with the line: live announcements
//! (`POST /admin/message`, `GET /admin/message`) and visitors' feedback
//! (`GET /admin/feedback`).

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{json, read_json};
use crate::app::App;
use crate::config::messages::Messages;
use crate::talk::{Record, Source};
use crate::Body;

/// Records `GET /admin/feedback` gives without `?limit=`.
const DEFAULT_FEEDBACK_LIMIT: usize = 100;

/// The body of `POST /admin/message`: a language left out keeps its text;
/// an empty string clears it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Announce {
    ko: Option<String>,
    en: Option<String>,
}

/// `POST /admin/message`.
pub(super) async fn announce(app: &App, req: Request<Incoming>) -> http::Response<Body> {
    if app.config.load().room.is_none() {
        return json(
            StatusCode::CONFLICT,
            &serde_json::json!({ "error": "no [room] in the config: nobody waits to hear it" }),
        );
    }
    let a = match read_json(req)
        .await
        .and_then(|v| serde_json::from_value::<Announce>(v).map_err(|e| e.to_string()))
    {
        Ok(a) if a.ko.is_none() && a.en.is_none() => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "give ko, en or both" }),
            )
        }
        Ok(a) => a,
        Err(e) => return json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
    };
    let board = &app.talk.board;
    let now = board.current();
    let texts = Messages {
        ko: a.ko.unwrap_or_else(|| now.messages.ko.clone()),
        en: a.en.unwrap_or_else(|| now.messages.en.clone()),
    };
    match board.announce(&texts, crate::talk::unix_secs(), Source::Admin) {
        Ok(changed) => {
            let mut status = message_status(app, changed);
            if changed {
                app.metrics.talk.announcements.inc();
                tracing::warn!(ko = %texts.ko, en = %texts.en, "announcement changed through the admin API");
                if let Err(e) = app.talk.publish().await {
                    status["shared_error"] = serde_json::json!(e);
                }
            }
            json(StatusCode::OK, &status)
        }
        Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
    }
}

/// A one-text message from `POST /admin/room {"message"}` (both languages),
/// or a reset back to the config's texts.
pub(super) async fn from_room_change(app: &App, message: Option<&str>, reset: bool) {
    let board = &app.talk.board;
    let now = crate::talk::unix_secs();
    let changed = match message {
        Some(m) => board
            .announce(&Messages::both(m), now, Source::Admin)
            .unwrap_or(false),
        None if reset => board.reset(now),
        None => false,
    };
    if changed {
        app.metrics.talk.announcements.inc();
        // Logged on failure; `/admin/room` answers with the room settings.
        let _ = app.talk.publish().await;
    }
}

/// `GET /admin/message`: the announcement in force and the history.
pub(super) fn message_status(app: &App, changed: bool) -> serde_json::Value {
    let board = &app.talk.board;
    serde_json::json!({
        "changed": changed,
        "current": *board.current(),
        "history": board.history(),
        "shared": app.talk.shared.is_some(),
    })
}

/// `GET /admin/feedback[?limit=N]`: newest first; with Redis, every
/// node's (this node's alone if Redis cannot be read, said in `source`).
pub(super) async fn feedback(app: &App, req: &Request<Incoming>) -> http::Response<Body> {
    let limit = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_FEEDBACK_LIMIT)
        .min(crate::talk::feedback::MAX_KEPT);
    let f = &app.talk.feedback;
    let (records, source) = match &app.talk.shared {
        Some(sh) => match sh.redis.feedback(limit).await {
            Ok(lines) => (
                lines
                    .iter()
                    .filter_map(|l| serde_json::from_str::<Record>(l).ok())
                    .collect(),
                "redis",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "feedback not read from Redis; this node's only");
                (f.newest(limit), "this node (Redis unreachable)")
            }
        },
        None => (f.newest(limit), "this node"),
    };
    json(
        StatusCode::OK,
        &serde_json::json!({
            "source": source,
            "file": f.file().map(|p| p.display().to_string()),
            "feedback": records,
        }),
    )
}
