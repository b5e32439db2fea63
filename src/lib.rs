//! # edged — a self-hostable edge computing runtime
//!
//! edged runs Workers-style JavaScript (ES modules exporting
//! `fetch(request, env, ctx)`) in V8 isolates owned by actix actors.
//!
//! # Layout
//!
//! Dependencies flow one way: `js` → `state` → `cluster` → `actors` → `http`;
//! `main.rs` only parses the command line.
//!
//! | module | concept |
//! | --- | --- |
//! | [`js`] | engine glue: isolates, snapshot, limits, the Workers global scope |
//! | [`state`] | durable node state: the deployment store |
//! | [`cluster`] | a cluster of PoPs on NATS JetStream: membership, ring, ownership, remote actor messages, deployment records |
//! | [`actors`] | isolate pool, isolate actors, worker supervisors, the worker registry |
//! | [`http`] | data plane, control plane, routes, metrics, node start-up |
//! | [`config`] | configuration types (`config/edged.toml`) |
//! | [`client`] | the control-plane client used by the CLI |
//! | [`project`] | a Wrangler project directory read, bundled (esbuild) and turned into a deploy, for the CLI |

pub mod actors;
pub mod client;
pub mod cluster;
pub mod config;
pub mod http;
pub mod js;
pub mod project;
pub mod state;
