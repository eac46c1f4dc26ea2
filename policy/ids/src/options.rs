//! Rule options: dispatch by keyword, the meta options, `flow` and `dsize`.
//!
//! Supported keywords: `msg`, `sid`, `rev`, `classtype`, `priority`,
//! `metadata`, `reference`, `content` and its modifiers (`nocase`, `offset`,
//! `depth`, `distance`, `within`, `fast_pattern`), `flow`, `dsize`. Any other
//! keyword refuses the rule, naming it. Keywords are matched without regard
//! to case, as Suricata does. Options that describe the rule once (`msg`,
//! `sid`, `rev`, `classtype`, `priority`, `flow`, `dsize`) may not be given
//! twice.

use crate::content::{apply, parse_content, Modifier, Pending};
use crate::expr::shorten;
use crate::text::{quoted_inner, RawOption};
use crate::Refuse;

/// The connection state and direction a rule requires (`flow:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flow {
    /// `to_server`/`from_client` or `to_client`/`from_server`.
    pub direction: Option<FlowDirection>,
    /// `established`, `not_established` or `stateless`.
    pub state: Option<FlowState>,
}

/// The direction part of `flow:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowDirection {
    /// `to_server` (= `from_client`): packets from the connection's initiator.
    ToServer,
    /// `to_client` (= `from_server`): packets from the responder.
    ToClient,
}

/// The state part of `flow:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// `established`: only once the connection is established.
    Established,
    /// `not_established`: only before it is.
    NotEstablished,
    /// `stateless`: whatever the state.
    Stateless,
}

/// A payload size condition (`dsize:`). As in Suricata, the range's bounds
/// are exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dsize {
    /// `dsize:N`: exactly N bytes.
    Eq(u16),
    /// `dsize:<N`: fewer than N bytes.
    Lt(u16),
    /// `dsize:>N`: more than N bytes.
    Gt(u16),
    /// `dsize:N<>M`: more than N and fewer than M bytes.
    Range(u16, u16),
}

impl Dsize {
    /// Whether a payload of `len` bytes satisfies the condition.
    pub fn matches(self, len: usize) -> bool {
        match self {
            Dsize::Eq(n) => len == usize::from(n),
            Dsize::Lt(n) => len < usize::from(n),
            Dsize::Gt(n) => len > usize::from(n),
            Dsize::Range(lo, hi) => len > usize::from(lo) && len < usize::from(hi),
        }
    }

    /// The largest payload size that satisfies the condition.
    pub fn max(self) -> u16 {
        match self {
            Dsize::Eq(n) => n,
            Dsize::Lt(n) | Dsize::Range(_, n) => n.saturating_sub(1),
            Dsize::Gt(_) => u16::MAX,
        }
    }
}

/// Everything the options say, before the end-of-rule checks.
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub(crate) msg: Option<String>,
    pub(crate) sid: Option<u32>,
    pub(crate) rev: Option<u32>,
    pub(crate) classtype: Option<String>,
    pub(crate) priority: Option<u8>,
    pub(crate) metadata: Vec<String>,
    pub(crate) references: Vec<String>,
    pub(crate) contents: Vec<Pending>,
    pub(crate) fast_patterns: usize,
    pub(crate) flow: Option<Flow>,
    pub(crate) dsize: Option<Dsize>,
}

/// The `sid` of a list of options, if one parses (for naming a refused rule).
pub(crate) fn sid_hint(opts: &[RawOption<'_>]) -> Option<u32> {
    opts.iter()
        .filter(|o| o.name.eq_ignore_ascii_case("sid"))
        .find_map(|o| o.value.and_then(|v| number::<u32>("sid", v).ok()))
        .filter(|&s| s > 0)
}

impl Options {
    /// Applies one option, in rule order.
    pub(crate) fn apply(&mut self, opt: RawOption<'_>) -> Result<(), Refuse> {
        let name = opt.name.to_ascii_lowercase();
        let kw = name.as_str();
        let value = || {
            opt.value
                .ok_or_else(|| Refuse::kw(kw, format!("`{kw}` needs a value (`{kw}:…;`)")))
        };
        let no_value = || match opt.value {
            Some(_) => Err(Refuse::kw(kw, format!("`{kw}` takes no value"))),
            None => Ok(()),
        };
        match kw {
            "msg" => set_once(&mut self.msg, kw, msg(value()?))?,
            "sid" => {
                let sid = number::<u32>(kw, value()?)?;
                if sid == 0 {
                    return Err(Refuse::kw(kw, "`sid` must be greater than 0".to_string()));
                }
                set_once(&mut self.sid, kw, sid)?;
            }
            "rev" => set_once(&mut self.rev, kw, number::<u32>(kw, value()?)?)?,
            "classtype" => {
                let v = value()?.trim();
                let ok = !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
                if !ok {
                    return Err(Refuse::kw(
                        kw,
                        format!("`classtype` takes a name, not `{}`", shorten(v)),
                    ));
                }
                set_once(&mut self.classtype, kw, v.to_string())?;
            }
            "priority" => {
                let p = number::<u8>(kw, value()?)
                    .ok()
                    .filter(|&p| p >= 1)
                    .ok_or_else(|| {
                        Refuse::kw(kw, "`priority` takes a number from 1 to 255".to_string())
                    })?;
                set_once(&mut self.priority, kw, p)?;
            }
            "metadata" => self.metadata.push(value()?.trim().to_string()),
            "reference" => self.references.push(value()?.trim().to_string()),
            "content" => self.contents.push(parse_content(value()?)?),
            "nocase" => {
                no_value()?;
                apply(&mut self.contents, Modifier::Nocase)?;
            }
            "offset" => apply(&mut self.contents, Modifier::Offset(number(kw, value()?)?))?,
            "depth" => apply(&mut self.contents, Modifier::Depth(number(kw, value()?)?))?,
            "distance" => apply(
                &mut self.contents,
                Modifier::Distance(number(kw, value()?)?),
            )?,
            "within" => apply(&mut self.contents, Modifier::Within(number(kw, value()?)?))?,
            "fast_pattern" => {
                let only = match opt.value.map(str::trim) {
                    None => false,
                    Some(v) if v.eq_ignore_ascii_case("only") => true,
                    Some(v) => {
                        return Err(Refuse::kw(
                            kw,
                            format!(
                                "`fast_pattern:{}` is not supported: `fast_pattern` or `fast_pattern:only`",
                                shorten(v)
                            ),
                        ))
                    }
                };
                self.fast_patterns += 1;
                if self.fast_patterns > 1 {
                    return Err(Refuse::kw(
                        kw,
                        "`fast_pattern` is given more than once in the rule".to_string(),
                    ));
                }
                apply(&mut self.contents, Modifier::FastPattern(only))?;
            }
            "flow" => set_once(&mut self.flow, kw, flow(value()?)?)?,
            "dsize" => set_once(&mut self.dsize, kw, dsize(value()?)?)?,
            _ => {
                return Err(Refuse::kw(
                    kw,
                    format!("keyword `{}` is not supported", shorten(kw)),
                ))
            }
        }
        Ok(())
    }
}

fn set_once<T>(slot: &mut Option<T>, kw: &str, v: T) -> Result<(), Refuse> {
    if slot.replace(v).is_some() {
        return Err(Refuse::kw(kw, format!("`{kw}` is given twice")));
    }
    Ok(())
}

/// A decimal number (a leading `-` only where `T` is signed).
fn number<T: std::str::FromStr + Bounded>(kw: &str, v: &str) -> Result<T, Refuse> {
    let t = v.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| t.parse::<T>().ok()).flatten().ok_or_else(|| {
        Refuse::kw(
            kw,
            format!(
                "`{kw}` takes a whole number from {} to {}, not `{}`",
                T::LOW,
                T::HIGH,
                shorten(t)
            ),
        )
    })
}

/// The range of a number type, for messages.
trait Bounded {
    const LOW: i64;
    const HIGH: i64;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            const LOW: i64 = <$t>::MIN as i64;
            const HIGH: i64 = <$t>::MAX as i64;
        }
    )*};
}
bounded!(u8, u16, u32, i32);

/// `msg` text: quoted or bare; `\"`, `\;`, `\\` and `\:` unescaped, any
/// other backslash kept as written (the message only labels the alert).
fn msg(v: &str) -> String {
    let inner = quoted_inner(v).unwrap_or(v.trim());
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&e @ ('"' | ';' | '\\' | ':'))) => {
                out.push(e);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn flow(v: &str) -> Result<Flow, Refuse> {
    let err = |reason: String| Refuse::kw("flow", reason);
    let mut f = Flow::default();
    let mut dir_word = "";
    let mut state_word = "";
    for word in v.split(',') {
        let word = word.trim();
        let (dir, state) = match word.to_ascii_lowercase().as_str() {
            "to_server" | "from_client" => (Some(FlowDirection::ToServer), None),
            "to_client" | "from_server" => (Some(FlowDirection::ToClient), None),
            "established" => (None, Some(FlowState::Established)),
            "not_established" => (None, Some(FlowState::NotEstablished)),
            "stateless" => (None, Some(FlowState::Stateless)),
            "" => return Err(err("empty `flow` option".to_string())),
            _ => {
                return Err(err(format!(
                    "flow option `{}` is not supported: to_server, to_client, from_server, from_client, established, not_established, stateless",
                    shorten(word)
                )))
            }
        };
        if let Some(d) = dir {
            if let Some(old) = f.direction {
                let why = if old == d { "repeats" } else { "contradicts" };
                return Err(err(format!("flow `{word}` {why} `{dir_word}`")));
            }
            f.direction = Some(d);
            dir_word = word;
        }
        if let Some(s) = state {
            if let Some(old) = f.state {
                let why = if old == s { "repeats" } else { "contradicts" };
                return Err(err(format!("flow `{word}` {why} `{state_word}`")));
            }
            f.state = Some(s);
            state_word = word;
        }
    }
    Ok(f)
}

fn dsize(v: &str) -> Result<Dsize, Refuse> {
    let t = v.trim();
    let unsupported = || {
        Refuse::kw(
            "dsize",
            format!(
                "`dsize:{}` is not supported: `N`, `<N`, `>N` or `N<>M`",
                shorten(t)
            ),
        )
    };
    let size = |s: &str| -> Result<u16, Refuse> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unsupported());
        }
        number::<u16>("dsize", s)
    };
    let d = if let Some((lo, hi)) = t.split_once("<>") {
        Dsize::Range(size(lo)?, size(hi)?)
    } else if let Some(n) = t.strip_prefix('<') {
        Dsize::Lt(size(n)?)
    } else if let Some(n) = t.strip_prefix('>') {
        Dsize::Gt(size(n)?)
    } else {
        Dsize::Eq(size(t)?)
    };
    let empty = match d {
        Dsize::Lt(0) | Dsize::Gt(u16::MAX) => true,
        Dsize::Range(lo, hi) => hi <= lo.saturating_add(1),
        _ => false,
    };
    if empty {
        return Err(Refuse::kw(
            "dsize",
            format!(
                "`dsize:{}` matches no payload size (range bounds are exclusive)",
                shorten(t)
            ),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsize_forms_and_exclusive_ranges() {
        assert_eq!(dsize("10").unwrap(), Dsize::Eq(10));
        assert_eq!(dsize(" <10").unwrap(), Dsize::Lt(10));
        assert_eq!(dsize(">8").unwrap(), Dsize::Gt(8));
        let r = dsize("8<>20").unwrap();
        assert_eq!(r, Dsize::Range(8, 20));
        assert!(!r.matches(8) && r.matches(9) && r.matches(19) && !r.matches(20));
        assert_eq!(r.max(), 19);
        assert!(Dsize::Lt(10).matches(9) && !Dsize::Lt(10).matches(10));
        assert!(Dsize::Gt(8).matches(9) && !Dsize::Gt(8).matches(8));
        let e = |s| dsize(s).unwrap_err().reason;
        assert_eq!(
            e("!9"),
            "`dsize:!9` is not supported: `N`, `<N`, `>N` or `N<>M`"
        );
        assert_eq!(
            e("<=9"),
            "`dsize:<=9` is not supported: `N`, `<N`, `>N` or `N<>M`"
        );
        assert_eq!(
            e("70000"),
            "`dsize` takes a whole number from 0 to 65535, not `70000`"
        );
        assert_eq!(
            e("5<>6"),
            "`dsize:5<>6` matches no payload size (range bounds are exclusive)"
        );
        assert_eq!(
            e("9<>3"),
            "`dsize:9<>3` matches no payload size (range bounds are exclusive)"
        );
        assert_eq!(
            e("<0"),
            "`dsize:<0` matches no payload size (range bounds are exclusive)"
        );
    }

    #[test]
    fn flow_words_and_contradictions() {
        let f = flow("to_server, established").unwrap();
        assert_eq!(f.direction, Some(FlowDirection::ToServer));
        assert_eq!(f.state, Some(FlowState::Established));
        assert_eq!(
            flow("from_server").unwrap().direction,
            Some(FlowDirection::ToClient)
        );
        assert_eq!(
            flow("from_client").unwrap().direction,
            Some(FlowDirection::ToServer)
        );
        assert_eq!(flow("stateless").unwrap().state, Some(FlowState::Stateless));
        let e = |s| flow(s).unwrap_err().reason;
        assert_eq!(
            e("to_server,to_client"),
            "flow `to_client` contradicts `to_server`"
        );
        assert_eq!(
            e("from_server,to_server"),
            "flow `to_server` contradicts `from_server`"
        );
        assert_eq!(
            e("to_server,from_client"),
            "flow `from_client` repeats `to_server`"
        );
        assert_eq!(
            e("established,not_established"),
            "flow `not_established` contradicts `established`"
        );
        assert_eq!(
            e("stateless,established"),
            "flow `established` contradicts `stateless`"
        );
        assert_eq!(e("to_server,"), "empty `flow` option");
        assert!(e("only_stream").starts_with("flow option `only_stream` is not supported"));
    }

    #[test]
    fn msg_unescapes_and_keeps_other_backslashes() {
        assert_eq!(msg(r#""a \"b\" \; c\\d \S""#), r#"a "b" ; c\d \S"#);
        assert_eq!(msg("bare text "), "bare text");
    }
}
