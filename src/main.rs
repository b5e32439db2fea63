//! The `edged` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edged::client::{bindings_from_flags, name_from_path, read_modules, ControlClient};
use edged::config::Config;

#[derive(Parser)]
#[command(
    name = "edged",
    version,
    about = "A self-hostable edge runtime for Workers-style JavaScript"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct BindingFlags {
    /// Plain-text variable binding NAME=VALUE
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Secret binding NAME=VALUE (never echoed by the control plane)
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// KV namespace binding BINDING[=NAMESPACE]
    #[arg(long = "kv", value_name = "BINDING[=NAMESPACE]")]
    kv: Vec<String>,
    /// Durable Object namespace binding BINDING=Class
    #[arg(long = "do", value_name = "BINDING=CLASS")]
    durable_objects: Vec<String>,
    /// Service binding BINDING=WORKER (another worker on the same node)
    #[arg(long = "service", value_name = "BINDING=WORKER")]
    services: Vec<String>,
    /// Route pattern, e.g. 'api.example.com/*'
    #[arg(long = "route", value_name = "PATTERN")]
    routes: Vec<String>,
    /// Cron Trigger (five fields, e.g. '*/5 * * * *') that runs scheduled()
    #[arg(long = "cron", value_name = "EXPR")]
    crons: Vec<String>,
}

#[derive(clap::Args, Clone)]
struct ControlFlags {
    /// Control-plane URL
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8081",
        env = "EDGED_CONTROL"
    )]
    control: String,
    /// Control-plane bearer token
    #[arg(long, global = true, env = "EDGED_TOKEN")]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// control plane with a
    /// self-signed certificate
    #[arg(long, global = true, env = "EDGED_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
}

impl ControlFlags {
    fn client(&self) -> Result<ControlClient, edged::client::ClientError> {
        match &self.ca {
            Some(ca) => ControlClient::with_ca(&self.control, self.token.clone(), ca),
            None => Ok(ControlClient::new(&self.control, self.token.clone())),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run one node with one worker, for development (no token, state in ./.edged);
    /// SCRIPT is a worker script or a Wrangler project directory
    Dev {
        script: PathBuf,
        /// The `[env.NAME]` section of the project's Wrangler configuration
        #[arg(long)]
        env: Option<String>,
        /// Data-plane port; the control plane listens on the next one (0: any free ports)
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "./.edged")]
        data_dir: PathBuf,
        #[command(flatten)]
        bindings: BindingFlags,
    },
    /// Run a production node
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Upload a worker to a running node; SCRIPT is a worker script or a
    /// Wrangler project directory (wrangler.toml / wrangler.json[c]), bundled with esbuild
    Deploy {
        script: PathBuf,
        /// The worker's name (a project's default: its configured name)
        #[arg(long)]
        name: Option<String>,
        /// The `[env.NAME]` section of the project's Wrangler configuration
        #[arg(long)]
        env: Option<String>,
        /// The account to deploy into (with the operator's token; an account's
        /// token always deploys into its own)
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        bindings: BindingFlags,
        #[command(flatten)]
        control: ControlFlags,
    },
    /// Read and write Workers KV on a running node
    Kv {
        #[command(subcommand)]
        action: KvAction,
        #[command(flatten)]
        control: ControlFlags,
    },
    /// Manage deployed workers
    Workers {
        #[command(subcommand)]
        action: WorkersAction,
        #[command(flatten)]
        control: ControlFlags,
    },
    /// Manage accounts (operator token)
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
        #[command(flatten)]
        control: ControlFlags,
    },
    /// Inspect the cluster this node belongs to
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        #[command(flatten)]
        control: ControlFlags,
    },
    /// Manage account tokens (operator token)
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
        #[command(flatten)]
        control: ControlFlags,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Members, regions, ring and this node's health (JSON)
    Status,
}

#[derive(Subcommand)]
enum AccountsAction {
    /// Create an account
    Create { id: String },
    /// List accounts
    Ls,
    /// Remove an account with its workers, namespaces, hosts and tokens
    Rm { id: String },
    /// Give a host pattern (e.g. '*.shop.example') to an account
    AssignHost { id: String, pattern: String },
}

#[derive(Subcommand)]
enum TokensAction {
    /// Create a token for an account (printed once)
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// List tokens (ids only, never secrets)
    Ls {
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a token by id
    Revoke { id: String },
}

#[derive(Subcommand)]
enum KvAction {
    /// Print a value (raw bytes to stdout)
    Get { namespace: String, key: String },
    /// Write a value (from the argument, or stdin with --stdin)
    Put {
        namespace: String,
        key: String,
        value: Option<String>,
        #[arg(long)]
        stdin: bool,
        /// Expire after this many seconds (at least 60)
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete a key
    Delete { namespace: String, key: String },
    /// List keys (JSON), optionally under a prefix
    List {
        namespace: String,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Subcommand)]
enum WorkersAction {
    /// List live workers
    Ls,
    /// Delete a worker, all its versions and its storage
    Rm {
        name: String,
        /// Keep its Durable Object storage for a later deploy of the same name
        /// by the same account
        #[arg(long)]
        keep_storage: bool,
    },
    /// Make the previous version live again
    Rollback { name: String },
}

/// Log lines of a cluster node start with `node=<id>`.
struct NodeTagged<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for NodeTagged<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(id) = edged::cluster::NODE_ID.get() {
            write!(writer, "node={id} ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .event_format(NodeTagged(tracing_subscriber::fmt::format())),
        )
        .init();
}

/// The script's modules and the bindings given as flags.
type LoadedWorker = (
    String,
    std::collections::BTreeMap<String, edged::js::Module>,
    Vec<edged::js::Binding>,
);

fn load_worker(script: &std::path::Path, b: &BindingFlags) -> Result<LoadedWorker, String> {
    let (main_module, modules) = read_modules(script).map_err(|e| e.to_string())?;
    let flags = bindings_from_flags(&b.vars, &b.secrets, &b.kv, &b.durable_objects, &b.services)
        .map_err(|e| e.to_string())?;
    Ok((main_module, modules, flags))
}

/// A Wrangler project's deploy body, with the binding, route and cron flags
/// added to what its configuration says; prints the project's warnings.
fn project_body(
    dir: &std::path::Path,
    env: Option<&str>,
    name: Option<&str>,
    b: &BindingFlags,
) -> Result<ProjectDeploy, String> {
    let project = edged::project::load(dir, env, name).map_err(|e| e.to_string())?;
    for w in &project.warnings {
        eprintln!("warning: {w}");
    }
    let mut body = project.body;
    let flags = bindings_from_flags(&b.vars, &b.secrets, &b.kv, &b.durable_objects, &b.services)
        .map_err(|e| e.to_string())?;
    let extend = |body: &mut serde_json::Value, key: &str, more: serde_json::Value| {
        if let (Some(list), serde_json::Value::Array(more)) = (body[key].as_array_mut(), more) {
            list.extend(more);
        }
    };
    extend(&mut body, "bindings", serde_json::json!(flags));
    extend(&mut body, "routes", serde_json::json!(b.routes));
    extend(&mut body, "crons", serde_json::json!(b.crons));
    Ok((project.name, body, project.asset_blobs))
}

/// A project's name, deploy body, and asset blobs by hash.
type ProjectDeploy = (
    String,
    serde_json::Value,
    std::collections::BTreeMap<String, PathBuf>,
);

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Dev {
            script,
            env,
            port,
            data_dir,
            bindings,
        } => {
            let mut config = Config {
                dev: true,
                ..Config::default()
            };
            config.server.listen.set_port(port);
            config
                .server
                .control_listen
                .set_port(if port == 0 { 0 } else { port.wrapping_add(1) });
            config.server.data_dir = data_dir;
            if edged::project::is_project(&script) {
                let (name, body, blobs) = project_body(&script, env.as_deref(), None, &bindings)?;
                let store = edged::state::assets::AssetStore::open(&config.server.data_dir)
                    .map_err(|e| e.to_string())?;
                for (hash, path) in &blobs {
                    let content = std::fs::read(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    store
                        .put(edged::state::DEFAULT_ACCOUNT, hash, &content)
                        .map_err(|e| e.to_string())?;
                }
                let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                let deploy = edged::http::control_plane::validate_deploy(
                    &name,
                    edged::state::DEFAULT_ACCOUNT,
                    &bytes,
                )
                .map_err(|e| e.to_string())?;
                let routes = if deploy.routes.is_empty() {
                    vec!["*/*".to_owned()]
                } else {
                    deploy.routes
                };
                return edged::http::server::dev_blocking(config, deploy.script, routes)
                    .map_err(|e| e.to_string());
            }
            let (main_module, modules, flags) = load_worker(&script, &bindings)?;
            for cron in &bindings.crons {
                edged::actors::cron::parse(cron)?;
            }
            let script = edged::js::WorkerScript {
                crons: bindings.crons.clone(),
                name: name_from_path(&script),
                version: 0,
                main_module,
                modules,
                bindings: flags,
                compatibility_date: None,
                compatibility_flags: Vec::new(),
                deployed_at_ms: 0,
                assets: None,
                account: edged::state::DEFAULT_ACCOUNT.to_owned(),
                storage: String::new(),
            };
            // With no --route, the dev worker answers every host.
            let routes = if bindings.routes.is_empty() {
                vec!["*/*".to_owned()]
            } else {
                bindings.routes
            };
            edged::http::server::dev_blocking(config, script, routes).map_err(|e| e.to_string())
        }
        Command::Serve { config } => {
            let config = match config {
                Some(path) => Config::load(&path).map_err(|e| e.to_string())?,
                None => Config::default(),
            };
            if let Some(cluster) = &config.cluster {
                let _ = edged::cluster::NODE_ID.set(cluster.node_id.clone());
            }
            edged::http::server::serve_blocking(config).map_err(|e| e.to_string())
        }
        Command::Deploy {
            script,
            name,
            env,
            account,
            bindings,
            control,
        } => {
            if edged::project::is_project(&script) {
                let (name, body, blobs) =
                    project_body(&script, env.as_deref(), name.as_deref(), &bindings)?;
                let client = control.client().map_err(|e| e.0)?;
                if !blobs.is_empty() {
                    let hashes: Vec<&String> = blobs.keys().collect();
                    let missing = client
                        .missing_assets(account.as_deref(), &hashes)
                        .map_err(|e| e.to_string())?;
                    for hash in &missing {
                        let Some(path) = blobs.get(hash) else {
                            continue;
                        };
                        let content = std::fs::read(path)
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                        client
                            .put_asset(account.as_deref(), hash, content)
                            .map_err(|e| e.to_string())?;
                    }
                    eprintln!(
                        "assets: {} distinct files, {} uploaded, {} already on the node",
                        blobs.len(),
                        missing.len(),
                        blobs.len() - missing.len()
                    );
                }
                let out = client
                    .deploy_body(&name, account.as_deref(), &body)
                    .map_err(|e| e.to_string())?;
                for w in out["warnings"].as_array().into_iter().flatten() {
                    eprintln!("warning: {}", w.as_str().unwrap_or_default());
                }
                println!(
                    "deployed {} version {}",
                    out["name"].as_str().unwrap_or(&name),
                    out["version"]
                );
                return Ok(());
            }
            let name = name.ok_or("--name is required when deploying a script")?;
            let (main_module, modules, flags) = load_worker(&script, &bindings)?;
            let client = control.client().map_err(|e| e.0)?;
            let out = client
                .deploy(
                    &name,
                    account.as_deref(),
                    &main_module,
                    &modules,
                    &flags,
                    &bindings.routes,
                    &bindings.crons,
                )
                .map_err(|e| e.to_string())?;
            println!(
                "deployed {} version {}",
                out["name"].as_str().unwrap_or(&name),
                out["version"]
            );
            Ok(())
        }
        Command::Kv { action, control } => {
            let client = control.client().map_err(|e| e.0)?;
            match action {
                KvAction::Get { namespace, key } => {
                    use std::io::Write;
                    let bytes = client.kv_get(&namespace, &key).map_err(|e| e.to_string())?;
                    std::io::stdout()
                        .write_all(&bytes)
                        .map_err(|e| e.to_string())
                }
                KvAction::Put {
                    namespace,
                    key,
                    value,
                    stdin,
                    ttl,
                } => {
                    let bytes = match (value, stdin) {
                        (Some(v), false) => v.into_bytes(),
                        (None, true) => {
                            use std::io::Read;
                            let mut buf = Vec::new();
                            std::io::stdin()
                                .read_to_end(&mut buf)
                                .map_err(|e| e.to_string())?;
                            buf
                        }
                        _ => {
                            return Err(
                                "give the value as an argument or use --stdin (not both)".into()
                            )
                        }
                    };
                    client
                        .kv_put(&namespace, &key, bytes, ttl)
                        .map_err(|e| e.to_string())
                }
                KvAction::Delete { namespace, key } => client
                    .kv_delete(&namespace, &key)
                    .map_err(|e| e.to_string()),
                KvAction::List {
                    namespace,
                    prefix,
                    cursor,
                } => {
                    let out = client
                        .kv_list(&namespace, prefix.as_deref(), cursor.as_deref())
                        .map_err(|e| e.to_string())?;
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                    Ok(())
                }
            }
        }
        Command::Workers { action, control } => {
            let client = control.client().map_err(|e| e.0)?;
            let out = match action {
                WorkersAction::Ls => client.list(),
                WorkersAction::Rm { name, keep_storage } => client.delete(&name, keep_storage),
                WorkersAction::Rollback { name } => client.rollback(&name),
            }
            .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
        Command::Cluster { action, control } => {
            let client = control.client().map_err(|e| e.0)?;
            let out = match action {
                ClusterAction::Status => client.cluster(),
            }
            .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
        Command::Accounts { action, control } => {
            let client = control.client().map_err(|e| e.0)?;
            let out = match action {
                AccountsAction::Create { id } => client.create_account(&id),
                AccountsAction::Ls => client.accounts(),
                AccountsAction::Rm { id } => client.delete_account(&id),
                AccountsAction::AssignHost { id, pattern } => client.assign_host(&id, &pattern),
            }
            .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
        Command::Tokens { action, control } => {
            let client = control.client().map_err(|e| e.0)?;
            let out = match action {
                TokensAction::Create { account, label } => {
                    client.create_token(&account, label.as_deref())
                }
                TokensAction::Ls { account } => client.tokens(account.as_deref()),
                TokensAction::Revoke { id } => client.revoke_token(&id),
            }
            .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edged: {e}");
            ExitCode::FAILURE
        }
    }
}
