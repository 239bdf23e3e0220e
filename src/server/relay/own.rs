//! usher's own answers on the relay (a holding page, status JSON, an error
//! page), written as HTTP/1.1 the way hyper writes them.

use super::*;

/// Writes one of usher's own answers (a holding page, status JSON, an
/// error page) as HTTP/1.1, as hyper writes it; `on_length` learns the
/// body's length before the visitor does.
pub(super) async fn write_answer<S>(
    io: &mut Guarded<S>,
    resp: http::Response<crate::Body>,
    is_head: bool,
    close: bool,
    on_length: impl FnOnce(u64),
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&itoa_3(parts.status.as_u16()));
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in parts.headers.iter() {
        if name == http::header::CONTENT_LENGTH || name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    end_head(&mut out, body.len(), close);
    on_length(body.len() as u64);
    if !is_head {
        out.extend_from_slice(&body);
    }
    io.write_all(&out).await?;
    io.flush().await
}

/// Writes `head` and then `body`, in one vectored write when the socket
/// takes it all.
pub(super) async fn write_both<S>(
    io: &mut Guarded<S>,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while !head.is_empty() {
        let parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
        let n = io.write_vectored(&parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let in_head = n.min(head.len());
        head = &head[in_head..];
        body = &body[n - in_head..];
    }
    io.write_all(body).await
}

/// Ends one of usher's own answer heads as hyper does: the body's length,
/// `connection: close` when the connection ends after it, the date, and
/// the empty line.
pub(super) fn end_head(out: &mut Vec<u8>, length: usize, close: bool) {
    out.extend_from_slice(b"content-length: ");
    crate::holding::fmt::write_u64(out, length as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    now_http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}
