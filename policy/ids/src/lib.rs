//! The IDS rule language: a host-side parser for a subset of Suricata/Snort
//! rules that turns rule text into a typed AST ([`Rule`]), refuses every rule
//! that uses anything outside the subset ([`Refusal`]) and reports coverage
//! ([`Coverage`]).
//!
//! # Never silently weakened
//! A rule is compiled whole or refused whole. A rule that uses one keyword
//! we do not implement, or uses a supported one in a way we cannot honour
//! exactly, is refused with its line, its `sid` (when one can be read) and
//! the keyword at fault; the other rules of the text still compile. There is
//! no "best effort" rule that matches more (or less) than its author wrote.
//! The refusal names the first problem in the rule, reading left to right:
//! the header, then the options in order, then the whole-rule checks.
//!
//! # The subset
//! - Header: `action proto src_addr src_port direction dst_addr dst_port`.
//!   Actions `alert` and `drop`; protocols `tcp`, `udp`, `icmp` and `ip`
//!   (ports must be `any` for the last two); directions `->` and `<>`.
//!   Addresses and ports: `any`, single values, prefixes and ranges, lists
//!   `[...]` (nested), negation `!`, and variables `$NAME` from [`Vars`]
//!   (see [`AddrSet`], [`PortSet`]). A field that matches nothing (`!any`)
//!   is refused.
//! - Options: `msg`, `sid` (required, > 0), `rev` (default 1), `classtype`,
//!   `priority` (1..=255), `metadata` and `reference` (kept as raw text),
//!   `content` with `nocase`, `offset`, `depth`, `distance`, `within`,
//!   `fast_pattern` (see [`Content`] for the checks), `flow` ([`Flow`]) and
//!   `dsize` ([`Dsize`]). Anything else refuses the rule: "keyword `pcre` is
//!   not supported".
//! - Every rule needs a non-negated `content`: a rule without a pattern
//!   cannot be prefiltered ("no content"). A `dsize` whose largest size is
//!   shorter than a content refuses the rule (it could never match), as in
//!   Suricata; so does `fast_pattern:only` on a content that also has a
//!   position modifier.
//! - A `sid` may be compiled once per rule set: the second rule with it is
//!   refused ("sid N is used twice, first on line L").
//! - `distance`/`within` on a rule's first content are accepted, as in
//!   Suricata: they are then relative to the start of the buffer.
//!
//! # Text layout
//! One rule per line; a line ending in `\` continues on the next one, and
//! the rule reports the line it starts on (lines count from 1). Blank lines
//! and lines starting with `#` are skipped, so a commented-out rule is never
//! parsed. Options are `keyword:value;` or `keyword;`; a value may be quoted,
//! and inside quotes `\"`, `\;` and `\\` are escapes (an unescaped `;`
//! inside quotes refuses the rule: Suricata would end the option there).
//! Keywords, actions and protocols are matched without regard to case.
//!
//! # Panics
//! None: [`parse`] returns a [`Ruleset`] for every input. Nesting in address
//! and port fields (brackets, negations, variables) and their expansion are
//! bounded, so a variable cycle or a huge list refuses the rule instead.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod content;
mod coverage;
mod expr;
mod header;
mod options;
mod port;
mod ranges;
mod signature;
mod text;
mod vars;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

pub use addr::AddrSet;
pub use content::Content;
pub use coverage::Coverage;
pub use header::{Action, Proto};
pub use options::{Dsize, Flow, FlowDirection, FlowState};
pub use port::PortSet;
pub use signature::signature;
pub use vars::Vars;

/// One compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The line the rule starts on (from 1).
    pub line: usize,
    /// `alert` or `drop`.
    pub action: Action,
    /// The protocol inspected.
    pub proto: Proto,
    /// Source addresses.
    pub src: AddrSet,
    /// Source ports (every port unless the protocol is tcp or udp).
    pub src_ports: PortSet,
    /// `<>`: the rule also matches with source and destination swapped.
    pub bidirectional: bool,
    /// Destination addresses.
    pub dst: AddrSet,
    /// Destination ports (every port unless the protocol is tcp or udp).
    pub dst_ports: PortSet,
    /// `msg`, escapes resolved (empty if none).
    pub msg: String,
    /// `sid`, greater than 0, unique within the rule set.
    pub sid: u32,
    /// `rev` (1 if none).
    pub rev: u32,
    /// `classtype`.
    pub classtype: Option<String>,
    /// `priority`.
    pub priority: Option<u8>,
    /// Each `metadata` value as written (trimmed).
    pub metadata: Vec<String>,
    /// Each `reference` value as written (trimmed).
    pub references: Vec<String>,
    /// The contents in rule order; at least one is not negated, and at most
    /// one is the fast pattern.
    pub contents: Vec<Content>,
    /// `flow` (no condition if none).
    pub flow: Flow,
    /// `dsize`.
    pub dsize: Option<Dsize>,
}

/// A rule that was not compiled, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The line the rule starts on (from 1).
    pub line: usize,
    /// The rule's `sid`, when one can be read.
    pub sid: Option<u32>,
    /// The keyword (or action or protocol word), lower case, the refusal is
    /// about, when there is one; it appears in the rule's text.
    pub keyword: Option<String>,
    /// What is wrong, for a person (never empty).
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(sid) = self.sid {
            write!(f, " (sid {sid})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The result of parsing a rule text: the compiled rules and the refusals,
/// each in text order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Compiled rules.
    pub rules: Vec<Rule>,
    /// Refused rules.
    pub refused: Vec<Refusal>,
}

/// Why one rule is refused (before its line and sid are known).
#[derive(Debug)]
pub(crate) struct Refuse {
    pub(crate) keyword: Option<String>,
    pub(crate) reason: String,
}

impl Ruleset {
    /// The first broken invariant of a parse result, if any (`None` for
    /// every result [`parse`] returns; the property tests and the fuzz
    /// target check it). Every compiled rule has a sid greater than 0,
    /// unique in the set, a non-negated content, at most one fast pattern,
    /// no content with both absolute and relative positions, `depth` and
    /// `within` no smaller than their content, and addresses and ports that
    /// match something; every refusal has a line and a reason.
    pub fn invariant_violation(&self) -> Option<String> {
        let mut sids = std::collections::HashSet::new();
        for r in &self.rules {
            let bad = |what: &str| Some(format!("rule on line {} (sid {}): {what}", r.line, r.sid));
            if r.sid == 0 || !sids.insert(r.sid) {
                return bad("sid 0 or compiled twice");
            }
            if !r.contents.iter().any(|c| !c.negated) {
                return bad("no non-negated content");
            }
            if r.contents.iter().filter(|c| c.fast_pattern).count() > 1 {
                return bad("more than one fast pattern");
            }
            for c in &r.contents {
                if c.bytes.is_empty() {
                    return bad("an empty content");
                }
                if c.is_relative() && (c.offset.is_some() || c.depth.is_some()) {
                    return bad("a content both absolute and relative");
                }
                if [c.depth, c.within]
                    .into_iter()
                    .flatten()
                    .any(|n| (n as usize) < c.bytes.len())
                {
                    return bad("depth or within shorter than its content");
                }
            }
            if r.src.is_empty()
                || r.dst.is_empty()
                || r.src_ports.is_empty()
                || r.dst_ports.is_empty()
            {
                return bad("an address or port field that matches nothing");
            }
        }
        self.refused
            .iter()
            .find(|r| r.line == 0 || r.reason.trim().is_empty())
            .map(|r| format!("refusal without a line or reason: {r:?}"))
    }
}

impl Refuse {
    /// A refusal that names no keyword.
    pub(crate) fn new(keyword: Option<String>, reason: String) -> Self {
        Refuse { keyword, reason }
    }

    /// A refusal about `keyword`.
    pub(crate) fn kw(keyword: &str, reason: String) -> Self {
        Refuse {
            keyword: Some(keyword.to_ascii_lowercase()),
            reason,
        }
    }
}

/// Parses `text` (rules, comments, blank lines) with `vars` for `$NAME`.
/// Never panics: every rule ends up in [`Ruleset::rules`] or
/// [`Ruleset::refused`].
pub fn parse(text: &str, vars: &Vars) -> Ruleset {
    let mut set = Ruleset::default();
    let mut first_line: HashMap<u32, usize> = HashMap::new();
    for l in text::logical_rules(text) {
        match parse_rule(&l.text, l.line, vars) {
            Ok(rule) => {
                if let Some(&first) = first_line.get(&rule.sid) {
                    set.refused.push(Refusal {
                        line: l.line,
                        sid: Some(rule.sid),
                        keyword: Some("sid".to_string()),
                        reason: format!("sid {} is used twice, first on line {first}", rule.sid),
                    });
                } else {
                    first_line.insert(rule.sid, l.line);
                    set.rules.push(rule);
                }
            }
            Err(r) => set.refused.push(r),
        }
    }
    set
}

/// Parses one rule's text.
fn parse_rule(text: &str, line: usize, vars: &Vars) -> Result<Rule, Refusal> {
    let refusal = |sid: Option<u32>, r: Refuse| Refusal {
        line,
        sid,
        keyword: r.keyword,
        reason: r.reason,
    };
    let Some((head, rest)) = text.split_once('(') else {
        return Err(refusal(
            None,
            Refuse::new(None, "no options: a rule is `header (options)`".to_string()),
        ));
    };
    let body = rest.trim_end().strip_suffix(')');
    let (opts, split_error) = text::split_options(body.unwrap_or(rest));
    let sid = options::sid_hint(&opts);
    let header = header::parse_header(head, vars).map_err(|r| refusal(sid, r))?;
    if body.is_none() {
        let r = Refuse::new(None, "the options do not end with `)`".to_string());
        return Err(refusal(sid, r));
    }
    if let Some(r) = split_error {
        return Err(refusal(sid, r));
    }
    let mut o = options::Options::default();
    for opt in opts {
        o.apply(opt).map_err(|r| refusal(sid, r))?;
    }
    finish(header, o, line).map_err(|r| refusal(sid, r))
}

/// The whole-rule checks, then the rule.
fn finish(h: header::Header, o: options::Options, line: usize) -> Result<Rule, Refuse> {
    let Some(sid) = o.sid else {
        return Err(Refuse::new(None, "missing `sid`".to_string()));
    };
    if o.contents.is_empty() {
        return Err(Refuse::new(None, "no content".to_string()));
    }
    if o.contents.iter().all(|p| p.content.negated) {
        return Err(Refuse::new(
            None,
            "no content: every content is negated, so nothing can prefilter the rule".to_string(),
        ));
    }
    for p in &o.contents {
        let c = &p.content;
        if p.only && (c.offset.is_some() || c.depth.is_some() || c.is_relative()) {
            return Err(Refuse::kw(
                "fast_pattern",
                "`fast_pattern:only` cannot be combined with `offset`, `depth`, `distance` or `within`"
                    .to_string(),
            ));
        }
    }
    if let Some(d) = o.dsize {
        let longest = o
            .contents
            .iter()
            .filter(|p| !p.content.negated)
            .map(|p| p.content.bytes.len())
            .max()
            .unwrap_or(0);
        if longest > usize::from(d.max()) {
            return Err(Refuse::kw(
                "dsize",
                format!(
                    "`dsize` allows at most {} bytes but a content is {longest} bytes long: the rule could never match",
                    d.max()
                ),
            ));
        }
    }
    Ok(Rule {
        line,
        action: h.action,
        proto: h.proto,
        src: h.src,
        src_ports: h.src_ports,
        bidirectional: h.bidirectional,
        dst: h.dst,
        dst_ports: h.dst_ports,
        msg: o.msg.unwrap_or_default(),
        sid,
        rev: o.rev.unwrap_or(1),
        classtype: o.classtype,
        priority: o.priority,
        metadata: o.metadata,
        references: o.references,
        contents: o.contents.into_iter().map(|p| p.content).collect(),
        flow: o.flow.unwrap_or_default(),
        dsize: o.dsize,
    })
}
