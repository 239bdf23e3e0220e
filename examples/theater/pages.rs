//! The site's pages: movies, the voucher form and its naive counter,
//! checkout, and the plain 503 page of the collapse.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::{Theater, MAX_BODY, MAX_CODE};

pub(super) type Resp = Response<Full<Bytes>>;

/// id, Korean title, English title, minutes, rating.
struct Movie(u32, &'static str, &'static str, u32, &'static str);

const MOVIES: [Movie; 5] = [
    Movie(1, "별빛 정거장", "Starlight Station", 118, "12"),
    Movie(2, "한강의 여름", "Summer on the Han", 104, "ALL"),
    Movie(3, "마지막 상영", "The Last Screening", 131, "15"),
    Movie(4, "고양이 탐정", "Detective Cat", 96, "ALL"),
    Movie(5, "새벽의 추격", "Chase at Dawn", 122, "18"),
];

const STYLE: &str = "body{margin:0;font-family:system-ui,sans-serif;background:#111;color:#eee}\
header{display:flex;justify-content:space-between;align-items:center;padding:1em 2em;background:#b3122e}\
header a{color:#fff;text-decoration:none;font-weight:bold}.brand span{font-weight:normal;opacity:.8}\
main{max-width:48em;margin:2em auto;padding:0 1em}ul.movies{list-style:none;padding:0}\
ul.movies li{padding:.8em;margin:.5em 0;background:#222;border-radius:6px}\
a{color:#ffcc4d}.code{font-size:2em;font-family:monospace;color:#7fff7f}\
button{font-size:1.2em;padding:.5em 1.5em;background:#ffcc4d;border:0;border-radius:6px}\
footer{text-align:center;opacity:.5;padding:2em}\n";

/// Builds a response with Content-Length; everything but the stylesheet is `no-store`.
pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let body: Bytes = body.into();
    let len = body.len() as u64;
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn html(status: StatusCode, title: &str, main: &str) -> Resp {
    let body = format!(
        "<!doctype html>\n<html lang=\"ko\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · 시네마 한빛</title><link rel=\"stylesheet\" href=\"/static/style.css\">\
         </head><body><header><a class=\"brand\" href=\"/\">시네마 한빛 <span>Hanbit Cinema</span></a>\
         <a href=\"/voucher\">할인권 Vouchers</a></header><main>{main}</main>\
         <footer>시네마 한빛 · Hanbit Cinema · demo origin for usher</footer></body></html>\n"
    );
    respond(status, "text/html; charset=utf-8", body)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page visitors saw when the real sites went down: plain, no stylesheet, fast.
pub(super) fn overloaded() -> Resp {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/html; charset=utf-8",
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>503 Service Unavailable</title>\
         </head><body><h1>503 Service Unavailable</h1><p>접속자가 많아 서비스를 이용할 수 없습니다. \
         잠시 후 다시 시도해 주세요.</p><p>The server is temporarily unable to service your request \
         due to heavy load. Please try again later.</p></body></html>\n",
    )
}

fn not_found() -> Resp {
    let main = "<h1>404</h1><p>페이지를 찾을 수 없습니다. Page not found.</p><p><a href=\"/\">홈 Home</a></p>";
    html(StatusCode::NOT_FOUND, "404", main)
}

fn home() -> Resp {
    let mut main = String::from(
        "<h1>지금 상영 중 Now showing</h1><p>정부 문화 할인권 선착순 지급 중! \
         Government discount vouchers, first come first served: \
         <a href=\"/voucher\">받기 Claim yours</a></p><ul class=\"movies\">",
    );
    for m in &MOVIES {
        main.push_str(&format!(
            "<li><a href=\"/movies/{}\">{} <small>{}</small></a> · {} min · {}</li>",
            m.0, m.1, m.2, m.3, m.4
        ));
    }
    main.push_str("</ul>");
    html(StatusCode::OK, "홈 Home", &main)
}

fn movie(id: &str) -> Resp {
    let Some(m) = MOVIES.iter().find(|m| id.parse() == Ok(m.0)) else {
        return not_found();
    };
    let main = format!(
        "<h1>{} <small>{}</small></h1><p>{} min · 관람등급 rating {}</p>\
         <form method=\"post\" action=\"/checkout\"><button>예매 Book a seat</button></form>\
         <p><a href=\"/voucher\">할인권 받기 Get a discount voucher</a></p>",
        m.1, m.2, m.3, m.4
    );
    html(StatusCode::OK, m.2, &main)
}

fn movies_json() -> Resp {
    let list: Vec<_> = MOVIES
        .iter()
        .map(|m| serde_json::json!({"id": m.0, "title_ko": m.1, "title_en": m.2, "minutes": m.3, "rating": m.4}))
        .collect();
    let body = serde_json::Value::from(list).to_string();
    respond(StatusCode::OK, "application/json", body)
}

fn voucher_form(t: &Theater) -> Resp {
    let left = t.vouchers_left.load(Ordering::SeqCst);
    let main = format!(
        "<h1>문화 할인권 Discount voucher</h1><p>1인 1매, 선착순. One per person, while stock lasts \
         (남은 수량 left: {left}).</p><form method=\"post\" action=\"/voucher/claim\">\
         <input type=\"hidden\" name=\"want\" value=\"1\"><button>받기 Claim</button></form>"
    );
    html(StatusCode::OK, "할인권 Voucher", &main)
}

fn voucher_page(code: &str) -> Resp {
    let main = format!(
        "<h1>발급 완료 Issued</h1><p>your voucher: <span class=\"code\">{}</span></p>\
         <p>상영관에서 보여 주세요. Show it at the box office.</p>",
        escape(code)
    );
    html(StatusCode::OK, "할인권 Voucher", &main)
}

async fn claim(t: &Theater, req: Request<Incoming>) -> Resp {
    // usher issued the voucher at the edge; this site only displays it.
    let edge_code = match req.headers().get("x-usher-voucher").map(|v| v.to_str()) {
        None => None,
        Some(Ok(code)) if !code.is_empty() && code.len() <= MAX_CODE => Some(code.to_owned()),
        Some(_) => return bad_request("Bad voucher."),
    };
    // Reading the (tiny) form keeps the connection reusable; its content does not matter.
    let body = Limited::new(req.into_body(), MAX_BODY);
    if body.collect().await.is_err() {
        return bad_request("Bad request body.");
    }
    if let Some(code) = edge_code {
        return voucher_page(&code);
    }
    match t.take_voucher() {
        Some(n) => voucher_page(&format!("HANBIT-{n:06}")),
        None => {
            let mut resp = html(
                StatusCode::OK,
                "매진 Sold out",
                "<h1>매진 Sold out</h1><p>할인권이 모두 소진되었습니다. All vouchers are gone.</p>",
            );
            // Tells usher the stock is gone, so everyone still in line is
            // told at once instead of waiting for nothing.
            resp.headers_mut()
                .insert("x-usher-sold-out", HeaderValue::from_static("1"));
            resp
        }
    }
}

fn bad_request(why: &str) -> Resp {
    html(
        StatusCode::BAD_REQUEST,
        "400",
        &format!("<h1>400</h1><p>{why}</p>"),
    )
}

fn checkout() -> Resp {
    let main = "<h1>예매 완료 Booked</h1><p>감사합니다! Thank you, enjoy the film.</p>";
    let mut resp = html(StatusCode::OK, "예매 Checkout", main);
    // Tells usher this visitor is done so their slot can go to the next in line.
    resp.headers_mut()
        .insert("x-usher-release", HeaderValue::from_static("1"));
    resp
}

pub(super) async fn route(t: &Theater, req: Request<Incoming>) -> Resp {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = req.method() == Method::POST;
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/" if get => home(),
        "/static/style.css" if get => {
            let mut resp = respond(StatusCode::OK, "text/css; charset=utf-8", STYLE);
            let cache = HeaderValue::from_static("public, max-age=3600");
            resp.headers_mut().insert(CACHE_CONTROL, cache);
            resp
        }
        "/voucher" if get => voucher_form(t),
        "/voucher/claim" if post => claim(t, req).await,
        "/api/movies" if get => movies_json(),
        "/checkout" if post => checkout(),
        "/" | "/static/style.css" | "/voucher" | "/api/movies" => not_allowed("GET, HEAD"),
        "/voucher/claim" | "/checkout" => not_allowed("POST"),
        p => match p.strip_prefix("/movies/") {
            Some(id) if get => movie(id),
            _ => not_found(),
        },
    }
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut resp = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        "not allowed\n",
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}
