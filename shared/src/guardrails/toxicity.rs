//! Toxicity: whole-word, case-insensitive matches of the terms a workflow
//! author lists.
//!
//! Terms are literal text (escaped before they reach the regex engine), so a
//! term like `a.b` matches only `a.b`. A term made of several words matches
//! with any run of whitespace between them. "Whole word" means a term that
//! starts (ends) with a letter, digit or `_` must not be preceded (followed)
//! by one; terms that start or end with punctuation match wherever that
//! punctuation is.

use regex::Regex;

/// The regex for `terms`: one alternation, longest term first so that
/// "heck off" wins over "heck". `Ok(None)` when no term has any text.
pub(super) fn compile(terms: &[String]) -> Result<Option<Regex>, regex::Error> {
    let mut terms: Vec<&str> = terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    if terms.is_empty() {
        return Ok(None);
    }
    terms.sort_by_key(|t| std::cmp::Reverse(t.len()));
    terms.dedup();
    let alternatives: Vec<String> = terms.iter().map(|t| term_pattern(t)).collect();
    Regex::new(&format!("(?i){}", alternatives.join("|"))).map(Some)
}

fn term_pattern(term: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let body = term
        .split_whitespace()
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(r"\s+");
    let before = if is_word(term.chars().next()) {
        r"\b"
    } else {
        ""
    };
    let after = if is_word(term.chars().next_back()) {
        r"\b"
    } else {
        ""
    };
    format!("(?:{before}{body}{after})")
}

/// Byte ranges of every match of any term in `text`, in text order. Terms
/// that cannot be compiled (only possible for absurdly long lists, which
/// `check` reports) fall back to one regex per term, skipping any that
/// still fail.
pub(super) fn find(terms: &[String], text: &str) -> Vec<(usize, usize)> {
    match compile(terms) {
        Ok(Some(re)) => re.find_iter(text).map(|m| (m.start(), m.end())).collect(),
        Ok(None) => Vec::new(),
        Err(_) => {
            let mut out: Vec<(usize, usize)> = terms
                .iter()
                .filter_map(|t| compile(std::slice::from_ref(t)).ok().flatten())
                .flat_map(|re| {
                    re.find_iter(text)
                        .map(|m| (m.start(), m.end()))
                        .collect::<Vec<_>>()
                })
                .collect();
            out.sort_unstable();
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches<'a>(terms: &[&str], text: &'a str) -> Vec<&'a str> {
        let terms: Vec<String> = terms.iter().map(|t| t.to_string()).collect();
        find(&terms, text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    #[test]
    fn whole_words_case_insensitive() {
        assert_eq!(
            matches(&["darn"], "Darn it, DARN! darned darning undarn darn_x"),
            ["Darn", "DARN"]
        );
        assert_eq!(matches(&["ass"], "a class assessment"), Vec::<&str>::new());
        assert_eq!(matches(&["ass"], "you ass."), ["ass"]);
    }

    #[test]
    fn terms_are_escaped() {
        assert_eq!(matches(&["a.b"], "axb a.b"), ["a.b"]);
        assert_eq!(matches(&["(x)"], "see (x) and x"), ["(x)"]);
        assert_eq!(matches(&["f*ck"], "what the F*CK"), ["F*CK"]);
        assert_eq!(matches(&[".*"], "nothing here"), Vec::<&str>::new());
    }

    #[test]
    fn multi_word_and_overlapping_terms() {
        assert_eq!(
            matches(&["heck", "heck off"], "Heck   off, and heck."),
            ["Heck   off", "heck"]
        );
    }

    #[test]
    fn unicode_terms() {
        assert_eq!(matches(&["mist"], "So ein Mist! Mistgabel"), ["Mist"]);
        assert_eq!(matches(&["ÄRGER"], "kein ärger"), ["ärger"]);
    }

    #[test]
    fn blank_terms_match_nothing() {
        assert_eq!(matches(&[], "anything"), Vec::<&str>::new());
        assert_eq!(matches(&["", "  "], "anything"), Vec::<&str>::new());
    }
}
