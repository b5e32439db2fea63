//! The runtime's side of a worker response's `Content-Encoding`, as Workers
//! does it: a worker that sets `Content-Encoding: gzip` or `br` on a body it
//! wrote plainly (`encodeBody: "automatic"`, the default) gets the body
//! compressed by the runtime on the way to the client; with
//! `encodeBody: "manual"` the body is taken as already encoded and sent as
//! it is. A client that does not accept the coding gets the plain body and
//! no `Content-Encoding` (what the client of a Cloudflare PoP sees: the edge
//! decodes for it). Compression streams, off no thread but the data plane's,
//! with a bounded level: gzip 6, brotli 4.

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use async_compression::Level;
use futures::Stream;

/// A coding the runtime applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Brotli,
}

/// What to do with a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Send as it is (no coding of ours, or `encodeBody: "manual"`).
    AsIs,
    /// Compress, and drop any Content-Length.
    Compress(Coding),
    /// The client does not take the coding: send the plain body, without
    /// the Content-Encoding header.
    Plain,
}

fn coding_of(value: &[u8]) -> Option<Coding> {
    let v = std::str::from_utf8(value).ok()?.trim();
    if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
        Some(Coding::Gzip)
    } else if v.eq_ignore_ascii_case("br") {
        Some(Coding::Brotli)
    } else {
        None
    }
}

/// Whether `accept` (an Accept-Encoding value) takes `coding`; no header
/// takes any (RFC 9110 12.5.3), `;q=0` refuses.
fn accepts(accept: Option<&str>, coding: Coding) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    let want = match coding {
        Coding::Gzip => "gzip",
        Coding::Brotli => "br",
    };
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(want)
            || (coding == Coding::Gzip && name.eq_ignore_ascii_case("x-gzip"))
        {
            return q > 0.0;
        }
        if name == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

/// The plan for a response with `headers`, its `manual` flag, a body or
/// not, for a client that sent `accept`.
pub fn plan(
    headers: &[(Vec<u8>, Vec<u8>)],
    manual: bool,
    has_body: bool,
    accept: Option<&str>,
) -> Plan {
    if manual || !has_body {
        return Plan::AsIs;
    }
    let mut codings = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(b"content-encoding"));
    let (Some((_, value)), None) = (codings.next(), codings.next()) else {
        return Plan::AsIs;
    };
    match coding_of(value) {
        None => Plan::AsIs,
        Some(c) if accepts(accept, c) => Plan::Compress(c),
        Some(_) => Plan::Plain,
    }
}

/// `body` compressed with `coding`, as it streams.
pub fn compress<S>(
    coding: Coding,
    body: S,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, std::io::Error>>>>
where
    S: Stream<Item = Result<bytes::Bytes, std::io::Error>> + 'static,
{
    let reader = tokio_util::io::StreamReader::new(body);
    match coding {
        Coding::Gzip => Box::pin(tokio_util::io::ReaderStream::new(
            GzipEncoder::with_quality(reader, Level::Precise(6)),
        )),
        Coding::Brotli => Box::pin(tokio_util::io::ReaderStream::new(
            BrotliEncoder::with_quality(reader, Level::Precise(4)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(b"content-encoding".to_vec(), v.as_bytes().to_vec())]
    }

    #[test]
    fn plans_follow_the_header_the_flag_and_the_client() {
        assert_eq!(
            plan(&h("gzip"), false, true, Some("gzip, br")),
            Plan::Compress(Coding::Gzip)
        );
        assert_eq!(
            plan(&h("br"), false, true, Some("gzip, br")),
            Plan::Compress(Coding::Brotli)
        );
        assert_eq!(plan(&h("gzip"), true, true, Some("gzip")), Plan::AsIs);
        assert_eq!(plan(&h("gzip"), false, false, Some("gzip")), Plan::AsIs);
        assert_eq!(plan(&h("identity"), false, true, Some("gzip")), Plan::AsIs);
        assert_eq!(plan(&[], false, true, Some("gzip")), Plan::AsIs);
        assert_eq!(plan(&h("br"), false, true, Some("gzip")), Plan::Plain);
        assert_eq!(
            plan(&h("gzip"), false, true, Some("gzip;q=0, *")),
            Plan::Plain
        );
        assert_eq!(
            plan(&h("gzip"), false, true, Some("*")),
            Plan::Compress(Coding::Gzip)
        );
        assert_eq!(
            plan(&h("gzip"), false, true, None),
            Plan::Compress(Coding::Gzip)
        );
        assert_eq!(plan(&h("gzip, br"), false, true, Some("gzip")), Plan::AsIs);
    }

    #[tokio::test]
    async fn gzip_and_brotli_round_trip() {
        use futures::StreamExt;
        use tokio::io::AsyncReadExt;
        for coding in [Coding::Gzip, Coding::Brotli] {
            let chunks = vec![
                Ok(bytes::Bytes::from_static(b"hello ")),
                Ok(bytes::Bytes::from_static(b"world")),
            ];
            let mut out = Vec::new();
            let mut s = compress(coding, futures::stream::iter(chunks));
            while let Some(c) = s.next().await {
                out.extend_from_slice(&c.expect("chunk"));
            }
            let mut plain = String::new();
            match coding {
                Coding::Gzip => async_compression::tokio::bufread::GzipDecoder::new(&out[..])
                    .read_to_string(&mut plain)
                    .await
                    .expect("gunzip"),
                Coding::Brotli => async_compression::tokio::bufread::BrotliDecoder::new(&out[..])
                    .read_to_string(&mut plain)
                    .await
                    .expect("unbrotli"),
            };
            assert_eq!(plain, "hello world");
        }
    }
}
