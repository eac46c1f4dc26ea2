//! The list grammar shared by address and port fields:
//!
//! ```text
//! expr    = "!" expr | "[" element ("," element)* "]" | "$" NAME | atom
//! element = expr
//! ```
//!
//! A list is the union of its non-negated elements (every value when it has
//! none) minus the union of its negated ones; a bare `!x` is the list `[!x]`.
//! Variables are parsed with the same grammar. Nesting (brackets, `!` and
//! variables together) is limited to [`MAX_DEPTH`] levels and one field to
//! [`MAX_STEPS`] elements, so a variable cycle or a huge expansion refuses
//! the rule instead of looping or exhausting memory. Nothing here can panic.

use crate::Vars;

/// Deepest nesting of brackets, negations and variables in one field.
pub(crate) const MAX_DEPTH: usize = 16;
/// Most elements (after variable expansion) in one field.
pub(crate) const MAX_STEPS: usize = 4096;

/// What a field's values are: addresses or ports.
pub(crate) trait Domain: Sized + Clone {
    /// Every value.
    fn universe() -> Self;
    /// No value.
    fn nothing() -> Self;
    fn union(&self, other: &Self) -> Self;
    fn subtract(&self, other: &Self) -> Self;
    /// One element without brackets, negation or variables.
    fn atom(text: &str) -> Result<Self, String>;
}

/// Evaluates one field's text with `vars`. The error is a reason without
/// the field's name.
pub(crate) fn eval<D: Domain>(text: &str, vars: &Vars) -> Result<D, String> {
    let mut ev = Eval { vars, steps: 0 };
    ev.expr::<D>(text, 0)
}

struct Eval<'v> {
    vars: &'v Vars,
    steps: usize,
}

impl Eval<'_> {
    fn expr<D: Domain>(&mut self, text: &str, depth: usize) -> Result<D, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "nested more than {MAX_DEPTH} levels deep (a variable that refers to itself?)"
            ));
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("expands to more than {MAX_STEPS} elements"));
        }
        let text = text.trim();
        if let Some(rest) = text.strip_prefix('!') {
            let inner = self.expr::<D>(rest, depth + 1)?;
            return Ok(D::universe().subtract(&inner));
        }
        if text.starts_with('[') {
            return self.list::<D>(text, depth);
        }
        if let Some(name) = text.strip_prefix('$') {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`{}` is not a variable name", shorten(text)));
            }
            let Some(value) = self.vars.get(name) else {
                return Err(format!("unknown variable `${name}`"));
            };
            return self.expr::<D>(value, depth + 1);
        }
        if text.is_empty() {
            return Err("empty element".to_string());
        }
        if text.contains([']', ',']) {
            return Err(format!("`{}`: unbalanced `]`", shorten(text)));
        }
        D::atom(text)
    }

    fn list<D: Domain>(&mut self, text: &str, depth: usize) -> Result<D, String> {
        let elements = split_list(text)?;
        let mut positive: Option<D> = None;
        let mut negative = D::nothing();
        for element in elements {
            let element = element.trim();
            if element.is_empty() {
                return Err(format!("`{}`: empty element in a list", shorten(text)));
            }
            if let Some(rest) = element.strip_prefix('!') {
                negative = negative.union(&self.expr::<D>(rest, depth + 1)?);
            } else {
                let set = self.expr::<D>(element, depth + 1)?;
                positive = Some(match positive {
                    Some(p) => p.union(&set),
                    None => set,
                });
            }
        }
        Ok(positive.unwrap_or_else(D::universe).subtract(&negative))
    }
}

/// The top-level elements of `[a,b,...]`; `text` starts with `[`.
fn split_list(text: &str) -> Result<Vec<&str>, String> {
    let mut depth = 0usize;
    let mut elements = Vec::new();
    let mut start = 1;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("`{}`: unbalanced `]`", shorten(text)))?;
                if depth == 0 {
                    if !text[i + 1..].trim().is_empty() {
                        return Err(format!("`{}`: text after the closing `]`", shorten(text)));
                    }
                    elements.push(&text[start..i]);
                    return Ok(elements);
                }
            }
            ',' if depth == 1 => {
                elements.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    Err(format!("`{}`: unbalanced `[`", shorten(text)))
}

/// `text`, cut to 60 characters for a message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}
