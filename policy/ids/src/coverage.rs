//! The coverage report: how much of a rule set compiled and what refused
//! the rest.

use std::collections::BTreeMap;
use std::fmt;

use crate::Ruleset;

/// How many rules compiled, and the refusals counted by keyword.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Rules in the text (compiled and refused).
    pub total: usize,
    /// Rules compiled.
    pub compiled: usize,
    /// Rules refused.
    pub refused: usize,
    /// Refusals that name a keyword, counted by keyword (lower case): each
    /// refused rule counts once, under the keyword of its refusal. An
    /// unsupported action or protocol counts under its word (`pass`,
    /// `http`).
    pub keywords: BTreeMap<String, usize>,
    /// Refusals that name no keyword (a malformed header or rule, an unknown
    /// variable, a rule without `sid` or without content, …).
    pub other: usize,
}

impl Ruleset {
    /// The coverage report of this rule set.
    pub fn coverage(&self) -> Coverage {
        let mut keywords = BTreeMap::new();
        let mut other = 0;
        for r in &self.refused {
            match &r.keyword {
                Some(k) => *keywords.entry(k.clone()).or_insert(0) += 1,
                None => other += 1,
            }
        }
        Coverage {
            total: self.rules.len() + self.refused.len(),
            compiled: self.rules.len(),
            refused: self.refused.len(),
            keywords,
            other,
        }
    }
}

impl fmt::Display for Coverage {
    /// `N of M rules compiled; refused: pcre ×12, flowbits ×3, other ×2`,
    /// keywords by decreasing count (then by name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} rules compiled", self.compiled, self.total)?;
        if self.refused == 0 {
            return Ok(());
        }
        let mut by_count: Vec<(&String, &usize)> = self.keywords.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut parts: Vec<String> = by_count.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        if self.other > 0 {
            parts.push(format!("other ×{}", self.other));
        }
        write!(f, "; refused: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse, Vars};

    #[test]
    fn report_counts_and_orders_keywords() {
        let text = "\
alert tcp any any -> any any (content:\"a\"; sid:1;)
alert tcp any any -> any any (content:\"a\"; pcre:\"/a/\"; sid:2;)
alert tcp any any -> any any (content:\"a\"; flowbits:set,x; sid:3;)
alert tcp any any -> any any (content:\"a\"; pcre:\"/b/\"; sid:4;)
alert tcp any any -> any any (msg:\"no content\"; sid:5;)
pass tcp any any -> any any (content:\"a\"; sid:6;)
";
        let c = parse(text, &Vars::new()).coverage();
        assert_eq!((c.total, c.compiled, c.refused, c.other), (6, 1, 5, 1));
        assert_eq!(c.keywords["pcre"], 2);
        assert_eq!(
            c.to_string(),
            "1 of 6 rules compiled; refused: pcre ×2, flowbits ×1, pass ×1, other ×1"
        );
    }

    #[test]
    fn report_of_a_clean_set() {
        let c = parse(
            "alert ip any any -> any any (content:\"x\"; sid:1;)",
            &Vars::new(),
        )
        .coverage();
        assert_eq!(c.to_string(), "1 of 1 rules compiled");
    }
}
