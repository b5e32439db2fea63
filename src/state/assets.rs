//! Static assets: a content-addressed blob store per account, and how a
//! request maps onto a version's manifest, as Workers serves assets.
//!
//! Store: `<data>/assets/<account>/<2 hex>/<sha256>`. A blob is written once
//! (temp file, fsync, rename) and only if its content hashes to its name, so
//! a blob's name always tells its content and versions share blobs. Blobs
//! are kept per account, so one tenant cannot learn whether another uploaded
//! some content by probing for its hash.
//!
//! Serving ([`serve`]) is pure over the manifest plus reads of the store: the
//! path is decoded, `html_handling` maps it to a file or a redirect, a miss
//! gets `not_found_handling`'s answer or goes to the worker; a hit is served
//! with `Content-Type` by extension, the content hash as a strong `ETag`,
//! `If-None-Match` → 304, one `Range` → 206 (416 when unsatisfiable), and
//! files over [`STREAM_ABOVE`] streamed from disk in chunks.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::Digest;

use crate::js::{
    body_channel, AssetFile, Assets, Body, HtmlHandling, InvokeResponse, NotFoundHandling,
    StreamSlot,
};

/// Workers' limits: 25 MiB per file, 100,000 files per version.
pub const MAX_FILE_BYTES: u64 = 25 * 1024 * 1024;
pub const MAX_FILES: usize = 100_000;

/// Files larger than this are streamed rather than read whole.
pub const STREAM_ABOVE: u64 = 1024 * 1024;

const CHUNK: usize = 256 * 1024;

/// Asset responses' `Cache-Control`, as Workers sends it.
pub const CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";

/// Whether `hash` is a SHA-256 in lowercase hex (the only names that reach
/// the disk).
pub fn valid_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `path` can name an asset: starts with `/`, no empty, `.` or `..`
/// segments, no control characters or backslashes, at most 1,024 bytes.
pub fn valid_path(path: &str) -> bool {
    path.len() <= 1024
        && path.starts_with('/')
        && path.len() > 1
        && !path.chars().any(|c| c.is_control() || c == '\\')
        && path[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("{0}")]
    Invalid(String),
    #[error("asset store: {0}")]
    Io(#[from] std::io::Error),
}

/// The node's asset blobs.
pub struct AssetStore {
    root: PathBuf,
}

impl AssetStore {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("assets");
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, account: &str, hash: &str) -> Option<PathBuf> {
        (super::names::check_account(account).is_ok() && valid_hash(hash))
            .then(|| self.root.join(account).join(&hash[..2]).join(hash))
    }

    pub fn has(&self, account: &str, hash: &str) -> bool {
        self.path(account, hash).is_some_and(|p| p.is_file())
    }

    /// Stores `content` as `hash` for `account`; refuses content that does
    /// not hash to `hash`. Storing what is there already is a no-op.
    pub fn put(&self, account: &str, hash: &str, content: &[u8]) -> Result<(), AssetError> {
        let path = self.path(account, hash).ok_or_else(|| {
            AssetError::Invalid(format!(
                "'{}' is not a SHA-256 in lowercase hex",
                super::names::printable(hash)
            ))
        })?;
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(AssetError::Invalid(format!(
                "an asset is at most {} MiB",
                MAX_FILE_BYTES >> 20
            )));
        }
        let actual = hex(&sha2::Sha256::digest(content));
        if actual != hash {
            return Err(AssetError::Invalid(format!(
                "the content's SHA-256 is {actual}, not {hash}"
            )));
        }
        if path.is_file() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        // A temp name of its own per upload: two uploads of one blob never
        // write the same file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{hash}.{}.{n}", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(content)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        Ok(())
    }

    /// A blob's content.
    pub fn read(&self, account: &str, hash: &str) -> Result<Vec<u8>, AssetError> {
        let path = self.path(account, hash).ok_or_else(|| {
            AssetError::Invalid(format!("no such asset {}", super::names::printable(hash)))
        })?;
        Ok(std::fs::read(path)?)
    }

    /// Forgets every blob of an account (the account was removed).
    pub fn remove_account(&self, account: &str) -> std::io::Result<()> {
        if super::names::check_account(account).is_err() {
            return Ok(());
        }
        match std::fs::remove_dir_all(self.root.join(account)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`lookup`] finds for a path.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    Serve(&'a str, &'a AssetFile),
    Redirect(String),
    Miss,
}

/// Maps a decoded request path onto the manifest as `html_handling` says
/// (Workers' rules: `auto-trailing-slash` serves `/a` from `/a.html` and
/// `/d/` from `/d/index.html`, and redirects the other spellings to those).
pub fn lookup<'a>(assets: &'a Assets, path: &str) -> Lookup<'a> {
    let files = &assets.files;
    let get = |p: &str| files.get_key_value(p).map(|(k, v)| (k.as_str(), v));
    let serve = |p: &str| get(p).map(|(k, v)| Lookup::Serve(k, v));
    let has = |p: &str| files.contains_key(p);
    let exact = serve(path);
    let html = assets.html_handling;
    if html == HtmlHandling::None {
        return exact.unwrap_or(Lookup::Miss);
    }
    let slash = html != HtmlHandling::DropTrailingSlash;
    let force = html == HtmlHandling::ForceTrailingSlash;
    // `/d/index.html` and `/a.html` spelled out: redirect to the pretty form.
    if let Some(dir) = path.strip_suffix("index.html").filter(|d| d.ends_with('/')) {
        if has(path) {
            let target = if slash || dir == "/" {
                dir.to_owned()
            } else {
                dir.trim_end_matches('/').to_owned()
            };
            return Lookup::Redirect(target);
        }
    } else if let Some(stem) = path.strip_suffix(".html") {
        if has(path) && stem.len() > 1 {
            return Lookup::Redirect(if force {
                format!("{stem}/")
            } else {
                stem.to_owned()
            });
        }
    }
    if path.ends_with('/') {
        if let Some(hit) = serve(&format!("{path}index.html")) {
            return if slash || path == "/" {
                hit
            } else {
                Lookup::Redirect(path.trim_end_matches('/').to_owned())
            };
        }
        let trimmed = path.trim_end_matches('/');
        if !trimmed.is_empty() {
            if let Some(hit) = serve(&format!("{trimmed}.html")) {
                return if force {
                    hit
                } else {
                    Lookup::Redirect(trimmed.to_owned())
                };
            }
        }
        return exact.unwrap_or(Lookup::Miss);
    }
    if let Some(hit) = exact {
        return hit;
    }
    if let Some(hit) = serve(&format!("{path}.html")) {
        return if force {
            Lookup::Redirect(format!("{path}/"))
        } else {
            hit
        };
    }
    if has(&format!("{path}/index.html")) {
        return if slash {
            Lookup::Redirect(format!("{path}/"))
        } else {
            serve(&format!("{path}/index.html")).unwrap_or(Lookup::Miss)
        };
    }
    Lookup::Miss
}

/// A request as the assets see it.
pub struct AssetRequest<'a> {
    pub method: &'a str,
    /// The URL's path, percent-decoded ([`decode_path`]): the same string
    /// `run_worker_first` was checked against.
    pub path: &'a str,
    /// The URL's query (without `?`), kept on redirects.
    pub query: Option<&'a str>,
    pub headers: &'a [(String, Vec<u8>)],
}

impl AssetRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// A browser's navigation (`Sec-Fetch-Mode: navigate`, or no fetch
    /// metadata and HTML accepted).
    fn is_navigation(&self) -> bool {
        match self.header("sec-fetch-mode") {
            Some(mode) => mode.eq_ignore_ascii_case("navigate"),
            None => self
                .header("accept")
                .is_some_and(|a| a.contains("text/html")),
        }
    }
}

/// A request path as the manifest and `run_worker_first` see it: decoded
/// once, so both decisions are made on the same string (`/%61dmin` is
/// `/admin` for both).
pub fn decode_path(raw: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
}

/// What the assets make of a request.
pub enum Served {
    Response(InvokeResponse),
    /// No asset answers it: the worker does.
    ToWorker,
}

/// Serves `req` from `assets` (the files of `account`). `fallthrough`: a
/// miss may go to the worker (the data plane with a worker), else it gets
/// `not_found_handling`'s answer (`env.ASSETS.fetch`, assets-only projects).
pub fn serve(
    store: &AssetStore,
    account: &str,
    assets: &Assets,
    req: &AssetRequest,
    fallthrough: bool,
) -> Served {
    let head = req.method.eq_ignore_ascii_case("HEAD");
    if !head && !req.method.eq_ignore_ascii_case("GET") {
        return if fallthrough {
            Served::ToWorker
        } else {
            Served::Response(plain(405, "Method Not Allowed", &[("allow", "GET, HEAD")]))
        };
    }
    let decoded = req.path;
    let (file, status) = match lookup(assets, decoded) {
        Lookup::Serve(p, f) => ((p.to_owned(), f.clone()), 200),
        Lookup::Redirect(to) => {
            let location = match req.query {
                Some(q) if !q.is_empty() => format!("{to}?{q}"),
                _ => to,
            };
            return Served::Response(plain(307, "", &[("location", location.as_str())]));
        }
        Lookup::Miss => {
            let spa = assets.not_found_handling == NotFoundHandling::SinglePageApplication;
            if fallthrough && !(spa && req.is_navigation()) {
                return Served::ToWorker;
            }
            match not_found(assets, decoded) {
                Some(found) => found,
                None => return Served::Response(plain(404, "", &[])),
            }
        }
    };
    Served::Response(respond(store, account, &file.0, &file.1, status, req, head))
}

/// `not_found_handling`'s file for a miss, with its status.
fn not_found(assets: &Assets, path: &str) -> Option<((String, AssetFile), u16)> {
    match assets.not_found_handling {
        NotFoundHandling::None => None,
        NotFoundHandling::SinglePageApplication => assets
            .files
            .get("/index.html")
            .map(|f| (("/index.html".to_owned(), f.clone()), 200)),
        NotFoundHandling::NotFoundPage => {
            // The nearest 404.html up the path (no asset path is longer than
            // 1,024 bytes, so a longer one is not walked).
            if path.len() > 1024 {
                return None;
            }
            let mut dir = path;
            loop {
                dir = match dir.rfind('/') {
                    Some(i) => &dir[..i],
                    None => return None,
                };
                let candidate = format!("{dir}/404.html");
                if let Some(f) = assets.files.get(&candidate) {
                    return Some(((candidate, f.clone()), 404));
                }
                if dir.is_empty() {
                    return None;
                }
            }
        }
    }
}

fn plain(status: u16, body: &str, headers: &[(&str, &str)]) -> InvokeResponse {
    InvokeResponse {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        body: (!body.is_empty()).then(|| Body::Bytes(Bytes::copy_from_slice(body.as_bytes()))),
        websocket: None,
        encode_manually: false,
        rpc: None,
    }
}

/// The `Content-Type` of a file by its extension (text types in UTF-8).
pub fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.subtype().as_str(),
            "javascript" | "json" | "xml" | "svg"
        )
        || mime.essence_str() == "image/svg+xml";
    if text && mime.get_param("charset").is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    }
}

/// One `Range: bytes=…` over `size` bytes: `Some(Ok((start, end)))` inclusive,
/// `Some(Err(()))` unsatisfiable, `None` absent or not a single byte range
/// (then the whole file is sent).
fn range(header: Option<&str>, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(parsed))
}

fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

fn respond(
    store: &AssetStore,
    account: &str,
    path: &str,
    file: &AssetFile,
    status: u16,
    req: &AssetRequest,
    head: bool,
) -> InvokeResponse {
    let etag = format!("\"{}\"", file.hash);
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"content-type".to_vec(), content_type(path).into_bytes()),
        (b"etag".to_vec(), etag.clone().into_bytes()),
        (b"cache-control".to_vec(), CACHE_CONTROL.as_bytes().to_vec()),
    ];
    if status == 200 {
        if req
            .header("if-none-match")
            .is_some_and(|h| etag_matches(h, &etag))
        {
            return InvokeResponse {
                status: 304,
                headers,
                body: None,
                websocket: None,
                encode_manually: false,
                rpc: None,
            };
        }
        headers.push((b"accept-ranges".to_vec(), b"bytes".to_vec()));
    }
    let Some(blob) = store.path(account, &file.hash) else {
        return plain(500, "asset missing from the store", &[]);
    };
    let (status, start, len) = match (status, range(req.header("range"), file.size)) {
        (200, Some(Ok((s, e)))) => {
            headers.push((
                b"content-range".to_vec(),
                format!("bytes {s}-{e}/{}", file.size).into_bytes(),
            ));
            (206, s, e - s + 1)
        }
        (200, Some(Err(()))) => {
            headers.push((
                b"content-range".to_vec(),
                format!("bytes */{}", file.size).into_bytes(),
            ));
            return InvokeResponse {
                status: 416,
                headers,
                body: None,
                websocket: None,
                encode_manually: false,
                rpc: None,
            };
        }
        _ => (status, 0, file.size),
    };
    if head {
        headers.push((b"content-length".to_vec(), len.to_string().into_bytes()));
        return InvokeResponse {
            status,
            headers,
            body: None,
            websocket: None,
            encode_manually: false,
            rpc: None,
        };
    }
    let body = if len <= STREAM_ABOVE {
        match read_range(&blob, start, len) {
            Ok(bytes) => Body::Bytes(bytes.into()),
            Err(e) => {
                tracing::error!(error = %e, path, "reading an asset failed");
                return plain(500, "reading the asset failed", &[]);
            }
        }
    } else {
        Body::Stream(stream_range(blob, start, len))
    };
    InvokeResponse {
        status,
        headers,
        body: Some(body),
        websocket: None,
        encode_manually: false,
        rpc: None,
    }
}

fn read_range(path: &Path, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the asset is shorter than its manifest says",
        ));
    }
    Ok(buf)
}

/// Streams `len` bytes from `start` of a blob: an async task reads one
/// chunk at a time on a blocking thread and waits for the reader between
/// chunks without holding that thread, so slow readers cannot exhaust the
/// blocking pool.
fn stream_range(path: PathBuf, start: u64, len: u64) -> StreamSlot {
    let (sink, stream) = body_channel();
    tokio::spawn(async move {
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(start))?;
            Ok(f)
        })
        .await;
        let mut file = match opened {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return sink.fail(format!("reading the asset failed: {e}")),
            Err(e) => return sink.fail(format!("reading the asset failed: {e}")),
        };
        let mut left = len;
        while left > 0 {
            let want = CHUNK.min(left as usize);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; want];
                file.read_exact(&mut buf).map(|()| (file, buf))
            })
            .await;
            let (f, buf) = match read {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return sink.fail(format!("reading the asset failed: {e}")),
                Err(e) => return sink.fail(format!("reading the asset failed: {e}")),
            };
            file = f;
            left -= buf.len() as u64;
            if !sink.send(buf.into()).await {
                return;
            }
        }
        sink.finish();
    });
    StreamSlot::new(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn assets(paths: &[&str], html: HtmlHandling) -> Assets {
        Assets {
            files: paths
                .iter()
                .map(|p| {
                    (
                        p.to_string(),
                        AssetFile {
                            hash: "0".repeat(64),
                            size: 1,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            html_handling: html,
            not_found_handling: NotFoundHandling::None,
            run_worker_first: Default::default(),
            has_worker: true,
        }
    }

    fn hit(l: Lookup) -> String {
        match l {
            Lookup::Serve(p, _) => format!("serve {p}"),
            Lookup::Redirect(to) => format!("307 {to}"),
            Lookup::Miss => "miss".into(),
        }
    }

    #[test]
    fn auto_trailing_slash_as_workers_does() {
        let a = assets(
            &["/index.html", "/about.html", "/blog/index.html", "/app.js"],
            HtmlHandling::AutoTrailingSlash,
        );
        for (path, want) in [
            ("/", "serve /index.html"),
            ("/index.html", "307 /"),
            ("/about", "serve /about.html"),
            ("/about.html", "307 /about"),
            ("/about/", "307 /about"),
            ("/blog/", "serve /blog/index.html"),
            ("/blog", "307 /blog/"),
            ("/blog/index.html", "307 /blog/"),
            ("/app.js", "serve /app.js"),
            ("/nope", "miss"),
        ] {
            assert_eq!(hit(lookup(&a, path)), want, "{path}");
        }
        let none = assets(&["/about.html"], HtmlHandling::None);
        assert_eq!(hit(lookup(&none, "/about")), "miss");
        let drop = assets(&["/blog/index.html"], HtmlHandling::DropTrailingSlash);
        assert_eq!(hit(lookup(&drop, "/blog")), "serve /blog/index.html");
        assert_eq!(hit(lookup(&drop, "/blog/")), "307 /blog");
        let force = assets(&["/about.html"], HtmlHandling::ForceTrailingSlash);
        assert_eq!(hit(lookup(&force, "/about")), "307 /about/");
        assert_eq!(hit(lookup(&force, "/about/")), "serve /about.html");
    }

    #[test]
    fn ranges() {
        assert_eq!(range(Some("bytes=0-9"), 100), Some(Ok((0, 9))));
        assert_eq!(range(Some("bytes=90-"), 100), Some(Ok((90, 99))));
        assert_eq!(range(Some("bytes=-10"), 100), Some(Ok((90, 99))));
        assert_eq!(range(Some("bytes=50-500"), 100), Some(Ok((50, 99))));
        assert_eq!(range(Some("bytes=100-"), 100), Some(Err(())));
        assert_eq!(range(Some("bytes=0-1,5-6"), 100), None);
        assert_eq!(range(Some("items=0-1"), 100), None);
        assert_eq!(range(None, 100), None);
    }

    #[test]
    fn names_that_reach_the_disk_are_checked() {
        assert!(valid_hash(&"a".repeat(64)));
        assert!(!valid_hash(&"A".repeat(64)));
        assert!(!valid_hash("../../etc/passwd"));
        assert!(valid_path("/a/b.css"));
        for bad in ["", "/", "a", "/a/../b", "/a//b", "/./a", "/a\\b", "/a\n"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }
}
