//! Rule-level tests: every construct of the subset and every refusal, each
//! refusal checked for its reason, line, sid and keyword.

use std::net::IpAddr;

use crate::*;

fn vars() -> Vars {
    Vars::suricata_defaults()
}

/// The one rule `text` compiles to.
fn one(text: &str) -> Rule {
    let set = parse(text, &vars());
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    assert_eq!(set.rules.len(), 1);
    set.rules.into_iter().next().unwrap()
}

/// The one refusal of `text`.
fn refusal(text: &str) -> Refusal {
    let set = parse(text, &vars());
    assert!(set.rules.is_empty(), "{:?}", set.rules);
    assert_eq!(set.refused.len(), 1, "{:?}", set.refused);
    set.refused.into_iter().next().unwrap()
}

/// A tcp rule with these options (and `sid:7;` unless given).
fn tcp(opts: &str) -> String {
    let sid = if opts.contains("sid:") { "" } else { " sid:7;" };
    format!("alert tcp any any -> any any ({opts}{sid})")
}

/// Asserts that a one-rule text on line 1 is refused with `reason`,
/// naming `keyword`, with sid 7.
fn refused_with(opts: &str, keyword: Option<&str>, reason: &str) {
    let r = refusal(&tcp(opts));
    assert_eq!(r.reason, reason, "{opts}");
    assert_eq!(r.keyword.as_deref(), keyword, "{opts}");
    assert_eq!((r.line, r.sid), (1, Some(7)), "{opts}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_full_rule() {
    let r = one(
        r#"drop udp $HOME_NET [1024:,!2000] <> !$HOME_NET $HTTP_PORTS (msg:"a \"quoted\" msg"; content:"ab|00 ff|"; nocase; offset:2; depth:8; fast_pattern; content:!"zz"; distance:-1; within:4; flow:to_server,established; dsize:>3; classtype:trojan-activity; priority:2; metadata:created_at 2024_01_01, tag x; reference:url,example.com; reference:cve,2024-1; sid:99; rev:3;)"#,
    );
    assert_eq!(r.line, 1);
    assert_eq!(r.action, Action::Drop);
    assert_eq!(r.proto, Proto::Udp);
    assert!(r.src.contains(ip("10.1.1.1")) && !r.src.contains(ip("8.8.8.8")));
    assert!(r.src_ports.contains(1024) && !r.src_ports.contains(2000) && !r.src_ports.contains(80));
    assert!(r.bidirectional);
    assert!(r.dst.contains(ip("8.8.8.8")) && !r.dst.contains(ip("10.1.1.1")));
    assert_eq!(r.dst_ports.ranges(), &[(80, 80)]);
    assert_eq!(r.msg, r#"a "quoted" msg"#);
    assert_eq!((r.sid, r.rev), (99, 3));
    assert_eq!(r.classtype.as_deref(), Some("trojan-activity"));
    assert_eq!(r.priority, Some(2));
    assert_eq!(r.metadata, ["created_at 2024_01_01, tag x"]);
    assert_eq!(r.references, ["url,example.com", "cve,2024-1"]);
    assert_eq!(
        r.contents,
        [
            Content {
                bytes: b"ab\x00\xff".to_vec(),
                negated: false,
                nocase: true,
                offset: Some(2),
                depth: Some(8),
                distance: None,
                within: None,
                fast_pattern: true,
            },
            Content {
                bytes: b"zz".to_vec(),
                negated: true,
                nocase: false,
                offset: None,
                depth: None,
                distance: Some(-1),
                within: Some(4),
                fast_pattern: false,
            },
        ]
    );
    assert_eq!(
        r.flow,
        Flow {
            direction: Some(FlowDirection::ToServer),
            state: Some(FlowState::Established)
        }
    );
    assert_eq!(r.dsize, Some(Dsize::Gt(3)));
}

#[test]
fn fast_pattern_on_a_negated_content_is_refused() {
    refused_with(
        r#"content:"a"; content:!"b"; fast_pattern;"#,
        Some("fast_pattern"),
        "`fast_pattern` on a negated content: it cannot prefilter",
    );
}

#[test]
fn defaults_of_a_minimal_rule() {
    let r = one(r#"alert ip any any -> any any (content:"x"; sid:1;)"#);
    assert_eq!(r.msg, "");
    assert_eq!(r.rev, 1);
    assert_eq!(r.flow, Flow::default());
    assert_eq!((r.classtype, r.priority, r.dsize), (None, None, None));
    assert!(r.src.is_any() && r.dst.is_any() && r.src_ports.is_any() && r.dst_ports.is_any());
    assert!(!r.bidirectional);
}

#[test]
fn keywords_actions_and_protocols_ignore_case() {
    let r = one(r#"ALERT TCP any any -> any any (MSG:"m"; Content:"x"; NoCase; SID:3;)"#);
    assert_eq!((r.action, r.proto, r.sid), (Action::Alert, Proto::Tcp, 3));
    assert!(r.contents[0].nocase);
}

#[test]
fn fast_pattern_forms() {
    assert!(one(&tcp(r#"content:"a"; content:"bc"; fast_pattern;"#)).contents[1].fast_pattern);
    assert!(one(&tcp(r#"content:"a"; fast_pattern:only;"#)).contents[0].fast_pattern);
    refused_with(
        r#"content:"abcd"; fast_pattern:1,2;"#,
        Some("fast_pattern"),
        "`fast_pattern:1,2` is not supported: `fast_pattern` or `fast_pattern:only`",
    );
    refused_with(
        r#"content:"a"; fast_pattern; content:"b"; fast_pattern;"#,
        Some("fast_pattern"),
        "`fast_pattern` is given more than once in the rule",
    );
    refused_with(
        r#"content:"a"; fast_pattern:only; depth:3;"#,
        Some("fast_pattern"),
        "`fast_pattern:only` cannot be combined with `offset`, `depth`, `distance` or `within`",
    );
}

#[test]
fn relative_modifiers_on_the_first_content_are_accepted() {
    let r = one(&tcp(r#"content:"abc"; distance:2; within:5;"#));
    assert_eq!(
        (r.contents[0].distance, r.contents[0].within),
        (Some(2), Some(5))
    );
    assert!(r.contents[0].is_relative());
}

#[test]
fn content_modifier_refusals() {
    refused_with(
        "nocase; content:\"a\";",
        Some("nocase"),
        "`nocase` needs a `content` before it",
    );
    refused_with(
        "depth:3; content:\"a\";",
        Some("depth"),
        "`depth` needs a `content` before it",
    );
    refused_with(
        r#"content:"a"; nocase; nocase;"#,
        Some("nocase"),
        "`nocase` is given twice for one content",
    );
    refused_with(
        r#"content:"a"; offset:1; offset:2;"#,
        Some("offset"),
        "`offset` is given twice for one content",
    );
    refused_with(
        r#"content:"a"; depth:4; depth:5;"#,
        Some("depth"),
        "`depth` is given twice for one content",
    );
    refused_with(
        r#"content:"a"; distance:1; distance:2;"#,
        Some("distance"),
        "`distance` is given twice for one content",
    );
    refused_with(
        r#"content:"a"; within:4; within:5;"#,
        Some("within"),
        "`within` is given twice for one content",
    );
    refused_with(
        r#"content:"a"; depth:4; distance:1;"#,
        Some("distance"),
        "`distance` cannot be combined with `depth`/`offset` on one content",
    );
    refused_with(
        r#"content:"a"; offset:1; within:4;"#,
        Some("within"),
        "`within` cannot be combined with `depth`/`offset` on one content",
    );
    refused_with(
        r#"content:"a"; within:4; offset:1;"#,
        Some("offset"),
        "`offset` cannot be combined with `distance`/`within` on one content",
    );
    refused_with(
        r#"content:"a"; distance:0; depth:4;"#,
        Some("depth"),
        "`depth` cannot be combined with `distance`/`within` on one content",
    );
    refused_with(
        r#"content:"abc"; depth:2;"#,
        Some("depth"),
        "`depth:2` is smaller than the content (3 bytes): it could never match",
    );
    refused_with(
        r#"content:"a"; content:"abc"; within:2;"#,
        Some("within"),
        "`within:2` is smaller than the content (3 bytes): it could never match",
    );
    refused_with(
        r#"content:"a"; within:-2;"#,
        Some("within"),
        "`within` takes a whole number from 0 to 4294967295, not `-2`",
    );
    refused_with(
        r#"content:"a"; offset:x;"#,
        Some("offset"),
        "`offset` takes a whole number from 0 to 4294967295, not `x`",
    );
    refused_with(
        r#"content:"a"; distance:99999999999;"#,
        Some("distance"),
        "`distance` takes a whole number from -2147483648 to 2147483647, not `99999999999`",
    );
    refused_with(
        r#"content:"a"; nocase:1;"#,
        Some("nocase"),
        "`nocase` takes no value",
    );
    refused_with(
        r#"content:"a"; depth;"#,
        Some("depth"),
        "`depth` needs a value (`depth:…;`)",
    );
}

#[test]
fn content_refusals() {
    refused_with(r#"content:"";"#, Some("content"), "empty content");
    refused_with(
        r#"content:"|4|";"#,
        Some("content"),
        "odd number of hex digits in a `|…|` block",
    );
    refused_with(
        r#"content:"|GG|";"#,
        Some("content"),
        "`G` is not a hex digit (in a `|…|` block)",
    );
    refused_with(
        "content:abc;",
        Some("content"),
        "`content` takes a quoted string, not `abc`",
    );
    refused_with("msg:\"m\";", None, "no content");
    refused_with(
        r#"content:!"a";"#,
        None,
        "no content: every content is negated, so nothing can prefilter the rule",
    );
}

#[test]
fn meta_option_refusals() {
    let r = refusal(r#"alert tcp any any -> any any (content:"a";)"#);
    assert_eq!(
        (r.reason.as_str(), r.sid, r.keyword),
        ("missing `sid`", None, None)
    );
    let r = refusal(r#"alert tcp any any -> any any (content:"a"; sid:0;)"#);
    assert_eq!(r.reason, "`sid` must be greater than 0");
    assert_eq!((r.sid, r.keyword.as_deref()), (None, Some("sid")));
    let r = refusal(r#"alert tcp any any -> any any (content:"a"; sid:4294967296;)"#);
    assert_eq!(
        r.reason,
        "`sid` takes a whole number from 0 to 4294967295, not `4294967296`"
    );
    refused_with(
        r#"content:"a"; sid:7; sid:8;"#,
        Some("sid"),
        "`sid` is given twice",
    );
    refused_with(
        r#"content:"a"; rev:1; rev:2;"#,
        Some("rev"),
        "`rev` is given twice",
    );
    refused_with(
        r#"msg:"a"; msg:"b"; content:"a";"#,
        Some("msg"),
        "`msg` is given twice",
    );
    refused_with(
        r#"content:"a"; priority:0;"#,
        Some("priority"),
        "`priority` takes a number from 1 to 255",
    );
    refused_with(
        r#"content:"a"; priority:256;"#,
        Some("priority"),
        "`priority` takes a number from 1 to 255",
    );
    refused_with(
        r#"content:"a"; classtype:bad name;"#,
        Some("classtype"),
        "`classtype` takes a name, not `bad name`",
    );
    refused_with(
        r#"content:"a"; classtype:a; classtype:b;"#,
        Some("classtype"),
        "`classtype` is given twice",
    );
}

#[test]
fn unsupported_keywords_are_named() {
    for kw in [
        "pcre:\"/a/\"",
        "byte_test:1,>,2,0",
        "flowbits:set,x",
        "http.uri",
        "file_data",
        "threshold:type limit, track by_src, count 1, seconds 60",
        "isdataat:1,relative",
        "tls.sni",
        "program:sshd",
    ] {
        let name = kw.split(':').next().unwrap();
        refused_with(
            &format!(r#"content:"a"; {kw};"#),
            Some(name),
            &format!("keyword `{name}` is not supported"),
        );
    }
}

#[test]
fn flow_and_dsize_refusals() {
    refused_with(
        r#"content:"a"; flow:to_server,to_client;"#,
        Some("flow"),
        "flow `to_client` contradicts `to_server`",
    );
    refused_with(
        r#"content:"a"; flow:established,not_established;"#,
        Some("flow"),
        "flow `not_established` contradicts `established`",
    );
    refused_with(
        r#"content:"a"; flow:to_server; flow:established;"#,
        Some("flow"),
        "`flow` is given twice",
    );
    refused_with(
        r#"content:"a"; dsize:>1; dsize:<9;"#,
        Some("dsize"),
        "`dsize` is given twice",
    );
    refused_with(
        r#"content:"abcdef"; dsize:<5;"#,
        Some("dsize"),
        "`dsize` allows at most 4 bytes but a content is 6 bytes long: the rule could never match",
    );
    assert_eq!(
        one(&tcp(r#"content:"abcd"; dsize:3<>5;"#)).dsize,
        Some(Dsize::Range(3, 5))
    );
}

#[test]
fn header_refusals() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            "pass tcp any any -> any any",
            Some("pass"),
            "action `pass` is not supported: alert and drop only",
        ),
        (
            "reject tcp any any -> any any",
            Some("reject"),
            "action `reject` is not supported: alert and drop only",
        ),
        (
            "rejectsrc tcp any any -> any any",
            Some("rejectsrc"),
            "action `rejectsrc` is not supported: alert and drop only",
        ),
        (
            "alert http any any -> any any",
            Some("http"),
            "protocol `http` is not supported: tcp, udp, icmp and ip only",
        ),
        (
            "alert tls any any -> any any",
            Some("tls"),
            "protocol `tls` is not supported: tcp, udp, icmp and ip only",
        ),
        (
            "alert dns any any -> any any",
            Some("dns"),
            "protocol `dns` is not supported: tcp, udp, icmp and ip only",
        ),
        (
            "alert tcp any any -> any",
            None,
            "the header has 6 fields, not 7: `action proto src_addr src_port -> dst_addr dst_port`",
        ),
        (
            "alert tcp any any <- any any",
            None,
            "direction `<-` is not supported: `->` or `<>`",
        ),
        (
            "alert tcp $NOPE any -> any any",
            None,
            "source address `$NOPE`: unknown variable `$NOPE`",
        ),
        (
            "alert tcp any $NOPE -> any any",
            None,
            "source port `$NOPE`: unknown variable `$NOPE`",
        ),
        (
            "alert tcp any any -> !any any",
            None,
            "destination address `!any` matches no address",
        ),
        (
            "alert tcp any any -> any !any",
            None,
            "destination port `!any` matches no port",
        ),
        (
            "alert tcp any any -> any 9:1",
            None,
            "destination port `9:1`: port range `9:1` is empty: 9 > 1",
        ),
        (
            "alert tcp any any -> any 65536",
            None,
            "destination port `65536`: port `65536` is out of range (0 to 65535)",
        ),
        (
            "alert tcp [1.2.3.4, 5.6.7.8] any -> any any",
            None,
            "the header has 8 fields, not 7: `action proto src_addr src_port -> dst_addr dst_port`",
        ),
        (
            "alert icmp any 80 -> any any",
            None,
            "ports apply to tcp and udp only: a `icmp` rule's ports must be `any`",
        ),
        (
            "alert ip any any -> any $HTTP_PORTS",
            None,
            "ports apply to tcp and udp only: a `ip` rule's ports must be `any`",
        ),
    ];
    for (head, kw, reason) in cases {
        let r = refusal(&format!("{head} (content:\"a\"; sid:7;)"));
        assert_eq!(r.reason, *reason, "{head}");
        assert_eq!(r.keyword.as_deref(), *kw, "{head}");
        assert_eq!((r.line, r.sid), (1, Some(7)), "{head}");
    }
    let r = refusal("alert tcp any any -> any any content:\"a\"; sid:7;");
    assert_eq!(
        (r.reason.as_str(), r.sid),
        ("no options: a rule is `header (options)`", None)
    );
    let r = refusal("alert tcp any any -> any any (content:\"a\"; sid:7;");
    assert_eq!(
        (r.reason.as_str(), r.sid),
        ("the options do not end with `)`", Some(7))
    );
}

#[test]
fn variable_cycles_refuse_the_rule() {
    let mut v = Vars::new();
    v.set("$A", "[10.0.0.1,$B]").set("B", "!$A");
    let set = parse(r#"alert tcp $A any -> any any (content:"a"; sid:1;)"#, &v);
    assert_eq!(set.refused.len(), 1);
    assert_eq!(
        set.refused[0].reason,
        "source address `$A`: nested more than 16 levels deep (a variable that refers to itself?)"
    );
}

#[test]
fn layout_lines_and_continuations() {
    let text = "# header comment\n\
                \n\
                alert tcp any any -> any any (content:\"a\"; sid:1;)\n\
                #alert tcp any any -> any any (content:\"b\"; sid:2;)\n\
                alert tcp any any -> any any (content:\"c\"; \\\n  pcre:\"/c/\"; \\\n  sid:3;)\n\
                alert tcp any any -> any any (content:\"d\"; \\\n  sid:4;)\n";
    let set = parse(text, &vars());
    let lines: Vec<(usize, u32)> = set.rules.iter().map(|r| (r.line, r.sid)).collect();
    assert_eq!(lines, [(3, 1), (8, 4)]);
    assert_eq!(set.refused.len(), 1);
    let r = &set.refused[0];
    assert_eq!(
        (r.line, r.sid, r.reason.as_str()),
        (5, Some(3), "keyword `pcre` is not supported")
    );
}

#[test]
fn duplicate_sids_refuse_the_second_rule() {
    let text = "alert tcp any any -> any any (content:\"a\"; sid:5;)\n\
                alert tcp any any -> any any (content:\"b\"; pcre:\"/x/\"; sid:6;)\n\
                alert tcp any any -> any any (content:\"c\"; sid:5;)\n\
                alert tcp any any -> any any (content:\"d\"; sid:6;)\n";
    let set = parse(text, &vars());
    assert_eq!(set.rules.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 4]);
    let dup = &set.refused[1];
    assert_eq!(dup.reason, "sid 5 is used twice, first on line 1");
    assert_eq!(
        (dup.line, dup.sid, dup.keyword.as_deref()),
        (3, Some(5), Some("sid"))
    );
}

#[test]
fn one_bad_rule_leaves_the_others() {
    let text = "alert tcp any any -> any any (content:\"a\"; sid:1;)\n\
                alert tcp any any -> any any (content:\"a\"; byte_jump:4,0; sid:2;)\n\
                alert udp any any -> any 53 (content:\"|01 00|\"; sid:3;)\n";
    let set = parse(text, &vars());
    assert_eq!(set.rules.len(), 2);
    assert_eq!(
        set.refused[0].to_string(),
        "line 2 (sid 2): keyword `byte_jump` is not supported"
    );
}

/// The smoke-test rules of the engines notes (run against Suricata 7.0.10):
/// T1, T2 and T4 compile; T3 is refused for `pcre` and T5 for `http.server`.
#[test]
fn smoke_rules() {
    let text = r#"alert tcp any any -> any 80 (msg:"T1 GET download.html"; flow:to_server,established; content:"GET"; depth:3; content:"/download.html"; distance:1; within:14; sid:1000001; rev:1;)
alert tcp any 80 -> any any (msg:"T2 Server apache nocase"; flow:to_client,established; content:"server: apache"; nocase; sid:1000002; rev:1;)
alert tcp any 80 -> any any (msg:"T3 pcre etag"; flow:to_client,established; content:"ETag|3a 20 22|"; pcre:"/ETag: \"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+\"/"; sid:1000003; rev:1;)
alert tcp any any -> any any (msg:"T4 absent"; content:"Not-Present-String-xyz"; sid:1000004; rev:1;)
alert tcp any 80 -> any any (msg:"T5 http keyword"; flow:to_client; http.server; content:"Apache"; sid:1000005; rev:1;)
"#;
    let set = parse(text, &vars());
    let sids: Vec<u32> = set.rules.iter().map(|r| r.sid).collect();
    assert_eq!(sids, [1000001, 1000002, 1000004]);
    let t1 = &set.rules[0];
    assert_eq!(t1.dst_ports.ranges(), &[(80, 80)]);
    assert_eq!(t1.contents[0].depth, Some(3));
    assert_eq!(
        (t1.contents[1].distance, t1.contents[1].within),
        (Some(1), Some(14))
    );
    assert!(set.rules[1].contents[0].nocase);
    let refused: Vec<(usize, Option<u32>, Option<&str>, &str)> = set
        .refused
        .iter()
        .map(|r| (r.line, r.sid, r.keyword.as_deref(), r.reason.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (
                3,
                Some(1000003),
                Some("pcre"),
                "keyword `pcre` is not supported"
            ),
            (
                5,
                Some(1000005),
                Some("http.server"),
                "keyword `http.server` is not supported"
            ),
        ]
    );
    assert_eq!(
        set.coverage().to_string(),
        "3 of 5 rules compiled; refused: http.server ×1, pcre ×1"
    );
}
