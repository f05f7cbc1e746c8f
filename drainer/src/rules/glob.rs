//! Schema and table patterns of `[[syncer.table-migrate-rule]] source`, matched as upstream's
//! table-rule selector (tidb-tools `table-rule-selector`) does.
//!
//! A pattern is matched byte by byte against the whole name:
//! - `?` matches any one byte;
//! - `[abc]`, `[a-z]`, `[!a-z]` match one byte in (or, with `!`, not in) the listed bytes and ranges; a
//!   `[` without a closing `]` is a plain `[`, and `[!]` matches `!`;
//! - `*` matches any rest of the name, the empty rest included, and is allowed only at the end;
//! - every other byte matches itself.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
    /// Ends with `*`.
    star: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Byte(u8),
    Any,
    Range { not: bool, ranges: Vec<(u8, u8)> },
}

impl Tok {
    fn matches(&self, c: u8) -> bool {
        match self {
            Tok::Byte(b) => *b == c,
            Tok::Any => true,
            Tok::Range { not, ranges } => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *not,
        }
    }
}

impl Glob {
    /// Compiles `pattern`; the error says why it is not a pattern.
    pub(crate) fn new(pattern: &str) -> Result<Glob, String> {
        let p = pattern.as_bytes();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                b'*' if i + 1 == p.len() => return Ok(Glob { toks, star: true }),
                b'*' => return Err("`*` is allowed only at the end of a pattern".into()),
                b'?' => toks.push(Tok::Any),
                b'[' => match p[i..].iter().position(|&c| c == b']') {
                    Some(close) => {
                        toks.push(range(&p[i + 1..i + close]));
                        i += close;
                    }
                    None => toks.push(Tok::Byte(b'[')),
                },
                c => toks.push(Tok::Byte(c)),
            }
            i += 1;
        }
        Ok(Glob { toks, star: false })
    }

    /// Whether `name` matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let n = name.as_bytes();
        if n.len() < self.toks.len() || (!self.star && n.len() != self.toks.len()) {
            return false;
        }
        self.toks.iter().zip(n).all(|(t, &c)| t.matches(c))
    }
}

/// The inside of `[...]`: an optional leading `!`, then single bytes and `a-z` ranges.
fn range(inner: &[u8]) -> Tok {
    let (not, body) = match inner.first() {
        Some(b'!') => (true, &inner[1..]),
        _ => (false, inner),
    };
    if not && body.is_empty() {
        return Tok::Range { not: false, ranges: vec![(b'!', b'!')] };
    }
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == b'-' {
            ranges.push((body[i], body[i + 2]));
            i += 3;
        } else {
            ranges.push((body[i], body[i]));
            i += 1;
        }
    }
    Tok::Range { not, ranges }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn literal_question_range_and_trailing_star() {
        assert!(m("t1", "t1") && !m("t1", "t12") && !m("t1", "t"));
        assert!(m("t?", "t1") && !m("t?", "t") && !m("t?", "t12"));
        assert!(m("t*", "t") && m("t*", "t_123") && !m("t*", "x"));
        assert!(m("*", "") && m("*", "anything"));
        assert!(m("t[0-9]", "t7") && !m("t[0-9]", "ta"));
        assert!(m("t[!0-9]", "ta") && !m("t[!0-9]", "t7"));
        assert!(m("t[ab]x", "tbx") && !m("t[ab]x", "tcx"));
        assert!(m("t[!]", "t!"));
        assert!(m("t[", "t[") && !m("t[", "t"));
        assert!(m("shard_[0-9]*", "shard_3_old") && !m("shard_[0-9]*", "shard_x"));
    }

    #[test]
    fn a_star_before_the_end_is_refused() {
        let e = Glob::new("a*b").unwrap_err();
        assert!(e.contains("only at the end"), "{e}");
    }
}
