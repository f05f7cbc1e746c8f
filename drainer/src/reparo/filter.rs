//! Schema/table filters: `replicate-do-db`, `replicate-do-table`, `replicate-ignore-db`,
//! `replicate-ignore-table`. Names are compared lower-cased; a pattern starting with `~` is a regular
//! expression (matched anywhere in the name, as Go's `MatchString`).
//!
//! Order: an ignored db is skipped; then, if any do-db or do-table rule exists, only matching
//! schemas/tables pass; then ignored tables are skipped.

use regex::Regex;

use super::ReparoError;

/// A name or a `~regex`.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Exact (lower-cased) name.
    Name(String),
    /// Regular expression.
    Regex(Regex),
}

impl Pattern {
    /// Parses `name` or `~regex`.
    pub fn new(s: &str) -> Result<Self, ReparoError> {
        match s.strip_prefix('~') {
            Some(re) => Regex::new(re)
                .map(Pattern::Regex)
                .map_err(|e| ReparoError::Config(format!("bad filter regex {s:?}: {e}"))),
            None => Ok(Pattern::Name(s.to_lowercase())),
        }
    }

    /// Whether the (lower-cased) name matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Name(n) => *n == name,
            Pattern::Regex(r) => r.is_match(name),
        }
    }
}

/// A `{db-name, tbl-name}` rule.
#[derive(Debug, Clone)]
pub struct TableRule {
    db: Pattern,
    table: Pattern,
}

impl TableRule {
    /// A rule from its db and table patterns.
    pub fn new(db: &str, table: &str) -> Result<Self, ReparoError> {
        Ok(Self { db: Pattern::new(db)?, table: Pattern::new(table)? })
    }

    fn matches(&self, db: &str, table: &str) -> bool {
        self.db.matches(db) && self.table.matches(table)
    }
}

/// The four filter lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    do_dbs: Vec<Pattern>,
    do_tables: Vec<TableRule>,
    ignore_dbs: Vec<Pattern>,
    ignore_tables: Vec<TableRule>,
}

impl Filter {
    /// Builds a filter; every pattern is checked here.
    pub fn new(
        do_dbs: &[String],
        do_tables: Vec<TableRule>,
        ignore_dbs: &[String],
        ignore_tables: Vec<TableRule>,
    ) -> Result<Self, ReparoError> {
        let pats = |v: &[String]| v.iter().map(|s| Pattern::new(s)).collect::<Result<Vec<_>, _>>();
        Ok(Self { do_dbs: pats(do_dbs)?, do_tables, ignore_dbs: pats(ignore_dbs)?, ignore_tables })
    }

    /// Whether changes to `db`.`table` are skipped (`table` empty for schema-level DDL).
    pub fn skip(&self, db: &str, table: &str) -> bool {
        let (db, table) = (db.to_lowercase(), table.to_lowercase());
        if self.ignore_dbs.iter().any(|p| p.matches(&db)) {
            return true;
        }
        if !self.do_dbs.is_empty() || !self.do_tables.is_empty() {
            let by_db = self.do_dbs.iter().any(|p| p.matches(&db));
            let by_table = self.do_tables.iter().any(|r| {
                // A schema-level statement passes if some do-table rule is in that schema.
                if table.is_empty() { r.db.matches(&db) } else { r.matches(&db, &table) }
            });
            if !by_db && !by_table {
                return true;
            }
        }
        !table.is_empty() && self.ignore_tables.iter().any(|r| r.matches(&db, &table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn do_and_ignore_rules_with_regexes() {
        let f = Filter::new(
            &["Keep".into()],
            vec![TableRule::new("other", "~^t[0-9]$").unwrap()],
            &["~^mysql$".into()],
            vec![TableRule::new("keep", "secret").unwrap()],
        )
        .unwrap();
        assert!(!f.skip("KEEP", "a"));
        assert!(f.skip("keep", "Secret"));
        assert!(!f.skip("other", "t1"));
        assert!(f.skip("other", "t10"));
        assert!(!f.skip("other", ""), "schema-level DDL of a schema with do-table rules passes");
        assert!(f.skip("mysql", "user"));
        assert!(f.skip("third", "a"));
        assert!(!Filter::default().skip("any", "t"));
        assert!(Pattern::new("~(").is_err());
    }
}
