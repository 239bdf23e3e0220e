//! The admin side of talking with the line: live announcements
//! (`POST /admin/message`, `GET /admin/message`) and visitors' feedback
//! (`GET /admin/feedback`).

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{json, read_json};
use crate::app::App;
use crate::config::messages::Messages;
use crate::talk::Source;
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
            if changed {
                app.metrics.talk.announcements.inc();
                tracing::warn!(ko = %texts.ko, en = %texts.en, "announcement changed through the admin API");
            }
            json(StatusCode::OK, &message_status(app, changed))
        }
        Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
    }
}

/// A one-text message from `POST /admin/room {"message"}` (both languages),
/// or a reset back to the config's texts.
pub(super) fn from_room_change(app: &App, message: Option<&str>, reset: bool) {
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
    }
}

/// `GET /admin/message`: the announcement in force and the history.
pub(super) fn message_status(app: &App, changed: bool) -> serde_json::Value {
    let board = &app.talk.board;
    serde_json::json!({
        "changed": changed,
        "current": *board.current(),
        "history": board.history(),
        "shared": false,
    })
}

/// `GET /admin/feedback[?limit=N]`: newest first.
pub(super) fn feedback(app: &App, req: &Request<Incoming>) -> http::Response<Body> {
    let limit = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_FEEDBACK_LIMIT);
    let f = &app.talk.feedback;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "file": f.file().map(|p| p.display().to_string()),
            "feedback": f.newest(limit),
        }),
    )
}
