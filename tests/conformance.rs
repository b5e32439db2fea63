//! The Workers API conformance suite: every case in `tests/conformance/cases/` is
//! a worker module whose header comments give the HTTP exchange it must produce
//! (expected values from the WHATWG specs and the Workers documentation, cited in
//! each case's `@spec`). Each case is deployed to a live node and run through the
//! data plane. `tests/conformance/compare_workerd.py` runs the same cases on
//! workerd.
//!
//! Case header directives (one per line, `// @name value`): `request METHOD PATH`,
//! `request-header Name: value`, `request-body TEXT`, `status N`,
//! `header Name: value` (an expected response header), `body TEXT` (the exact
//! expected body). `\r`, `\n` and `\\` in bodies are escapes. Every request also
//! carries `x-origin`, the URL of a local origin server for the fetch cases.
//!
//! `CONFORMANCE_FILTER=substring` runs only the matching cases.

mod common;

use std::path::Path;
use std::time::Duration;

use common::origin::Origin;
use common::TestNode;
use serde_json::json;

#[derive(Debug, Default)]
struct Case {
    name: String,
    source: String,
    method: String,
    path: String,
    request_headers: Vec<(String, String)>,
    request_body: Option<String>,
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn split_header(v: &str) -> (String, String) {
    let (k, v) = v.split_once(':').unwrap_or((v, ""));
    (k.trim().to_owned(), v.trim().to_owned())
}

fn parse(name: &str, source: &str) -> Case {
    let mut case = Case {
        name: name.to_owned(),
        source: source.to_owned(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        ..Default::default()
    };
    for line in source.lines() {
        let Some(rest) = line.strip_prefix("// @") else {
            continue;
        };
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        match key {
            "request" => {
                let (m, p) = value.split_once(' ').unwrap_or((value, "/"));
                case.method = m.to_owned();
                case.path = p.to_owned();
            }
            "request-header" => case.request_headers.push(split_header(value)),
            "request-body" => case.request_body = Some(unescape(value)),
            "status" => case.status = value.trim().parse().expect("status"),
            "header" => case.headers.push(split_header(value)),
            "body" => case.body = Some(unescape(value)),
            _ => {}
        }
    }
    case
}

fn load_cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let filter = std::env::var("CONFORMANCE_FILTER").unwrap_or_default();
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "js"))
        .filter_map(|p| {
            let name = p.file_stem()?.to_string_lossy().into_owned();
            let source = std::fs::read_to_string(&p).ok()?;
            Some(parse(&name, &source))
        })
        .filter(|c| c.name.contains(&filter))
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Runs one case; `Err` describes the first difference.
fn run_case(
    node: &TestNode,
    client: &reqwest::blocking::Client,
    origin: &Origin,
    case: &Case,
) -> Result<(), String> {
    let worker = format!("c-{}", case.name.replace('_', "-"));
    let (s, b) = node.deploy(&worker, &case.source, json!([]), &[]);
    if s != 200 {
        return Err(format!("deploy failed: {s} {b}"));
    }
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client
        .request(method, format!("{}{}", node.data, case.path))
        .header("host", format!("{worker}.workers.localhost"))
        .header("x-origin", &origin.url);
    for (k, v) in &case.request_headers {
        req = req.header(k, v);
    }
    if let Some(body) = &case.request_body {
        req = req.body(body.clone());
    }
    let result = req.send().map_err(|e| format!("request failed: {e}"));
    let outcome = result.and_then(|resp| {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().map_err(|e| format!("body failed: {e}"))?;
        if status != case.status {
            return Err(format!(
                "status {status}, expected {} (body: {body:.200})",
                case.status
            ));
        }
        for (k, v) in &case.headers {
            let got: Vec<&str> = headers
                .get_all(k.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if got.join(", ") != *v {
                return Err(format!("header {k}: {got:?}, expected {v:?}"));
            }
        }
        if let Some(expected) = &case.body {
            if body != *expected {
                return Err(format!("body {body:?}, expected {expected:?}"));
            }
        }
        Ok(())
    });
    node.control_request(
        reqwest::Method::DELETE,
        &format!("/v1/workers/{worker}"),
        None,
    );
    outcome
}

#[test]
fn conformance_suite() {
    let cases = load_cases();
    let origin = Origin::start();
    let node = TestNode::start_with("[egress]\nallow = [\"127.0.0.1\"]\n");
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut failed = Vec::new();
    for case in &cases {
        if let Err(why) = run_case(&node, &client, &origin, case) {
            eprintln!("FAIL {}: {why}", case.name);
            failed.push(case.name.clone());
        }
    }
    let passed = cases.len() - failed.len();
    println!("conformance: {passed} passed, {} failed", failed.len());
    eprintln!("conformance: {passed} passed, {} failed", failed.len());
    if std::env::var("CONFORMANCE_FILTER").is_err() {
        assert!(cases.len() >= 120, "only {} cases", cases.len());
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
