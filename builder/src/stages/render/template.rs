//! Configuration files rendered from the templates in `builder/templates/`
//! (strict: an undefined variable is an error). Block tags (`{% if %}`,
//! `{% for %}`) on a line of their own leave no blank line behind
//! (`trim_blocks`, `lstrip_blocks`).

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::BuildError;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "os-release",
        include_str!("../../../templates/os-release.j2"),
    ),
    (
        "dnsmasq.conf",
        include_str!("../../../templates/dnsmasq.conf.j2"),
    ),
    (
        "network-red",
        include_str!("../../../templates/network-red.j2"),
    ),
    (
        "network-black",
        include_str!("../../../templates/network-black.j2"),
    ),
    (
        "udhcpc.script",
        include_str!("../../../templates/udhcpc.script.j2"),
    ),
    ("passwd", include_str!("../../../templates/passwd.j2")),
    ("group", include_str!("../../../templates/group.j2")),
    ("hostname", include_str!("../../../templates/hostname.j2")),
];

/// Renders template `name` with `ctx`.
pub fn render<S: Serialize>(name: &str, ctx: S) -> Result<String, BuildError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| BuildError::Template {
                name: "(syntax)".into(),
                message: e.to_string(),
            })?,
    );
    for (n, src) in TEMPLATES {
        env.add_template(n, src).map_err(|e| BuildError::Template {
            name: n.to_string(),
            message: e.to_string(),
        })?;
    }
    let t = env.get_template(name).map_err(|e| BuildError::Template {
        name: name.into(),
        message: e.to_string(),
    })?;
    let mut out = t
        .render(minijinja::value::Serde(ctx))
        .map_err(|e| BuildError::Template {
            name: name.into(),
            message: e.to_string(),
        })?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_variables_are_errors() {
        let err = render("os-release", minijinja::context! { name => "x" }).unwrap_err();
        assert!(err.to_string().contains("os-release"), "{err}");
    }
}
