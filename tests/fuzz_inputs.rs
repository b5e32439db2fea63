//! Bounded fuzzing of what a tenant hands the control plane: the deploy JSON
//! (through the same validation the API runs) and the names layer that stands
//! between tenant names and the file system.
//!
//! Two parts: a corpus kept in the repo (`tests/fuzz/deploy/*.json`: valid
//! bodies and the shapes of past and likely attacks) that must always be
//! answered without a panic, and property tests that generate bodies and
//! names around it. Properties: nothing panics; a refusal is a 4xx in the
//! error shape; what is accepted holds only names the names layer accepts;
//! every path built from accepted names stays under the data directory.
//! The case counts bound the run (a few seconds in release mode; set
//! `EDGED_FUZZ_CASES` to multiply them for a longer run); the time each part
//! took is printed.

use std::path::{Component, Path};
use std::time::Instant;

use edged::http::control_plane::validate_deploy;
use edged::js::Binding;
use edged::state::names;
use proptest::prelude::*;

/// `base` cases, times `EDGED_FUZZ_CASES` when set (a longer run by hand).
fn cases(base: u32) -> u32 {
    let factor = std::env::var("EDGED_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1);
    base.saturating_mul(factor.max(1))
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/deploy");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("corpus file"),
            )
        })
        .collect();
    out.sort();
    out
}

/// The properties every answer to a deploy body has.
fn check_answer(body: &[u8]) -> Result<(), String> {
    match validate_deploy("fuzz", "default", body) {
        Err(e) => {
            if !e.status.is_client_error() || e.code.is_empty() || e.message.is_empty() {
                return Err(format!(
                    "not a clear 4xx: {} {} {}",
                    e.status, e.code, e.message
                ));
            }
            Ok(())
        }
        Ok(deploy) => {
            for b in &deploy.script.bindings {
                let ok = match b {
                    Binding::KvNamespace { namespace, .. } => {
                        names::check_namespace(namespace).is_ok()
                    }
                    Binding::Service { service, .. } => names::check_worker(service).is_ok(),
                    Binding::DurableObjectNamespace { class_name, .. } => {
                        names::check_class(class_name).is_ok()
                            && names::object_db(
                                Path::new("/data"),
                                &names::new_storage_id(),
                                class_name,
                                &"a".repeat(64),
                            )
                            .is_ok()
                    }
                    _ => true,
                };
                if !ok {
                    return Err(format!("accepted a binding with an unsafe name: {b:?}"));
                }
            }
            for m in deploy.script.modules.keys() {
                if m.contains("..") || m.starts_with('/') || m.contains(':') {
                    return Err(format!("accepted module name {m:?}"));
                }
            }
            for h in &deploy.hosts {
                edged::state::hosts::HostPattern::parse(h)
                    .map_err(|e| format!("accepted host {h:?}: {e}"))?;
            }
            Ok(())
        }
    }
}

#[test]
fn the_deploy_corpus_is_answered_cleanly() {
    let started = Instant::now();
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus is missing");
    let mut accepted = 0;
    for (name, body) in &corpus {
        check_answer(body).unwrap_or_else(|e| panic!("{name}: {e}"));
        if validate_deploy("fuzz", "default", body).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "only valid_full.json is valid");
    println!(
        "fuzz corpus: {} files in {:?}",
        corpus.len(),
        started.elapsed()
    );
}

/// Strings that stress names: traversal pieces, separators, NUL and other
/// controls, non-ASCII, and plain identifier material.
fn nasty_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_owned()),
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just("\u{0}".to_owned()),
        Just(":".to_owned()),
        Just("*".to_owned()),
        Just(".".to_owned()),
        Just("%2e".to_owned()),
        Just("\u{202e}".to_owned()),
        Just("é".to_owned()),
        "[a-zA-Z0-9_$-]{1,8}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

fn binding() -> impl Strategy<Value = serde_json::Value> {
    (
        prop_oneof![
            Just("plain_text"),
            Just("secret_text"),
            Just("json"),
            Just("kv_namespace"),
            Just("durable_object_namespace"),
            Just("service"),
            Just("queue"),
        ],
        nasty_string(),
        nasty_string(),
    )
        .prop_map(|(kind, name, value)| {
            serde_json::json!({
                "type": kind,
                "name": name,
                "text": value,
                "json": value,
                "namespace": value,
                "class_name": value,
                "service": value,
            })
        })
        .prop_map(|mut v| {
            // Keep only the fields the type has, so most bodies get past serde.
            let kind = v["type"].as_str().unwrap_or("").to_owned();
            let keep: &[&str] = match kind.as_str() {
                "plain_text" | "secret_text" => &["type", "name", "text"],
                "json" => &["type", "name", "json"],
                "kv_namespace" => &["type", "name", "namespace"],
                "durable_object_namespace" => &["type", "name", "class_name"],
                "service" => &["type", "name", "service"],
                _ => &["type", "name"],
            };
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| keep.contains(&k.as_str()));
            }
            v
        })
}

fn deploy_body() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        nasty_string(),
        prop::collection::vec(nasty_string(), 0..3),
        prop::collection::vec(binding(), 0..4),
        prop::collection::vec(nasty_string().prop_map(|h| format!("{h}/*")), 0..3),
        prop::collection::vec(nasty_string(), 0..2),
    )
        .prop_map(|(main, extra, bindings, routes, crons)| {
            let mut modules = serde_json::Map::new();
            modules.insert(
                main.clone(),
                serde_json::Value::String("export default {}".into()),
            );
            for (i, m) in extra.into_iter().enumerate() {
                // Every other extra module is typed, with hostile content.
                let value = match i % 4 {
                    0 => serde_json::Value::String(String::new()),
                    1 => serde_json::json!({"type": "wasm", "content_base64": m.clone()}),
                    2 => serde_json::json!({"type": "json", "content": m.clone()}),
                    _ => serde_json::json!({"type": m.clone(), "content": m.clone()}),
                };
                modules.insert(m, value);
            }
            serde_json::to_vec(&serde_json::json!({
                "main_module": main,
                "modules": modules,
                "bindings": bindings,
                "routes": routes,
                "crons": crons,
            }))
            .unwrap_or_default()
        });
    prop_oneof![
        8 => structured,
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(20_000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_deploy_bodies_are_answered_cleanly(body in deploy_body()) {
        prop_assert!(check_answer(&body).is_ok(), "{:?}", check_answer(&body));
    }
}

/// Whether `path` is `root` followed by plain, safe components only.
fn safely_under(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root).is_ok_and(|rest| {
        rest.components().all(|c| match c {
            Component::Normal(part) => part.to_str().is_some_and(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.$".contains(&b))
            }),
            _ => false,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(100_000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn names_become_safe_paths_or_are_refused(
        class in nasty_string(),
        namespace in nasty_string(),
        id in prop_oneof![nasty_string(), "[0-9a-f]{64}"],
        storage in prop_oneof![nasty_string(), "[0-9a-f]{32}"],
        worker in nasty_string(),
    ) {
        let root = Path::new("/srv/edged-data");
        let _ = names::check_worker(&worker);
        let _ = names::check_account(&worker);
        if let Ok(p) = names::object_db(root, &storage, &class, &id) {
            prop_assert!(safely_under(root, &p), "{p:?}");
        }
        if let Ok(p) = names::kv_db(root, &namespace) {
            prop_assert!(safely_under(root, &p), "{p:?}");
        }
        if let Ok(p) = names::worker_objects_dir(root, &storage) {
            prop_assert!(safely_under(root, &p), "{p:?}");
        }
        prop_assert!(names::printable(&class).chars().all(|c| !c.is_control()));
    }
}

#[test]
fn fuzz_timing() {
    // Reported in the run's output (cargo test -- --nocapture): how long the
    // generated cases take, so the bound stays honest.
    let started = Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&deploy_body(), |body| {
            prop_assert!(check_answer(&body).is_ok());
            Ok(())
        })
        .expect("no failures");
    println!(
        "fuzz: 2000 generated deploy bodies in {:?}",
        started.elapsed()
    );
}
