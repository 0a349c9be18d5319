//! Emitting a `#cloud-config` document from the spec's `cloud_config`
//! mapping. cloud-init reads YAML 1.1 (PyYAML), where `yes`, `on`, `0644`,
//! `1:20` and `2024-01-01` are not strings, so every string that YAML 1.1
//! could read as something else is quoted, while integers and booleans that
//! were written as such stay unquoted. It does not parse YAML; the loader
//! hands it values that are already interpolated.

use crate::{SecretRef, UserDataPart};

/// A value of the cloud-config tree, after interpolation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Text, possibly with secrets spliced in at apply time.
    Str(Vec<UserDataPart>),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    pub(crate) fn text(s: impl Into<String>) -> Self {
        Value::Str(vec![UserDataPart::Text(s.into())])
    }
}

/// The user data text, as parts: `#cloud-config` then the mapping.
pub(crate) fn emit(root: &[(String, Value)]) -> Vec<UserDataPart> {
    let mut out = Out::default();
    out.text("#cloud-config\n");
    if root.is_empty() {
        out.text("{}\n");
    } else {
        emit_map(&mut out, root, 0, false);
    }
    out.finish()
}

#[derive(Default)]
struct Out {
    parts: Vec<UserDataPart>,
    text: String,
}

impl Out {
    fn text(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn indent(&mut self, n: usize) {
        for _ in 0..n {
            self.text.push(' ');
        }
    }

    /// A secret in a block scalar whose lines are indented by `indent`.
    fn secret(&mut self, r: &SecretRef, indent: usize) {
        if !self.text.is_empty() {
            self.parts
                .push(UserDataPart::Text(std::mem::take(&mut self.text)));
        }
        self.parts.push(UserDataPart::IndentedSecret {
            secret: r.clone(),
            indent,
        });
    }

    fn finish(mut self) -> Vec<UserDataPart> {
        if !self.text.is_empty() {
            self.parts.push(UserDataPart::Text(self.text));
        }
        self.parts
    }
}

/// Writes a mapping whose keys sit at column `indent`. When `inline_first`,
/// the first key follows a `- ` already written.
fn emit_map(out: &mut Out, entries: &[(String, Value)], indent: usize, inline_first: bool) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if !(i == 0 && inline_first) {
            out.indent(indent);
        }
        out.text(&scalar_text(key));
        out.text(":");
        match value {
            Value::Map(m) if !m.is_empty() => {
                out.text("\n");
                emit_map(out, m, indent + 2, false);
            }
            Value::List(l) if !l.is_empty() => {
                out.text("\n");
                emit_list(out, l, indent + 2);
            }
            other => {
                out.text(" ");
                emit_inline(out, other, indent);
            }
        }
    }
}

/// Writes a sequence whose dashes sit at column `indent`.
fn emit_list(out: &mut Out, items: &[Value], indent: usize) {
    for item in items {
        out.indent(indent);
        match item {
            Value::Map(m) if !m.is_empty() => {
                out.text("- ");
                emit_map(out, m, indent + 2, true);
            }
            Value::List(l) if !l.is_empty() => {
                out.text("-\n");
                emit_list(out, l, indent + 2);
            }
            other => {
                out.text("- ");
                emit_inline(out, other, indent);
            }
        }
    }
}

/// Writes a scalar (or empty collection) after `key: ` or `- `, and the
/// line end. `indent` is the column of the key or dash that owns it.
fn emit_inline(out: &mut Out, value: &Value, indent: usize) {
    match value {
        Value::Null => out.text("null\n"),
        Value::Bool(b) => out.text(if *b { "true\n" } else { "false\n" }),
        Value::Int(i) => {
            out.text(&i.to_string());
            out.text("\n");
        }
        Value::Map(_) => out.text("{}\n"),
        Value::List(_) => out.text("[]\n"),
        Value::Str(parts) => emit_string(out, parts, indent),
    }
}

fn emit_string(out: &mut Out, parts: &[UserDataPart], indent: usize) {
    let has_secret = parts.iter().any(|p| !matches!(p, UserDataPart::Text(_)));
    let joined: String = parts
        .iter()
        .filter_map(|p| match p {
            UserDataPart::Text(t) => Some(t.as_str()),
            UserDataPart::Secret(_) | UserDataPart::IndentedSecret { .. } => None,
        })
        .collect();
    let multi_line = joined.contains('\n') && !joined.chars().any(is_unprintable_in_block);
    if !has_secret && !multi_line {
        out.text(&scalar_text(&joined));
        out.text("\n");
        return;
    }
    // A literal block: no escaping is needed, so a secret's value is
    // spliced in as it is, each of its line breaks followed by the block's
    // indentation (`UserDataPart::IndentedSecret`). The indentation is
    // explicit whenever the content could start with a space. Line breaks
    // that end a secret ending the block are dropped with the block's own
    // (`|-`), as a file secret's last newline is.
    let ends_with_text = matches!(parts.last(), Some(UserDataPart::Text(_)));
    let chomp = if ends_with_text && joined.ends_with("\n\n") {
        "+"
    } else if ends_with_text && joined.ends_with('\n') {
        ""
    } else {
        "-"
    };
    let starts_with_space_or_secret = match parts.first() {
        Some(UserDataPart::Text(t)) => t.starts_with(' ') || t.starts_with('\n'),
        Some(UserDataPart::Secret(_) | UserDataPart::IndentedSecret { .. }) => true,
        None => false,
    };
    let indicator = if starts_with_space_or_secret { "2" } else { "" };
    out.text(&format!("|{indicator}{chomp}\n"));
    let content_indent = indent + 2;
    let mut at_line_start = true;
    for part in parts {
        match part {
            UserDataPart::Text(t) => {
                let mut lines = t.split('\n').peekable();
                while let Some(line) = lines.next() {
                    if !line.is_empty() {
                        if at_line_start {
                            out.indent(content_indent);
                        }
                        out.text(line);
                        at_line_start = false;
                    }
                    if lines.peek().is_some() {
                        out.text("\n");
                        at_line_start = true;
                    }
                }
            }
            UserDataPart::Secret(r) | UserDataPart::IndentedSecret { secret: r, .. } => {
                if at_line_start {
                    out.indent(content_indent);
                }
                out.secret(r, content_indent);
                at_line_start = false;
            }
        }
    }
    if !at_line_start {
        out.text("\n");
    }
}

fn is_unprintable_in_block(c: char) -> bool {
    (c.is_control() && c != '\n') || c == '\u{feff}'
}

/// A string as a YAML 1.1 scalar: plain when YAML 1.1 reads it back as the
/// same string, else double-quoted (JSON's escapes are valid YAML).
pub(crate) fn scalar_text(s: &str) -> String {
    if needs_quotes(s) {
        // Serialising a str to JSON cannot fail.
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    } else {
        s.to_string()
    }
}

/// Whether a plain `s` would not read back as the string `s` under YAML 1.1
/// (or is not a valid plain scalar at all). Deliberately conservative:
/// quoting a string that did not need it is harmless.
pub fn needs_quotes(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "y" | "yes" | "n" | "no" | "true" | "false" | "on" | "off" | "~" | "null" | "=" | "<<"
    ) {
        return true;
    }
    if looks_numeric_or_date(&lower) {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    if " \t-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // `-foo` would be fine, but `- foo` and `-1` are not: quote them all.
        return true;
    }
    if s.ends_with(' ') || s.ends_with(':') {
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.contains(":\t") {
        return true;
    }
    s.chars()
        .any(|c| c.is_control() || c == '\u{feff}' || c == '\u{85}')
}

/// Integers in any YAML 1.1 base (`0644` is octal, `0x1F`, `0b1`, `1_000`,
/// sexagesimal `1:20`), floats (`.5`, `1e3`, `.inf`, `.NaN`) and timestamps
/// (`2024-01-31`, `2024-01-31t10:00:00z`): anything that starts like a
/// number and contains only characters those forms use.
fn looks_numeric_or_date(lower: &str) -> bool {
    let unsigned = lower.strip_prefix(['-', '+']).unwrap_or(lower);
    if let Some(after_dot) = unsigned.strip_prefix('.') {
        return matches!(after_dot, "inf" | "nan")
            || after_dot.starts_with(|c: char| c.is_ascii_digit());
    }
    if !unsigned.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    unsigned
        .chars()
        .all(|c| c.is_ascii_hexdigit() || "xob_.:+- tz".contains(c))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_quoting_table() {
        // (string, quoted?)
        let table: &[(&str, bool)] = &[
            ("", true),
            ("yes", true),
            ("No", true),
            ("ON", true),
            ("off", true),
            ("y", true),
            ("N", true),
            ("True", true),
            ("false", true),
            ("~", true),
            ("null", true),
            ("NULL", true),
            ("0644", true),
            ("0755", true),
            ("1_000", true),
            ("0x1F", true),
            ("0b101", true),
            ("1:20", true),
            ("190:20:30", true),
            ("-12", true),
            ("+12", true),
            ("3.10", true),
            ("1e3", true),
            (".5", true),
            (".inf", true),
            ("-.Inf", true),
            (".NaN", true),
            ("2024-01-31", true),
            ("2001-12-14t21:59:43.10-05:00", true),
            ("2001-12-14 21:59:43.10 -5", true),
            ("=", true),
            ("<<", true),
            (" leading", true),
            ("trailing ", true),
            ("a: b", true),
            ("a #b", true),
            ("- item", true),
            ("*alias", true),
            ("&anchor", true),
            ("!tag", true),
            ("{x}", true),
            ("[x]", true),
            ("@at", true),
            ("'single", true),
            ("\"double", true),
            ("%percent", true),
            ("key:", true),
            ("tab\there", true),
            ("hello", false),
            ("nginx", false),
            ("/etc/nginx/nginx.conf", false),
            ("web-01", false),
            ("yesterday", false),
            ("ami-0123456789abcdef0", false),
            ("http://example.com/x", false),
            ("echo hello world", false),
            ("root:root", false),
            ("a.b.c", false),
            ("élan", false),
        ];
        let mut wrong = Vec::new();
        for (s, quoted) in table {
            if needs_quotes(s) != *quoted {
                wrong.push(*s);
            }
        }
        assert!(wrong.is_empty(), "wrongly classified: {wrong:?}");
        assert_eq!(scalar_text("0644"), "\"0644\"");
        assert_eq!(scalar_text("yes"), "\"yes\"");
        assert_eq!(scalar_text("a\"b"), "a\"b");
        assert_eq!(scalar_text("tab\there"), "\"tab\\there\"");
        assert_eq!(scalar_text("hello"), "hello");
    }

    fn text(parts: &[UserDataPart]) -> String {
        parts
            .iter()
            .map(|p| match p {
                UserDataPart::Text(t) => t.clone(),
                UserDataPart::Secret(r) => format!("<{r}>"),
                UserDataPart::IndentedSecret { secret, indent } => format!("<{secret}/{indent}>"),
            })
            .collect()
    }

    #[test]
    fn emits_block_yaml_with_typed_scalars() {
        let root = vec![
            ("package_update".to_string(), Value::Bool(true)),
            (
                "packages".to_string(),
                Value::List(vec![Value::text("nginx"), Value::text("on")]),
            ),
            (
                "write_files".to_string(),
                Value::List(vec![Value::Map(vec![
                    ("path".to_string(), Value::text("/etc/x")),
                    ("permissions".to_string(), Value::text("0644")),
                    ("content".to_string(), Value::text("line 1\nline 2\n")),
                    (
                        "password".to_string(),
                        Value::Str(vec![
                            UserDataPart::Text("pw=".into()),
                            UserDataPart::Secret(SecretRef::Env("PW".into())),
                        ]),
                    ),
                ])]),
            ),
            ("retries".to_string(), Value::Int(3)),
            ("nothing".to_string(), Value::Null),
            ("empty".to_string(), Value::Map(vec![])),
        ];
        assert_eq!(
            text(&emit(&root)),
            "#cloud-config\n\
             package_update: true\n\
             packages:\n  - nginx\n  - \"on\"\n\
             write_files:\n  - path: /etc/x\n    permissions: \"0644\"\n    content: |\n      line 1\n      line 2\n    password: |-\n      pw=<env:PW/6>\n\
             retries: 3\n\
             nothing: null\n\
             empty: {}\n"
        );
    }
}
