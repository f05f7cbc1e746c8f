//! Which schemas and tables are replicated: `replicate-do-db`, `[[syncer.replicate-do-table]]`,
//! `ignore-schemas`, `[[syncer.ignore-table]]`, as upstream's `pkg/filter`.
//!
//! Names are lower-cased before matching. A pattern starting with `~` is a case-insensitive regular
//! expression (unanchored, as Go's `MatchString`); any other pattern matches exactly, ignoring case.
//! First the do-lists: with both empty everything passes, otherwise a table passes if it matches a
//! do-table or its schema matches a do-db. Then the ignore-lists drop what matches.

use regex::Regex;

use crate::config::{SyncerConfig, TableName};

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Re(Regex),
}

impl Pattern {
    fn new(p: &str) -> Result<Self, regex::Error> {
        match p.strip_prefix('~') {
            Some(re) => Ok(Pattern::Re(Regex::new(&format!("(?i){re}"))?)),
            None => Ok(Pattern::Exact(p.to_lowercase())),
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == s,
            Pattern::Re(re) => re.is_match(s),
        }
    }
}

/// The schema/table filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    do_dbs: Vec<Pattern>,
    do_tables: Vec<(Pattern, Pattern)>,
    ignore_dbs: Vec<Pattern>,
    ignore_tables: Vec<(Pattern, Pattern)>,
}

fn tables(list: &[TableName]) -> Result<Vec<(Pattern, Pattern)>, regex::Error> {
    list.iter().map(|t| Ok((Pattern::new(&t.db_name)?, Pattern::new(&t.tbl_name)?))).collect()
}

impl Filter {
    /// Builds the filter from `[syncer]`.
    pub fn new(cfg: &SyncerConfig) -> Result<Self, regex::Error> {
        Ok(Filter {
            do_dbs: cfg.replicate_do_db.iter().map(|p| Pattern::new(p)).collect::<Result<_, _>>()?,
            do_tables: tables(&cfg.replicate_do_table)?,
            ignore_dbs: cfg.ignore_schema_list().iter().map(|p| Pattern::new(p)).collect::<Result<_, _>>()?,
            ignore_tables: tables(&cfg.ignore_table)?,
        })
    }

    /// Whether changes to `schema`.`table` (table may be empty for schema-level DDL) are dropped.
    pub fn skip(&self, schema: &str, table: &str) -> bool {
        let (s, t) = (schema.to_lowercase(), table.to_lowercase());
        let in_table = |list: &[(Pattern, Pattern)]| list.iter().any(|(ps, pt)| ps.matches(&s) && pt.matches(&t));
        let in_db = |list: &[Pattern]| list.iter().any(|p| p.matches(&s));
        if !(self.do_dbs.is_empty() && self.do_tables.is_empty()) && !in_table(&self.do_tables) && !in_db(&self.do_dbs) {
            return true;
        }
        in_table(&self.ignore_tables) || in_db(&self.ignore_dbs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tn(d: &str, t: &str) -> TableName {
        TableName { db_name: d.into(), tbl_name: t.into() }
    }

    #[test]
    fn do_lists_then_ignore_lists() {
        let cfg = SyncerConfig {
            replicate_do_db: vec!["~^b.*".into(), "S1".into()],
            replicate_do_table: vec![tn("test", "log"), tn("test", "~^a.*")],
            ignore_table: vec![tn("s1", "secret")],
            ..SyncerConfig::default()
        };
        let f = Filter::new(&cfg).unwrap();
        assert!(!f.skip("test", "log"));
        assert!(!f.skip("TEST", "Abc"));
        assert!(f.skip("test", "other"));
        assert!(!f.skip("bank", "x"));
        assert!(!f.skip("s1", "x"));
        assert!(f.skip("s1", "secret"));
        assert!(f.skip("s2", "x"));
        assert!(f.skip("mysql", "user")); // not in the do-lists
    }

    #[test]
    fn default_ignores_system_schemas_only() {
        let f = Filter::new(&SyncerConfig::default()).unwrap();
        assert!(f.skip("mysql", "user"));
        assert!(f.skip("information_schema", "tables"));
        assert!(!f.skip("test", "t"));
        assert!(!f.skip("test", ""));
    }
}
