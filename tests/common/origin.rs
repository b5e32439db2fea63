//! A small real HTTP/1.1 origin server on a loopback port, for outbound fetch,
//! redirects, aborts and pass-through tests. One thread per connection,
//! `Connection: close` on every response.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the origin received: method, path and body.
pub type Seen = (String, String, Vec<u8>);

pub struct Origin {
    pub url: String,
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let port = listener.local_addr().expect("addr").port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &log);
                });
            }
        });
        Origin {
            url: format!("http://127.0.0.1:{port}"),
            port,
            seen,
        }
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn handle(stream: TcpStream, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut length = 0usize;
    let mut chunked = false;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    if let Ok(mut l) = log.lock() {
        l.push((method.clone(), path.clone(), body.clone()));
    }
    let mut out = stream;
    let (status, extra, payload): (&str, String, Vec<u8>) =
        if let Some(n) = path.strip_prefix("/redirect/") {
            let n: u32 = n.parse().unwrap_or(0);
            if n == 0 {
                ("200 OK", String::new(), b"landed".to_vec())
            } else {
                (
                    "302 Found",
                    format!("Location: /redirect/{}\r\n", n - 1),
                    b"moved".to_vec(),
                )
            }
        } else if path == "/slow" {
            std::thread::sleep(Duration::from_secs(5));
            ("200 OK", String::new(), b"slow".to_vec())
        } else if path.starts_with("/echo") {
            let agent = headers
                .iter()
                .find(|(k, _)| k == "x-test")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let mut p = format!("{method} {path} x-test={agent} body=").into_bytes();
            p.extend_from_slice(&body);
            ("200 OK", "X-Origin: yes\r\n".to_owned(), p)
        } else {
            ("200 OK", String::new(), b"hello from origin".to_vec())
        };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n{extra}\r\n",
        payload.len()
    )?;
    out.write_all(&payload)?;
    out.flush()
}
