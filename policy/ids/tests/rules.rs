//! Integration tests: third-party rule corpora (Debian's sagan-rules,
//! Suricata's bundled rules) and property tests that no input panics.

use std::collections::BTreeMap;
use std::path::Path;

use ids_rules::{parse, Coverage, Ruleset, Vars};
use proptest::prelude::*;

/// The invariants every parse result holds, whatever the input.
fn check(set: &Ruleset) {
    assert_eq!(set.invariant_violation(), None);
}

/// The rule text that starts on `line` (1-based), continuations joined.
fn rule_text(text: &str, line: usize) -> String {
    let mut out = String::new();
    for l in text.lines().skip(line - 1) {
        match l.trim_end().strip_suffix('\\') {
            Some(p) => out.push_str(p),
            None => {
                out.push_str(l);
                break;
            }
        }
    }
    out
}

/// Parses every `*.rules` file of `dir`; checks the invariants and that each
/// refusal's keyword appears in its rule. Returns the summed coverage.
fn corpus(dir: &Path, rewrite_header: bool) -> (usize, Coverage) {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    paths.sort();
    let vars = Vars::suricata_defaults();
    let mut sum = Coverage::default();
    for path in &paths {
        let bytes = std::fs::read(path).unwrap();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if rewrite_header {
            text = text
                .lines()
                .map(|l| match l.split_once('(') {
                    Some((_, rest)) if !l.trim_start().starts_with('#') => {
                        format!("alert tcp any any -> any any ({rest}")
                    }
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        let set = parse(&text, &vars);
        check(&set);
        for r in &set.refused {
            if let Some(k) = &r.keyword {
                let rule = rule_text(&text, r.line).to_ascii_lowercase();
                assert!(
                    rule.contains(k.as_str()),
                    "{}:{}: keyword `{k}` is not in the rule: {rule}",
                    path.display(),
                    r.line
                );
            }
        }
        let c = set.coverage();
        sum.total += c.total;
        sum.compiled += c.compiled;
        sum.refused += c.refused;
        sum.other += c.other;
        for (k, n) in c.keywords {
            *sum.keywords.entry(k).or_insert(0) += n;
        }
    }
    (paths.len(), sum)
}

const SAGAN: &str = "/etc/sagan-rules";

#[test]
fn sagan_rules_parse_without_panics_and_with_reasons() {
    let dir = Path::new(SAGAN);
    if !dir.is_dir() {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: {SAGAN} is missing: install the `sagan-rules` package\n\
             !!! (apt-get install sagan-rules) to run the IDS rule corpus test.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let (files, c) = corpus(dir, false);
    eprintln!("sagan-rules, {files} files, as written: {c}");
    // Measured on sagan-rules 1:20170725-1.1: 181 files, 2,288 rules (the
    // rest of the 13,649 lines are comments). Sagan's headers say `any` or
    // `syslog` for the protocol (one says `lert` for the action), so every
    // rule is refused at the header, naming that word.
    assert!(files >= 150, "{files} files");
    assert!(c.total >= 2200, "{c:?}");
    assert_eq!(c.compiled, 0);
    let header_words: usize = ["any", "syslog", "lert"]
        .iter()
        .map(|k| c.keywords.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(header_words, c.refused, "{c:?}");

    // The same rules behind a supported header, to put the option parser
    // through third-party syntax: sagan keywords are refused by name.
    let (_, o) = corpus(dir, true);
    eprintln!(
        "sagan-rules, options only (header rewritten to `alert tcp any any -> any any`): {o}"
    );
    assert_eq!(o.total, c.total);
    // Measured: 212 compile; 1,165 are refused for `program`; 23 for
    // malformed text that names no keyword (`;;`, `content "x"` without a
    // colon, a missing `;` before `)`, `);` at the end).
    assert!(o.compiled >= 200, "{o:?}");
    assert!(
        o.keywords.get("program").copied().unwrap_or(0) >= 1100,
        "{o:?}"
    );
    assert!(o.keywords.get("pcre").copied().unwrap_or(0) >= 150, "{o:?}");
    assert!(o.other <= 30, "{o:?}");
    let top: BTreeMap<_, _> = o.keywords.iter().filter(|(_, &n)| n >= 10).collect();
    eprintln!("keywords refusing at least 10 rules: {top:?}");
}

#[test]
fn suricata_bundled_rules_if_installed() {
    let dir = Path::new("/etc/suricata/rules");
    if !dir.is_dir() {
        eprintln!("skipped: /etc/suricata/rules is missing (suricata is not installed)");
        return;
    }
    let (files, c) = corpus(dir, false);
    eprintln!("suricata bundled rules, {files} files: {c}");
    assert!(c.total > 0);
}

/// A rule that compiles, for mutation.
const VALID: &str = r#"alert tcp $HOME_NET [1024:,!2000] <> [!$HOME_NET,192.0.2.0/24] $HTTP_PORTS (msg:"a \"q\" \; m"; flow:to_server,established; content:"GET|20 2f|"; nocase; depth:8; fast_pattern; content:!"x"; distance:-1; within:4; dsize:3<>900; classtype:web-application-attack; metadata:a b, c d; reference:url,example.com; priority:3; sid:1000001; rev:2;)"#;

#[test]
fn the_mutation_seed_compiles() {
    let set = parse(VALID, &Vars::suricata_defaults());
    assert_eq!(set.rules.len(), 1, "{:?}", set.refused);
}

/// A small edit of a text: insert, delete or replace at a position.
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, char),
    Delete(usize, usize),
    Replace(usize, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    let c = prop::sample::select(vec![
        '"', ';', ':', '|', '\\', '!', '[', ']', ',', '$', '(', ')', '<', '>', '-', '/', ' ', '\n',
        '#', '0', '9', 'a', 'f', 'z', 'é',
    ]);
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<usize>(), 1usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), c).prop_map(|(i, c)| Edit::Replace(i, c)),
    ]
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Edit::Delete(i, k) => {
                let i = i % n;
                let j = (i + k).min(chars.len());
                if i < j {
                    chars.drain(i..j);
                }
            }
            Edit::Replace(i, c) => {
                if let Some(slot) = chars.get_mut(i % n) {
                    *slot = c;
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check(&parse(&s, &Vars::suricata_defaults()));
    }

    #[test]
    fn rule_shaped_strings_never_panic(
        s in r#"(alert|drop|pass) (tcp|udp|ip|http) [\[\]!$A-Z_a-z0-9.,:/ -]{0,30} -> [\[\]!$A-Z_0-9.,: -]{0,30} \([a-z_.:;" |0-9a-f!\\<>,-]{0,120}\)"#
    ) {
        check(&parse(&s, &Vars::suricata_defaults()));
    }

    #[test]
    fn mutations_of_a_valid_rule_never_panic(edits in prop::collection::vec(edit(), 1..8)) {
        let text = mutate(VALID, &edits);
        check(&parse(&text, &Vars::suricata_defaults()));
    }
}
