//! `${var.NAME}` / `${secret.NAME}` templates in string scalars: splitting a
//! string into text and references, with the byte offset of each reference
//! so that errors can point at it. It does not look variables up; the loader
//! does that, because only it knows positions and which places allow
//! secrets.
//!
//! `$${` is a literal `${`. A `${...}` that is not of the form
//! `${word.word}` (such as a shell's `${HOME}`) is left as it is, so that
//! scripts need no escaping; `${other.NAME}` is an error, since it is almost
//! certainly a typo of one of ours.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Var { name: String, offset: usize },
    Secret { name: String, offset: usize },
}

/// A malformed reference at `offset` bytes into the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    pub message: String,
    pub expected: Option<String>,
}

pub(crate) const REFERENCE_FORMS: &str =
    "${var.NAME} or ${secret.NAME} (write $${ for a literal ${)";

/// Splits `s` into pieces; adjacent text is merged.
pub(crate) fn parse(s: &str) -> (Vec<Piece>, Vec<TemplateError>) {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    let mut base = 0;
    while let Some(dollar) = rest.find('$') {
        text.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if after.starts_with("$${") {
            text.push_str("${");
            base += dollar + 3;
            rest = &rest[dollar + 3..];
            continue;
        }
        if !after.starts_with("${") {
            text.push('$');
            base += dollar + 1;
            rest = &rest[dollar + 1..];
            continue;
        }
        let offset = base + dollar;
        let inner_start = &after[2..];
        let Some(close) = inner_start.find('}') else {
            if inner_start.starts_with("var.") || inner_start.starts_with("secret.") {
                errors.push(TemplateError {
                    offset,
                    message: "unterminated reference: missing `}`".to_string(),
                    expected: Some(REFERENCE_FORMS.to_string()),
                });
            }
            text.push_str(after);
            rest = "";
            break;
        };
        let inner = &inner_start[..close];
        let consumed = dollar + 2 + close + 1;
        match inner.split_once('.') {
            Some((namespace, name)) if is_word(namespace) => {
                let piece = match namespace {
                    "var" => Some(Piece::Var {
                        name: name.to_string(),
                        offset,
                    }),
                    "secret" => Some(Piece::Secret {
                        name: name.to_string(),
                        offset,
                    }),
                    _ => None,
                };
                match piece {
                    Some(piece) if is_name(name) => {
                        if !text.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        pieces.push(piece);
                    }
                    Some(_) => {
                        errors.push(TemplateError {
                            offset,
                            message: format!("invalid name in reference `${{{inner}}}`"),
                            expected: Some(
                                "a name of letters, digits, `_` and `-`, starting with a letter or `_`"
                                    .to_string(),
                            ),
                        });
                        text.push_str(&after[..2 + close + 1]);
                    }
                    None => {
                        errors.push(TemplateError {
                            offset,
                            message: format!("unknown reference `${{{inner}}}`"),
                            expected: Some(REFERENCE_FORMS.to_string()),
                        });
                        text.push_str(&after[..2 + close + 1]);
                    }
                }
            }
            _ => text.push_str(&after[..2 + close + 1]),
        }
        base += consumed;
        rest = &rest[consumed..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    (pieces, errors)
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variable and secret names: `[A-Za-z_][A-Za-z0-9_-]*`.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(s: &str) -> Piece {
        Piece::Text(s.to_string())
    }

    #[test]
    fn splits_references_and_escapes() {
        let (pieces, errors) = parse("a ${var.x} $${var.y} ${HOME} ${secret.pw}!");
        assert!(errors.is_empty());
        assert_eq!(
            pieces,
            vec![
                text("a "),
                Piece::Var {
                    name: "x".into(),
                    offset: 2
                },
                text(" ${var.y} ${HOME} "),
                Piece::Secret {
                    name: "pw".into(),
                    offset: 29
                },
                text("!"),
            ]
        );
    }

    #[test]
    fn reports_bad_references() {
        let (_, errors) = parse("x ${vra.a} ${var.} ${var.a");
        let got: Vec<_> = errors
            .iter()
            .map(|e| (e.offset, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "unknown reference `${vra.a}`"),
                (11, "invalid name in reference `${var.}`"),
                (19, "unterminated reference: missing `}`"),
            ]
        );
    }

    #[test]
    fn lone_dollars_are_text() {
        let (pieces, errors) = parse("$ $$ $1 $");
        assert!(errors.is_empty());
        assert_eq!(pieces, vec![text("$ $$ $1 $")]);
    }
}
