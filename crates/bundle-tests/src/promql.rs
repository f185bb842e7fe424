//! A small PromQL lexer: the metric names an expression selects, so that every name a rule,
//! dashboard or runbook uses can be checked against the exporter schemas. Only names are needed,
//! not a syntax tree, and promtool checks the same expressions parse (`promtool check rules`,
//! `dashboard_exprs_parse_as_promql`), so a full PromQL parser crate would add much for little.

use std::collections::BTreeSet;

const KEYWORDS_WITH_LABEL_LIST: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
/// Aggregation operators: followed by `(` or by a `by`/`without` clause, never metric names here.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}
fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Skips a quoted string starting at `i` (the quote); returns the index after it.
fn skip_string(s: &[char], i: usize) -> usize {
    let q = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != q {
        if s[j] == '\\' && q != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Skips a bracketed group (`{..}`, `[..]`, `(..)`) starting at `i`, minding strings.
fn skip_group(s: &[char], i: usize) -> usize {
    let (open, close) = (s[i], matching(s[i]));
    let mut depth = 0;
    let mut j = i;
    while j < s.len() {
        match s[j] {
            '"' | '\'' | '`' => {
                j = skip_string(s, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

fn matching(c: char) -> char {
    match c {
        '{' => '}',
        '[' => ']',
        _ => ')',
    }
}

/// The metric names selected by a PromQL expression: identifiers that are not functions,
/// aggregations, keywords, label names of grouping clauses, or inside strings, label matchers and
/// range brackets. `{__name__="x"}` selectors are not supported (the bundle does not use them).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let s: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&s, i),
            '{' | '[' => i = skip_group(&s, i),
            '#' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // numbers, durations (5m), hex, exponents (1e-3)
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                    let exp = s[i] == 'e' || s[i] == 'E';
                    i += 1;
                    if exp && i < s.len() && (s[i] == '+' || s[i] == '-') {
                        i += 1;
                    }
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let mut j = i;
                while j < s.len() && s[j].is_whitespace() {
                    j += 1;
                }
                let next = s.get(j).copied();
                let lower = word.to_ascii_lowercase();
                if KEYWORDS_WITH_LABEL_LIST.contains(&lower.as_str()) {
                    if next == Some('(') {
                        i = skip_group(&s, j);
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str())
                    || next == Some('(')
                {
                    // keyword, or a function / aggregation call
                } else {
                    out.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexer_finds_metric_names_and_nothing_else() {
        let e = r#"histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{job=~"x|y", le!="1"}[5m])))
            > 1e-3 and on (job) b_total offset 5m or sum(c:rec:rate5m) without (path) / ignoring(x) group_left(y) d
            unless label_replace(e, "dst", "$1", "src", "(.*)") > bool Inf"#;
        let got: Vec<String> = metric_names(e).into_iter().collect();
        assert_eq!(got, ["a_bucket", "b_total", "c:rec:rate5m", "d", "e"]);
    }
}
