//! One JSON request to usher for black-box tests: the status, the JSON
//! body (or null) and the cookies set (name=value, cleared ones left out).

use std::time::Duration;

use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};

/// The client the tests share.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What usher answered.
pub struct Reply {
    pub status: u16,
    pub json: serde_json::Value,
    /// `name=value` of each cookie set (not those cleared).
    pub cookies: Vec<String>,
}

impl Reply {
    /// The `name=value` of cookie `name`, if set.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|k| k.starts_with(&format!("{name}=")))
            .cloned()
    }
}

/// Sends `req` (no body, `Accept: application/json`); an answer that takes
/// more than 10 s is an error, never a hang.
pub async fn send(c: &HttpClient, req: http::request::Builder) -> Result<Reply, String> {
    let req = req.header(header::ACCEPT, "application/json");
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        c.request(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .map_err(|_| "no answer in 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.contains("Max-Age=0"))
        .map(|v| v.split(';').next().unwrap().to_string())
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        cookies,
    })
}
