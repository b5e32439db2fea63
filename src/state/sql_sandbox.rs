//! The SQL sandbox: what tenant SQL (a Durable Object's `ctx.storage.sql`, and
//! later D1) may do on a connection the runtime also uses.
//!
//! Design. Tenant statements are compiled with an *authorizer* installed
//! ([`with_tenant_authorizer`]): SQLite asks it about every table, column,
//! pragma, function and schema change a statement touches, before the
//! statement can run, and a refusal fails the statement at `prepare`. It allows
//! what Workers allows — reading and writing the tenant's own tables, views,
//! indexes and triggers, FTS5, CTEs, the introspection pragmas and the few
//! behaviour pragmas of Workers' list — and refuses the rest: `ATTACH`/`DETACH`
//! (files elsewhere, other tenants' databases), `BEGIN`/`SAVEPOINT` (the
//! runtime owns transactions), temporary objects, every pragma not listed (page
//! limits, `writable_schema`, journal and sync settings, `database_list`), any
//! access to the runtime's `_edged_*` tables or to SQLite's internal tables but
//! the schema, and functions that reach outside the database. The runtime's own
//! statements run with no authorizer.
//!
//! Every connection is also hardened once at open ([`harden`]): defensive mode
//! (no schema corruption even through allowed paths), no trusted schema, no
//! extension loading, and SQLite limits that bound one value, one statement and
//! attached databases (none). A progress handler interrupts a statement as soon
//! as the isolate's CPU watchdog has fired for the running request, so a
//! runaway query stops at the CPU limit instead of holding the isolate thread.

use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::Connection;

/// Workers' limit on one string, BLOB or row in SQL (and a key plus its value
/// in the key-value API, which shares the table format).
pub const MAX_VALUE_BYTES: i32 = (2 << 20) + 1024;
/// Workers' limit on one SQL statement.
pub const MAX_SQL_BYTES: i32 = 100_000;
/// Workers' limits on bound parameters and on columns of a table.
pub const MAX_BINDINGS: i32 = 100;
pub const MAX_COLUMNS: i32 = 100;

/// Pragmas tenant SQL may run (Workers' list for Durable Object SQL and D1).
/// Those marked `true` may also be set; the rest are read-only.
const PRAGMAS: &[(&str, bool)] = &[
    ("table_list", false),
    ("table_info", false),
    ("table_xinfo", false),
    ("index_list", false),
    ("index_info", false),
    ("index_xinfo", false),
    ("foreign_key_list", false),
    ("foreign_key_check", false),
    ("quick_check", false),
    ("integrity_check", false),
    ("optimize", false),
    ("data_version", false),
    ("foreign_keys", true),
    ("defer_foreign_keys", true),
    ("case_sensitive_like", true),
    ("ignore_check_constraints", true),
    ("legacy_alter_table", true),
    ("recursive_triggers", true),
    ("reverse_unordered_selects", true),
];

/// SQLite's own tables a tenant may read.
const READABLE_INTERNAL: &[&str] = &[
    "sqlite_master",
    "sqlite_schema",
    "sqlite_temp_master",
    "sqlite_temp_schema",
    "sqlite_sequence",
    "sqlite_stat1",
    "sqlite_stat4",
];

/// Functions tenant SQL may not call.
const DENIED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer", "readfile", "writefile"];

/// Virtual table modules tenant SQL may create.
const MODULES: &[&str] = &["fts5"];

fn reserved(name: &str) -> bool {
    name.len() >= 7 && name[..7].eq_ignore_ascii_case("_edged_")
}

fn internal(name: &str) -> bool {
    name.len() >= 7 && name[..7].eq_ignore_ascii_case("sqlite_")
}

/// Why the authorizer refused the last statement (for the error message).
pub type Refusal = Arc<Mutex<Option<String>>>;

/// The authorizer's verdict on one action: `None` allows it.
pub fn refuse(ctx: &AuthContext<'_>) -> Option<String> {
    // Everything lives in the main database: no attached or temp schema.
    if let Some(db) = ctx.database_name {
        if !db.eq_ignore_ascii_case("main") && !db.is_empty() {
            // `temp` shows up for reads of the temp schema table only.
            let schema_read = matches!(
                ctx.action,
                AuthAction::Read { table_name, .. } if READABLE_INTERNAL.iter().any(|t| t.eq_ignore_ascii_case(table_name))
            );
            if !schema_read {
                return Some(format!("database '{db}' is not available"));
            }
        }
    }
    let table = |name: &str, write: bool| -> Option<String> {
        if reserved(name) {
            return Some(
                "access to the runtime's reserved tables (_edged_*) is not allowed".into(),
            );
        }
        if internal(name) {
            let readable = READABLE_INTERNAL
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name));
            // DDL rewrites the schema table itself; SQLite refuses direct
            // writes to it (defensive mode, no writable_schema).
            let schema_change = write && name.eq_ignore_ascii_case("sqlite_master");
            if !(readable || schema_change) {
                return Some(format!(
                    "access to SQLite's internal table '{name}' is not allowed"
                ));
            }
        }
        None
    };
    match &ctx.action {
        AuthAction::Select | AuthAction::Recursive => None,
        AuthAction::Read { table_name, .. } => table(table_name, false),
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::CreateTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::Analyze { table_name }
        | AuthAction::AlterTable { table_name, .. } => table(table_name, true),
        AuthAction::CreateIndex {
            index_name,
            table_name,
        }
        | AuthAction::DropIndex {
            index_name,
            table_name,
        } => table(index_name, true).or_else(|| table(table_name, true)),
        AuthAction::CreateTrigger {
            trigger_name,
            table_name,
        }
        | AuthAction::DropTrigger {
            trigger_name,
            table_name,
        } => table(trigger_name, true).or_else(|| table(table_name, true)),
        AuthAction::CreateView { view_name } | AuthAction::DropView { view_name } => {
            table(view_name, true)
        }
        AuthAction::Reindex { index_name } => table(index_name, true),
        AuthAction::CreateVtable {
            table_name,
            module_name,
        }
        | AuthAction::DropVtable {
            table_name,
            module_name,
        } => {
            if !MODULES.iter().any(|m| m.eq_ignore_ascii_case(module_name)) {
                return Some(format!("virtual table module '{module_name}' is not available"));
            }
            table(table_name, true)
        }
        AuthAction::Function { function_name } => DENIED_FUNCTIONS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(function_name))
            .then(|| format!("the SQL function {function_name}() is not allowed")),
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let Some((_, settable)) = PRAGMAS
                .iter()
                .find(|(p, _)| p.eq_ignore_ascii_case(pragma_name))
            else {
                return Some(format!("PRAGMA {pragma_name} is not allowed"));
            };
            match pragma_value {
                // A table or index argument: the same rules as any access.
                Some(v) if !settable => table(v.trim_matches(['"', '\'', '`', '[', ']']), false),
                _ => None,
            }
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Some(
            "To execute a transaction, please use the state.storage.transaction() or state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT statements. The JavaScript API is safer because it will automatically roll back on exceptions, and because it interacts correctly with Durable Objects' automatic atomic write coalescing."
                .into(),
        ),
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Some("ATTACH and DETACH are not allowed".into())
        }
        AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. } => Some("temporary tables, views and triggers are not allowed".into()),
        _ => Some("this SQL operation is not allowed".into()),
    }
}

/// Runs `f` (which prepares and runs tenant SQL on `conn`) with the tenant
/// authorizer installed; the refusal, if one stopped a statement, is in
/// `refusal` afterwards.
pub fn with_tenant_authorizer<R>(conn: &Connection, refusal: &Refusal, f: impl FnOnce() -> R) -> R {
    if let Ok(mut r) = refusal.lock() {
        *r = None;
    }
    let record = refusal.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| match refuse(&ctx) {
        None => Authorization::Allow,
        Some(why) => {
            if let Ok(mut r) = record.lock() {
                r.get_or_insert(why);
            }
            Authorization::Deny
        }
    }));
    let out = f();
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    out
}

/// SQLite's memory for the whole process (every object, namespace and store):
/// past the soft limit it frees caches, past the hard one an allocation fails
/// with "out of memory" in the statement that asked, never the process.
pub fn limit_process_memory(soft_bytes: i64, hard_bytes: i64) {
    // SAFETY: both calls only set process-wide limits; any value is valid.
    unsafe {
        rusqlite::ffi::sqlite3_soft_heap_limit64(soft_bytes);
        rusqlite::ffi::sqlite3_hard_heap_limit64(hard_bytes);
    }
}

/// Settings every object connection gets at open.
pub fn harden(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES);
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES);
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
    conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, MAX_BINDINGS);
    conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, MAX_COLUMNS);
    conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, 100);
    conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, 100);
    conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 100);
    conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50_000);
    // Interrupt SQL once the running request is over its CPU budget (checked
    // every thousand virtual-machine steps: a few microseconds apart).
    conn.progress_handler(1000, Some(crate::js::limits::over_budget));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(conn: &Connection, sql: &str) -> Result<(), String> {
        let refusal = Refusal::default();
        let result = with_tenant_authorizer(conn, &refusal, || conn.execute_batch(sql));
        result.map_err(|e| {
            refusal
                .lock()
                .ok()
                .and_then(|r| r.clone())
                .unwrap_or_else(|| e.to_string())
        })
    }

    #[test]
    fn tenant_sql_stays_in_its_own_tables() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("o.db")).unwrap();
        harden(&conn).unwrap();
        conn.execute_batch("CREATE TABLE _edged_kv (k TEXT)")
            .unwrap();
        assert!(tenant(
            &conn,
            "CREATE TABLE t (a INTEGER, b TEXT); INSERT INTO t VALUES (1, 'x')"
        )
        .is_ok());
        assert!(tenant(
            &conn,
            "CREATE INDEX i ON t(a); CREATE VIEW v AS SELECT a FROM t"
        )
        .is_ok());
        assert!(tenant(&conn, "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 5) SELECT * FROM c").is_ok());
        assert!(tenant(&conn, "SELECT name FROM sqlite_master").is_ok());
        assert!(tenant(&conn, "PRAGMA table_info(t)").is_ok());
        assert!(tenant(&conn, "PRAGMA foreign_keys = ON").is_ok());
        for bad in [
            "SELECT * FROM _edged_kv",
            "SELECT * FROM main._EDGED_KV",
            "INSERT INTO \"_edged_kv\" VALUES ('x')",
            "CREATE TRIGGER tr AFTER INSERT ON _edged_kv BEGIN SELECT 1; END",
            "PRAGMA table_info(_edged_kv)",
            "ATTACH DATABASE '/tmp/x.db' AS x",
            "PRAGMA max_page_count = 1000000000",
            "PRAGMA writable_schema = 1",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA database_list",
            "BEGIN",
            "SAVEPOINT s",
            "CREATE TEMP TABLE tt (a)",
            "SELECT load_extension('x')",
            "VACUUM INTO '/tmp/copy.db'",
        ] {
            assert!(tenant(&conn, bad).is_err(), "allowed: {bad}");
        }
        // Values over the limit are refused by SQLite itself.
        let big = tenant(&conn, "SELECT randomblob(900000000)");
        assert!(big.is_err());
    }
}
