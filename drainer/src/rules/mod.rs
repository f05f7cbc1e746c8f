//! `[syncer.binlog-filter-rule.<name>]`, `[[syncer.table-migrate-rule]]` and `case-sensitive`: which
//! events of which tables are dropped, and where a table's changes go, as upstream (tidb-tools
//! binlog-filter and table-router, v6.6 as TiDB-Binlog v8.1 uses them).
//!
//! # Filtering
//! Each `table-migrate-rule` applies its named filter rules to the tables its `source` patterns match
//! (`schema` and `table` patterns, see [`glob`]; an empty `table` makes it a schema-level rule that
//! matches every table of the schema and the schema's own DDL). A change is dropped when any matching
//! rule ignores it:
//! - `ignore-event`: DML kinds `insert`, `update`, `delete`; DDL kinds (`create table`, `drop table`,
//!   `alter table`, ... see [`EVENT_TYPES`]); `all`, `all dml`, `all ddl`; `none`, `none dml`,
//!   `none ddl` end the rule's list (nothing after them counts). Names are case-insensitive; `create
//!   schema`, `drop schema`, `alter schema` are aliases of the database ones.
//! - `ignore-sql`: regular expressions (case-insensitive, any of them) tried on a DDL's text.
//!
//! Filtering sees the upstream (source) names, after the do/ignore lists of [`crate::filter`].
//! Upstream logs and then silently drops a rule with an unknown event type or a bad expression; here
//! either is an error at start ([`RuleError`]).
//!
//! # Routing
//! A rule with a `target` sends the changes of the tables it matches to `target.schema` and
//! `target.table` (an empty `target.table` keeps the table's name). Table-level rules win over
//! schema-level ones; a table matched by two rules of one level is an error when it is met, as
//! upstream. A DDL on a routed table is rewritten to name the target (see [`ddl::rewrite`]); one that
//! cannot be (RENAME, several tables) stops the drainer with an error that says how to go on. Upstream
//! routes only for its Oracle sink; this drainer routes for every sink, so a `target` is never ignored.
//!
//! Without `case-sensitive`, patterns and names are compared lower-cased.

mod ddl;
mod glob;

use std::collections::HashMap;

use regex::Regex;

use self::ddl::DdlKind;
use self::glob::Glob;
use serde::Deserialize;

/// `{schema, table}` of a table-migrate rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaTable {
    /// Schema name or pattern.
    pub schema: String,
    /// Table name or pattern.
    pub table: String,
}

/// `[[syncer.table-migrate-rule]]`: filter rules and routing for the tables `source` matches
/// .
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableMigrateRule {
    /// Names of `[syncer.binlog-filter-rule.<name>]` rules that apply.
    pub binlog_filter_rule: Vec<String>,
    /// The upstream tables.
    pub source: SchemaTable,
    /// The downstream table.
    pub target: SchemaTable,
}

/// `[syncer.binlog-filter-rule.<name>]`: what to drop from the tables of the table-migrate-rules that
/// name it .
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BinlogFilterRule {
    /// Event types to drop.
    pub ignore_event: Vec<String>,
    /// SQL patterns to drop.
    pub ignore_sql: Vec<String>,
}

/// Every event type `ignore-event` accepts (upstream's list; aliases not included).
pub const EVENT_TYPES: &[&str] = &[
    "all",
    "all dml",
    "all ddl",
    "none",
    "none dml",
    "none ddl",
    "insert",
    "update",
    "delete",
    "create database",
    "drop database",
    "alter database",
    "create table",
    "drop table",
    "truncate table",
    "rename table",
    "create index",
    "drop index",
    "create view",
    "drop view",
    "alter table",
    "add table partition",
    "drop table partition",
    "truncate table partition",
];

/// A bad `binlog-filter-rule` or `table-migrate-rule`, found at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A table-migrate-rule names a filter rule that is not defined.
    #[error(
        "[[syncer.table-migrate-rule]] #{index} names binlog-filter-rule {name:?}, but there is no \
         [syncer.binlog-filter-rule.{name}]"
    )]
    UnknownFilter {
        /// 1-based position of the table-migrate-rule.
        index: usize,
        /// The name it gives.
        name: String,
    },
    /// `ignore-event` lists a name that is not an event type.
    #[error("[syncer.binlog-filter-rule.{rule}] ignore-event {event:?} is not an event type (one of {})", EVENT_TYPES.join(", "))]
    UnknownEvent {
        /// The filter rule.
        rule: String,
        /// The bad entry.
        event: String,
    },
    /// `ignore-sql` holds a malformed regular expression.
    #[error("[syncer.binlog-filter-rule.{rule}] ignore-sql {pattern:?} is not a valid regular expression: {source}")]
    BadSql {
        /// The filter rule.
        rule: String,
        /// The bad entry.
        pattern: String,
        /// The regex error.
        source: regex::Error,
    },
    /// A source pattern is empty or malformed.
    #[error("[[syncer.table-migrate-rule]] #{index} {key} {pattern:?}: {why}")]
    BadPattern {
        /// 1-based position of the rule.
        index: usize,
        /// `source.schema` or `source.table`.
        key: &'static str,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        why: String,
    },
    /// A target names a table but no schema.
    #[error("[[syncer.table-migrate-rule]] #{index}: target.schema must be set when target.table is ({table:?})")]
    NoTargetSchema {
        /// 1-based position of the rule.
        index: usize,
        /// The target table.
        table: String,
    },
    /// Two rules route the same source patterns.
    #[error("[[syncer.table-migrate-rule]] #{index} routes the same source as #{other} ({source_name}); keep one")]
    DuplicateRoute {
        /// 1-based position of the later rule.
        index: usize,
        /// 1-based position of the earlier one.
        other: usize,
        /// `schema`.`table` patterns.
        source_name: String,
    },
}

/// A table matched by two routes of the same level (found when its first change arrives).
#[derive(Debug, thiserror::Error)]
#[error(
    "`{schema}`.`{table}` matches {n} table-migrate-rules of the same level (#{first} and #{second}); \
     a table can be routed to one target only"
)]
pub struct AmbiguousRoute {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// How many rules match.
    pub n: usize,
    /// 1-based position of the first.
    pub first: usize,
    /// 1-based position of the second.
    pub second: usize,
}

/// A row change kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmlKind {
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Dml(DmlKind),
    Ddl(DdlKind),
}

/// One `ignore-event` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    All,
    AllDml,
    AllDdl,
    None,
    NoneDml,
    NoneDdl,
    Is(&'static str),
}

fn parse_event(s: &str) -> Option<Ev> {
    let l = s.trim().to_lowercase();
    let l = match l.as_str() {
        "create schema" => "create database".to_owned(),
        "drop schema" => "drop database".to_owned(),
        "alter schema" => "alter database".to_owned(),
        _ => l,
    };
    Some(match l.as_str() {
        "all" => Ev::All,
        "all dml" => Ev::AllDml,
        "all ddl" => Ev::AllDdl,
        "none" => Ev::None,
        "none dml" => Ev::NoneDml,
        "none ddl" => Ev::NoneDdl,
        // Upstream accepts the empty name; it never matches an event.
        "" => Ev::Is(""),
        other => Ev::Is(EVENT_TYPES.iter().copied().find(|e| *e == other)?),
    })
}

/// Where a rule applies: a schema pattern and, for a table-level rule, a table pattern.
#[derive(Debug, Clone)]
struct Scope {
    schema: Glob,
    table: Option<Glob>,
    /// The 1-based table-migrate-rule it came from.
    index: usize,
}

impl Scope {
    fn new(index: usize, schema: &str, table: &str, case_sensitive: bool) -> Result<Scope, RuleError> {
        let bad = |key, pattern: &str, why: String| RuleError::BadPattern { index, key, pattern: pattern.into(), why };
        if schema.is_empty() {
            return Err(bad("source.schema", schema, "must not be empty".into()));
        }
        let fold = |s: &str| if case_sensitive { s.to_owned() } else { s.to_lowercase() };
        let schema_glob = Glob::new(&fold(schema)).map_err(|w| bad("source.schema", schema, w))?;
        let table_glob = match table {
            "" => None,
            t => Some(Glob::new(&fold(t)).map_err(|w| bad("source.table", t, w))?),
        };
        Ok(Scope { schema: schema_glob, table: table_glob, index })
    }

    /// Whether the (already folded) names match; a schema-level scope matches every table.
    fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.matches(schema) && self.table.as_ref().is_none_or(|t| t.matches(table))
    }
}

#[derive(Debug, Clone)]
struct EventRule {
    scope: Scope,
    events: Vec<Ev>,
    sql: Option<Regex>,
}

impl EventRule {
    fn ignores(&self, ev: Option<Event>, query: &str) -> bool {
        if let Some(ev) = ev
            && self.matches_event(ev)
        {
            return true;
        }
        !query.is_empty() && self.sql.as_ref().is_some_and(|re| re.is_match(query))
    }

    /// Upstream's `matchEvent`: the first entry that decides wins; `none*` decide "no".
    fn matches_event(&self, ev: Event) -> bool {
        let (is_dml, name) = match ev {
            Event::Dml(DmlKind::Insert) => (true, "insert"),
            Event::Dml(DmlKind::Update) => (true, "update"),
            Event::Dml(DmlKind::Delete) => (true, "delete"),
            Event::Ddl(k) => (false, k.name()),
        };
        for e in &self.events {
            match e {
                Ev::All => return true,
                Ev::None => return false,
                Ev::AllDml if is_dml => return true,
                Ev::NoneDml if is_dml => return false,
                Ev::AllDdl if !is_dml => return true,
                Ev::NoneDdl if !is_dml => return false,
                Ev::Is(n) if *n == name => return true,
                _ => {}
            }
        }
        false
    }
}

#[derive(Debug, Clone)]
struct Route {
    scope: Scope,
    schema: String,
    table: String,
}

/// The compiled filter and routing rules of `[syncer]`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    events: Vec<EventRule>,
    routes: Vec<Route>,
    case_sensitive: bool,
}

impl Rules {
    /// Compiles the rules of `[syncer]`; every mistake is an error naming the rule.
    pub fn new(
        case_sensitive: bool,
        table_migrate_rule: &[TableMigrateRule],
        binlog_filter_rule: &std::collections::BTreeMap<String, BinlogFilterRule>,
    ) -> Result<Rules, RuleError> {
        let cs = case_sensitive;
        let mut filters: HashMap<&str, (Vec<Ev>, Option<Regex>)> = HashMap::new();
        for (name, r) in binlog_filter_rule {
            let mut events = Vec::new();
            for e in &r.ignore_event {
                events.push(parse_event(e).ok_or_else(|| RuleError::UnknownEvent { rule: name.clone(), event: e.clone() })?);
            }
            for p in &r.ignore_sql {
                Regex::new(p).map_err(|source| RuleError::BadSql { rule: name.clone(), pattern: p.clone(), source })?;
            }
            let sql = match r.ignore_sql.is_empty() {
                true => None,
                false => {
                    let joined = format!("(?i){}", r.ignore_sql.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|"));
                    let pattern = r.ignore_sql.join("|");
                    Some(Regex::new(&joined).map_err(|source| RuleError::BadSql { rule: name.clone(), pattern, source })?)
                }
            };
            filters.insert(name.as_str(), (events, sql));
        }
        let mut rules = Rules { case_sensitive: cs, ..Rules::default() };
        let mut route_sources: HashMap<(String, String), usize> = HashMap::new();
        let mut used = std::collections::HashSet::new();
        for (i, r) in table_migrate_rule.iter().enumerate() {
            let index = i + 1;
            let scope = Scope::new(index, &r.source.schema, &r.source.table, cs)?;
            for name in &r.binlog_filter_rule {
                let (events, sql) =
                    filters.get(name.as_str()).ok_or_else(|| RuleError::UnknownFilter { index, name: name.clone() })?;
                used.insert(name.as_str());
                rules.events.push(EventRule { scope: scope.clone(), events: events.clone(), sql: sql.clone() });
            }
            let t = &r.target;
            if t.schema.is_empty() && t.table.is_empty() {
                continue;
            }
            if t.schema.is_empty() {
                return Err(RuleError::NoTargetSchema { index, table: t.table.clone() });
            }
            let key = (r.source.schema.clone(), r.source.table.clone());
            let key = if cs { key } else { (key.0.to_lowercase(), key.1.to_lowercase()) };
            if let Some(&other) = route_sources.get(&key) {
                return Err(RuleError::DuplicateRoute {
                    index,
                    other,
                    source_name: format!("`{}`.`{}`", r.source.schema, r.source.table),
                });
            }
            route_sources.insert(key, index);
            rules.routes.push(Route { scope, schema: t.schema.clone(), table: t.table.clone() });
        }
        for name in binlog_filter_rule.keys() {
            if !used.contains(name.as_str()) {
                tracing::warn!(rule = %name, "[syncer.binlog-filter-rule.{name}] is not named by any table-migrate-rule: it applies to no table");
            }
        }
        Ok(rules)
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.routes.is_empty()
    }

    fn fold(&self, s: &str) -> String {
        if self.case_sensitive { s.to_owned() } else { s.to_lowercase() }
    }

    fn ignores(&self, schema: &str, table: &str, ev: Option<Event>, query: &str) -> bool {
        if self.events.is_empty() {
            return false;
        }
        let (s, t) = (self.fold(schema), self.fold(table));
        self.events.iter().filter(|r| r.scope.matches(&s, &t)).any(|r| r.ignores(ev, query))
    }

    /// Whether row changes of `kind` to `schema`.`table` (upstream names) are dropped.
    pub fn ignores_dml(&self, schema: &str, table: &str, kind: DmlKind) -> bool {
        self.ignores(schema, table, Some(Event::Dml(kind)), "")
    }

    /// Whether the DDL `query` on `schema`.`table` (`table` empty for a database DDL) is dropped.
    pub fn ignores_ddl(&self, schema: &str, table: &str, query: &str) -> bool {
        self.ignores(schema, table, ddl::classify(query).map(Event::Ddl), query)
    }

    /// Whether any route is configured.
    pub fn routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Where changes of `schema`.`table` (`table` empty: the schema itself) go; the names themselves
    /// when no rule routes them.
    pub fn route(&self, schema: &str, table: &str) -> Result<(String, String), AmbiguousRoute> {
        let unchanged = || (schema.to_owned(), table.to_owned());
        if self.routes.is_empty() {
            return Ok(unchanged());
        }
        let (s, t) = (self.fold(schema), self.fold(table));
        let matching: Vec<&Route> = self.routes.iter().filter(|r| r.scope.matches(&s, &t)).collect();
        let (tables, schemas): (Vec<&Route>, Vec<&Route>) = matching.into_iter().partition(|r| r.scope.table.is_some());
        let level = if table.is_empty() || tables.is_empty() { schemas } else { tables };
        let route = match level.as_slice() {
            [] => return Ok(unchanged()),
            [r] => r,
            [a, b, ..] => {
                return Err(AmbiguousRoute {
                    schema: schema.into(),
                    table: table.into(),
                    n: level.len(),
                    first: a.scope.index,
                    second: b.scope.index,
                });
            }
        };
        let target_table = if route.table.is_empty() { table.to_owned() } else { route.table.clone() };
        Ok((route.schema.clone(), target_table))
    }
}

/// A DDL's text with its table (or database) renamed to a route's target.
pub fn rewrite_ddl(query: &str, target_schema: &str, target_table: &str) -> Result<String, &'static str> {
    use crate::txn::quote_ident;
    let Some(kind) = ddl::classify(query) else { return Err(ddl::UNSUPPORTED) };
    let target = match kind {
        DdlKind::CreateDatabase | DdlKind::DropDatabase | DdlKind::AlterDatabase => quote_ident(target_schema),
        _ => format!("{}.{}", quote_ident(target_schema), quote_ident(target_table)),
    };
    ddl::rewrite(query, kind, &target).ok_or(ddl::UNSUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncerConfig;

    fn compile(c: &SyncerConfig) -> Result<Rules, RuleError> {
        Rules::new(c.case_sensitive, &c.table_migrate_rule, &c.binlog_filter_rule)
    }

    fn st(schema: &str, table: &str) -> SchemaTable {
        SchemaTable { schema: schema.into(), table: table.into() }
    }

    fn rule(filters: &[&str], source: SchemaTable, target: SchemaTable) -> TableMigrateRule {
        TableMigrateRule { binlog_filter_rule: filters.iter().map(|s| s.to_string()).collect(), source, target }
    }

    fn filter(events: &[&str], sql: &[&str]) -> BinlogFilterRule {
        BinlogFilterRule {
            ignore_event: events.iter().map(|s| s.to_string()).collect(),
            ignore_sql: sql.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cfg(filters: Vec<(&str, BinlogFilterRule)>, rules: Vec<TableMigrateRule>) -> SyncerConfig {
        SyncerConfig {
            binlog_filter_rule: filters.into_iter().map(|(n, r)| (n.to_string(), r)).collect(),
            table_migrate_rule: rules,
            ..SyncerConfig::default()
        }
    }

    #[test]
    fn dml_and_ddl_kinds_are_dropped_for_the_matched_tables_only() {
        let c = cfg(
            vec![("no-del", filter(&["delete"], &[])), ("no-trunc", filter(&["Truncate Table", "create schema"], &[]))],
            vec![rule(&["no-del", "no-trunc"], st("test", "t*"), st("", ""))],
        );
        let r = compile(&c).unwrap();
        assert!(r.ignores_dml("test", "t1", DmlKind::Delete));
        assert!(r.ignores_dml("TEST", "T2", DmlKind::Delete), "case-insensitive by default");
        assert!(!r.ignores_dml("test", "t1", DmlKind::Insert) && !r.ignores_dml("test", "t1", DmlKind::Update));
        assert!(!r.ignores_dml("test", "x1", DmlKind::Delete));
        assert!(r.ignores_ddl("test", "t1", "truncate table t1"));
        assert!(!r.ignores_ddl("test", "t1", "alter table t1 add column c int"));
        // A database DDL has an empty table name, which `t*` does not match (`*` alone would).
        assert!(!r.ignores_ddl("test", "", "create database test"));
    }

    #[test]
    fn all_and_none_and_sql_patterns() {
        let c = cfg(
            vec![
                ("ddl", filter(&["all ddl"], &[])),
                ("none-first", filter(&["none", "insert"], &[])),
                ("sql", filter(&[], &["^DROP\\s", "add\\s+index"])),
            ],
            vec![
                rule(&["ddl"], st("a", ""), st("", "")),
                rule(&["none-first"], st("b", ""), st("", "")),
                rule(&["sql"], st("c", "*"), st("", "")),
            ],
        );
        let r = compile(&c).unwrap();
        assert!(r.ignores_ddl("a", "t", "create table t (id int)") && !r.ignores_dml("a", "t", DmlKind::Insert));
        assert!(!r.ignores_dml("b", "t", DmlKind::Insert), "`none` ends the list");
        assert!(r.ignores_ddl("c", "t", "drop table t") && r.ignores_ddl("c", "t", "ALTER TABLE t ADD   INDEX i (a)"));
        assert!(!r.ignores_ddl("c", "t", "create table t (id int)") && !r.ignores_dml("c", "t", DmlKind::Delete));
        assert!(r.ignores_ddl("c", "", "DROP DATABASE c"), "`*` matches a database DDL's empty table name");
    }

    #[test]
    fn case_sensitive_compares_names_as_they_are() {
        let mut c = cfg(vec![("d", filter(&["delete"], &[]))], vec![rule(&["d"], st("Test", "T1"), st("", ""))]);
        c.case_sensitive = true;
        let r = compile(&c).unwrap();
        assert!(r.ignores_dml("Test", "T1", DmlKind::Delete));
        assert!(!r.ignores_dml("test", "t1", DmlKind::Delete));
        c.case_sensitive = false;
        let r = compile(&c).unwrap();
        assert!(r.ignores_dml("test", "t1", DmlKind::Delete) && r.ignores_dml("TEST", "t1", DmlKind::Delete));
    }

    #[test]
    fn routes_prefer_table_level_rules_and_keep_unrouted_names() {
        let c = cfg(
            vec![],
            vec![
                rule(&[], st("shard_*", "t_*"), st("merged", "t")),
                rule(&[], st("shard_*", ""), st("merged_db", "")),
                rule(&[], st("x", "a"), st("x", "b")),
                rule(&[], st("y", "a?"), st("y", "b")),
                rule(&[], st("y", "a*"), st("y", "c")),
            ],
        );
        let r = compile(&c).unwrap();
        assert_eq!(r.route("shard_1", "t_9").unwrap(), ("merged".into(), "t".into()));
        assert_eq!(r.route("shard_1", "other").unwrap(), ("merged_db".into(), "other".into()));
        assert_eq!(r.route("shard_1", "").unwrap(), ("merged_db".into(), "".into()));
        assert_eq!(r.route("x", "a").unwrap(), ("x".into(), "b".into()));
        assert_eq!(r.route("z", "a").unwrap(), ("z".into(), "a".into()));
        let e = r.route("y", "a1").unwrap_err().to_string();
        assert!(e.contains("#4 and #5"), "{e}");
        assert_eq!(r.route("y", "abc").unwrap(), ("y".into(), "c".into()));
    }

    #[test]
    fn bad_rules_are_named() {
        let e = compile(&cfg(vec![], vec![rule(&["nope"], st("a", ""), st("", ""))])).unwrap_err().to_string();
        assert!(e.contains("#1") && e.contains("\"nope\"") && e.contains("[syncer.binlog-filter-rule.nope]"), "{e}");
        let e = compile(&cfg(vec![("r", filter(&["delet"], &[]))], vec![])).unwrap_err().to_string();
        assert!(e.contains("[syncer.binlog-filter-rule.r]") && e.contains("\"delet\""), "{e}");
        let e = compile(&cfg(vec![("r", filter(&[], &["(unclosed"]))], vec![])).unwrap_err().to_string();
        assert!(e.contains("[syncer.binlog-filter-rule.r]") && e.contains("(unclosed") && e.contains("regular expression"), "{e}");
        let e = compile(&cfg(vec![], vec![rule(&[], st("", "t"), st("a", ""))])).unwrap_err().to_string();
        assert!(e.contains("source.schema"), "{e}");
        let e = compile(&cfg(vec![], vec![rule(&[], st("a*b", ""), st("a", ""))])).unwrap_err().to_string();
        assert!(e.contains("only at the end"), "{e}");
        let e = compile(&cfg(vec![], vec![rule(&[], st("a", "t"), st("", "u"))])).unwrap_err().to_string();
        assert!(e.contains("target.schema"), "{e}");
        let e = compile(&cfg(vec![], vec![rule(&[], st("a", "t"), st("b", "")), rule(&[], st("A", "T"), st("c", ""))]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("#2") && e.contains("#1"), "{e}");
    }

    #[test]
    fn ddl_is_rewritten_to_the_target() {
        assert_eq!(rewrite_ddl("alter table t1 add column c int", "m", "t").unwrap(), "alter table `m`.`t` add column c int");
        assert_eq!(rewrite_ddl("create database s1", "m", "").unwrap(), "create database `m`");
        assert!(rewrite_ddl("rename table a to b", "m", "t").is_err());
        assert!(rewrite_ddl("create sequence s", "m", "t").is_err());
    }
}
