//! The render phase: the bytes of every file and template of a run,
//! computed before anything is touched. Templates are minijinja with
//! strict undefined (a missing variable is an error, not an empty string),
//! trailing newlines kept and no auto-escaping; they see `facts`, `tags`,
//! `metadata` and `vars`. File sources are read here too, so a missing
//! source stops the run before it starts. No writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::facts::Facts;
use crate::types::Resource;
use crate::validate::Declared;

/// A resource (by index) that could not be rendered, and why.
pub(crate) type RenderError = (usize, String);

/// What templates see.
#[derive(Debug, Serialize)]
struct Variables<'a> {
    facts: &'a Facts,
    tags: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    vars: BTreeMap<String, serde_json::Value>,
}

/// The content of each resource that has one (`None` for the others), or
/// every render error as (index, message).
pub(crate) fn render_all(
    resources: &[Declared<'_>],
    facts: &Facts,
    vars: &BTreeMap<String, serde_json::Value>,
    source_dir: &Path,
) -> Result<Vec<Option<Vec<u8>>>, Vec<RenderError>> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_keep_trailing_newline(true);
    environment.set_auto_escape_callback(|_| AutoEscape::None);
    let (tags, mut metadata) = match &facts.instance {
        Some(instance) => (instance.tags.clone(), instance.metadata.clone()),
        None => (BTreeMap::new(), BTreeMap::new()),
    };
    if let Some(instance) = &facts.instance {
        metadata.insert("instance-id".to_string(), instance.id.clone());
    }

    let mut contents = Vec::with_capacity(resources.len());
    let mut errors = Vec::new();
    for (index, declared) in resources.iter().enumerate() {
        let result = match declared.resource {
            Resource::File(file) => match (&file.content, &file.source) {
                (Some(content), _) => Ok(Some(content.clone().into_bytes())),
                (None, Some(source)) => read_source(source_dir, source, "source").map(Some),
                (None, None) => Err("source: neither content nor source".to_string()),
            },
            Resource::Template(template) => {
                let text = match (&template.template, &template.source) {
                    (Some(text), _) => Ok(text.clone()),
                    (None, Some(source)) => {
                        read_source(source_dir, source, "source").and_then(|bytes| {
                            String::from_utf8(bytes)
                                .map_err(|_| format!("source: {source} is not UTF-8 text"))
                        })
                    }
                    (None, None) => Err("template: neither template nor source".to_string()),
                };
                text.and_then(|text| {
                    let mut all_vars = vars.clone();
                    all_vars.extend(template.vars.clone());
                    let variables = Variables {
                        facts,
                        tags: tags.clone(),
                        metadata: metadata.clone(),
                        vars: all_vars,
                    };
                    let name = declared.resource.id();
                    environment
                        .render_named_str(&name, &text, &variables)
                        .map(|rendered| Some(rendered.into_bytes()))
                        .map_err(|error| format!("template: {}", describe(&error)))
                })
            }
            _ => Ok(None),
        };
        match result {
            Ok(content) => contents.push(content),
            Err(message) => {
                contents.push(None);
                errors.push((index, message));
            }
        }
    }
    if errors.is_empty() {
        Ok(contents)
    } else {
        Err(errors)
    }
}

/// A minijinja error with its line and the chain of causes.
fn describe(error: &minijinja::Error) -> String {
    let mut text = match error.line() {
        Some(line) => format!("line {line}: {}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(detail) = error.detail() {
        text.push_str(&format!(" ({detail})"));
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn read_source(source_dir: &Path, source: &str, field: &str) -> Result<Vec<u8>, String> {
    let path: PathBuf = source_dir.join(source);
    std::fs::read(&path).map_err(|error| format!("{field}: {}: {error}", path.display()))
}
