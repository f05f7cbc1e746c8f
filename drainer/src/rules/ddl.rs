//! What kind of DDL a statement is (for `ignore-event`), and renaming the one table or database a
//! DDL names (for routing), read from the statement's text.
//!
//! Upstream parses the DDL with TiDB's parser and maps the statement node to an event type
//! (tidb-tools `AstToDDLEvent`); only the leading keywords decide it, so reading them is enough here.
//! A statement that is none of the listed kinds has no event type (upstream's `NullEvent`): then only
//! `ignore-sql` can match it.

/// A DDL event type of `ignore-event`, as upstream names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DdlKind {
    CreateDatabase,
    DropDatabase,
    AlterDatabase,
    CreateTable,
    DropTable,
    TruncateTable,
    RenameTable,
    CreateIndex,
    DropIndex,
    CreateView,
    DropView,
    AlterTable,
}

impl DdlKind {
    /// Upstream's event type name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            DdlKind::CreateDatabase => "create database",
            DdlKind::DropDatabase => "drop database",
            DdlKind::AlterDatabase => "alter database",
            DdlKind::CreateTable => "create table",
            DdlKind::DropTable => "drop table",
            DdlKind::TruncateTable => "truncate table",
            DdlKind::RenameTable => "rename table",
            DdlKind::CreateIndex => "create index",
            DdlKind::DropIndex => "drop index",
            DdlKind::CreateView => "create view",
            DdlKind::DropView => "drop view",
            DdlKind::AlterTable => "alter table",
        }
    }
}

/// One token of a statement with its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An unquoted word, upper-cased.
    Word(String),
    /// A `` `quoted` `` identifier, unquoted.
    Quoted(String),
    /// A string literal (skipped by the classifier).
    Str,
    /// Any other single byte.
    Punct(u8),
}

fn tokens(sql: &str) -> Vec<(Tok, usize, usize)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = sql[i + 2..].find("*/").map(|p| i + 2 + p + 2).unwrap_or(b.len());
        } else if c == b'#' || (c == b'-' && b.get(i + 1) == Some(&b'-')) {
            i = sql[i..].find('\n').map(|p| i + p + 1).unwrap_or(b.len());
        } else if c == b'`' {
            let mut name = String::new();
            i += 1;
            let mut closed = false;
            while i < b.len() {
                if b[i] == b'`' {
                    if b.get(i + 1) == Some(&b'`') {
                        name.push('`');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    closed = true;
                    break;
                }
                let ch = sql[i..].chars().next().unwrap_or('\u{fffd}');
                name.push(ch);
                i += ch.len_utf8();
            }
            if !closed {
                out.push((Tok::Punct(b'`'), start, b.len()));
                break;
            }
            out.push((Tok::Quoted(name), start, i));
        } else if c == b'\'' || c == b'"' {
            i += 1;
            while i < b.len() {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push((Tok::Str, start, i.min(b.len())));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                i += 1;
            }
            out.push((Tok::Word(sql[start..i].to_ascii_uppercase()), start, i));
        } else {
            out.push((Tok::Punct(c), start, i + 1));
            i += 1;
        }
    }
    out
}

fn word(t: &Tok) -> Option<&str> {
    match t {
        Tok::Word(w) => Some(w),
        _ => None,
    }
}

/// Words that may come between CREATE and the object kind (`OR REPLACE`, view options, index kinds).
const CREATE_PREFIX: &[&str] = &[
    "OR", "REPLACE", "TEMPORARY", "GLOBAL", "LOCAL", "ALGORITHM", "UNDEFINED", "MERGE", "TEMPTABLE", "DEFINER",
    "CURRENT_USER", "SQL", "SECURITY", "INVOKER", "UNIQUE", "FULLTEXT", "SPATIAL",
];

/// The event type of a DDL statement; `None` when it is none of upstream's kinds.
pub(crate) fn classify(sql: &str) -> Option<DdlKind> {
    let toks = tokens(sql);
    let mut words = toks.iter().filter(|(t, _, _)| !matches!(t, Tok::Punct(b';'))).map(|(t, _, _)| t);
    let first = words.next().and_then(word)?;
    match first {
        "CREATE" => {
            for t in words {
                match t {
                    Tok::Word(w) if CREATE_PREFIX.contains(&w.as_str()) => continue,
                    Tok::Word(w) => {
                        return match w.as_str() {
                            "DATABASE" | "SCHEMA" => Some(DdlKind::CreateDatabase),
                            "TABLE" => Some(DdlKind::CreateTable),
                            "INDEX" => Some(DdlKind::CreateIndex),
                            "VIEW" => Some(DdlKind::CreateView),
                            _ => None,
                        };
                    }
                    // `DEFINER = 'u'@'h'`, `ALGORITHM = MERGE`.
                    Tok::Str | Tok::Quoted(_) | Tok::Punct(b'=' | b'@' | b'(' | b')') => continue,
                    _ => return None,
                }
            }
            None
        }
        "DROP" => {
            let mut next = words.next().and_then(word)?;
            if next == "TEMPORARY" || next == "GLOBAL" {
                next = words.next().and_then(word)?;
            }
            match next {
                "DATABASE" | "SCHEMA" => Some(DdlKind::DropDatabase),
                "TABLE" | "TABLES" => Some(DdlKind::DropTable),
                "VIEW" => Some(DdlKind::DropView),
                "INDEX" => Some(DdlKind::DropIndex),
                _ => None,
            }
        }
        "ALTER" => {
            let mut next = words.next().and_then(word)?;
            if next == "IGNORE" {
                next = words.next().and_then(word)?;
            }
            match next {
                "DATABASE" | "SCHEMA" => Some(DdlKind::AlterDatabase),
                "TABLE" => Some(DdlKind::AlterTable),
                _ => None,
            }
        }
        "TRUNCATE" => Some(DdlKind::TruncateTable),
        "RENAME" => match words.next().and_then(word)? {
            "TABLE" | "TABLES" => Some(DdlKind::RenameTable),
            _ => None,
        },
        _ => None,
    }
}

/// The byte span of the name right after token `at`: `name`, `` `name` ``, or `db.name` in either
/// quoting, plus where the tokens after it start.
fn name_span(toks: &[(Tok, usize, usize)], at: usize) -> Option<(usize, usize, usize)> {
    let is_ident = |t: &Tok| matches!(t, Tok::Word(_) | Tok::Quoted(_));
    let (first, start, end) = toks.get(at)?;
    if !is_ident(first) {
        return None;
    }
    let (start, mut end) = (*start, *end);
    let mut next = at + 1;
    if let (Some((Tok::Punct(b'.'), _, _)), Some((t, _, e))) = (toks.get(at + 1), toks.get(at + 2))
        && is_ident(t)
    {
        end = *e;
        next = at + 3;
    }
    Some((start, end, next))
}

/// Why a DDL could not be rewritten for its route.
pub(crate) const UNSUPPORTED: &str = "only CREATE/ALTER/DROP/TRUNCATE TABLE, CREATE/DROP INDEX and CREATE/ALTER/DROP \
     DATABASE naming one table or database can be routed";

/// `sql` with the one table (or, for a database DDL, database) it names replaced by `target`
/// (already quoted), or `None` when the statement is not of a form that names exactly one.
pub(crate) fn rewrite(sql: &str, kind: DdlKind, target: &str) -> Option<String> {
    let toks = tokens(sql);
    let w = |i: usize| toks.get(i).and_then(|(t, _, _)| word(t));
    let pos = |from: usize, want: &str| (from..toks.len()).find(|&i| w(i) == Some(want));
    let skip_if = |mut i: usize, words: &[&str]| {
        while w(i).is_some_and(|x| words.contains(&x)) {
            i += 1;
        }
        i
    };
    let name_at = match kind {
        DdlKind::CreateDatabase | DdlKind::DropDatabase | DdlKind::AlterDatabase => {
            let at = pos(0, "DATABASE").or_else(|| pos(0, "SCHEMA"))?;
            let i = skip_if(at + 1, &["IF", "NOT", "EXISTS"]);
            // ALTER DATABASE without a name alters the current one: nothing to rename.
            if kind == DdlKind::AlterDatabase && w(i).is_some_and(|x| ["CHARACTER", "CHARSET", "COLLATE", "DEFAULT", "SET"].contains(&x)) {
                return Some(sql.to_owned());
            }
            i
        }
        DdlKind::CreateTable | DdlKind::AlterTable | DdlKind::DropTable => {
            let at = pos(0, "TABLE")?;
            skip_if(at + 1, &["IF", "NOT", "EXISTS"])
        }
        DdlKind::TruncateTable => {
            let i = pos(0, "TRUNCATE")? + 1;
            skip_if(i, &["TABLE"])
        }
        DdlKind::CreateIndex | DdlKind::DropIndex => pos(0, "ON")? + 1,
        DdlKind::RenameTable | DdlKind::CreateView | DdlKind::DropView => return None,
    };
    let (start, end, next) = name_span(&toks, name_at)?;
    let rest = &toks[next..];
    // A second table in the statement would keep its source name: refuse rather than half-route.
    let names_another = match kind {
        DdlKind::DropTable => rest.first().is_some_and(|(t, _, _)| *t == Tok::Punct(b',')),
        DdlKind::CreateTable => rest.iter().any(|(t, _, _)| word(t) == Some("LIKE") || word(t) == Some("SELECT")),
        DdlKind::AlterTable => rest.windows(2).any(|p| {
            word(&p[0].0) == Some("RENAME") && !matches!(word(&p[1].0), Some("COLUMN" | "INDEX" | "KEY"))
        }),
        _ => false,
    };
    if names_another {
        return None;
    }
    Some(format!("{}{target}{}", &sql[..start], &sql[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_map_to_upstream_event_types() {
        let cases = [
            ("create database d", Some(DdlKind::CreateDatabase)),
            ("CREATE SCHEMA IF NOT EXISTS d", Some(DdlKind::CreateDatabase)),
            ("drop database d", Some(DdlKind::DropDatabase)),
            ("alter database d charset utf8mb4", Some(DdlKind::AlterDatabase)),
            ("create table t (id int)", Some(DdlKind::CreateTable)),
            ("/* c */ CREATE TEMPORARY TABLE t (id int)", Some(DdlKind::CreateTable)),
            ("drop table if exists t", Some(DdlKind::DropTable)),
            ("truncate table t", Some(DdlKind::TruncateTable)),
            ("truncate t", Some(DdlKind::TruncateTable)),
            ("rename table a to b", Some(DdlKind::RenameTable)),
            ("create unique index i on t (a)", Some(DdlKind::CreateIndex)),
            ("drop index i on t", Some(DdlKind::DropIndex)),
            ("CREATE OR REPLACE ALGORITHM=MERGE DEFINER='root'@'%' SQL SECURITY DEFINER VIEW v AS select 1", Some(DdlKind::CreateView)),
            ("drop view v", Some(DdlKind::DropView)),
            ("alter table t add column c int", Some(DdlKind::AlterTable)),
            ("ALTER TABLE t ADD INDEX i (c)", Some(DdlKind::AlterTable)),
            ("create sequence s", None),
            ("alter user u", None),
            ("", None),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql), want, "{sql}");
        }
    }

    #[test]
    fn the_one_named_table_is_replaced() {
        let t = "`x`.`all`";
        let cases = [
            ("create table t1 (id int)", DdlKind::CreateTable, Some("create table `x`.`all` (id int)")),
            ("CREATE TABLE IF NOT EXISTS `test`.`t1` (id int)", DdlKind::CreateTable, Some("CREATE TABLE IF NOT EXISTS `x`.`all` (id int)")),
            ("alter table test.t1 add column c int", DdlKind::AlterTable, Some("alter table `x`.`all` add column c int")),
            ("alter table t1 rename column a to b", DdlKind::AlterTable, Some("alter table `x`.`all` rename column a to b")),
            ("drop table if exists t1", DdlKind::DropTable, Some("drop table if exists `x`.`all`")),
            ("truncate table t1", DdlKind::TruncateTable, Some("truncate table `x`.`all`")),
            ("create index i on t1 (a)", DdlKind::CreateIndex, Some("create index i on `x`.`all` (a)")),
            ("drop index i on `t``1`", DdlKind::DropIndex, Some("drop index i on `x`.`all`")),
            ("drop table t1, t2", DdlKind::DropTable, None),
            ("create table t1 like t0", DdlKind::CreateTable, None),
            ("alter table t1 rename to t2", DdlKind::AlterTable, None),
            ("rename table t1 to t2", DdlKind::RenameTable, None),
        ];
        for (sql, kind, want) in cases {
            assert_eq!(rewrite(sql, kind, t).as_deref(), want, "{sql}");
        }
        assert_eq!(rewrite("create database if not exists d", DdlKind::CreateDatabase, "`e`").as_deref(), Some("create database if not exists `e`"));
    }
}
