//! The small amount of XML the Query protocol needs: a writer for servers
//! (escaped text, no attributes but the namespace) and lookup helpers over a
//! `roxmltree` document for clients.
//!
//! Lookups match local names and ignore namespaces; the root element alone
//! is checked to carry EC2's namespace (with or without the trailing slash —
//! AWS's samples have it, botocore's model and moto omit it) or none.

use roxmltree::{Document, Node};

use crate::error::WireError;

/// The namespace EC2 responses carry, as AWS writes it.
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Builds an XML document as a string.
#[derive(Debug)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// A document with an XML declaration.
    pub fn document() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        }
    }

    /// Opens the root element of an EC2 response, with its namespace.
    pub fn open_root(&mut self, name: &str) {
        self.open_root_in(name, NAMESPACE);
    }

    /// Opens a root element in another service's `namespace` (ELBv2's).
    pub fn open_root_in(&mut self, name: &str, namespace: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(" xmlns=\"");
        escape_into(&mut self.out, namespace);
        self.out.push_str("\">");
    }

    pub fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    pub fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// `<name>text</name>`, escaped.
    pub fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        escape_into(&mut self.out, text);
        self.close(name);
    }

    /// A leaf if the value is present.
    pub fn leaf_opt(&mut self, name: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.leaf(name, text);
        }
    }

    /// `<name/>`.
    pub fn empty(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str("/>");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Parses a document.
pub fn parse(text: &str) -> Result<Document<'_>, WireError> {
    Document::parse(text).map_err(|e| WireError::Xml(e.to_string()))
}

/// Whether a namespace is EC2's (any API version, with or without the
/// trailing slash) or absent.
fn is_ec2_namespace(ns: Option<&str>) -> bool {
    match ns {
        None => true,
        Some(ns) => ns.starts_with("http://ec2.amazonaws.com/doc/"),
    }
}

/// The root element, checked to be `name` in EC2's namespace or none.
pub fn root<'a, 'i>(doc: &'a Document<'i>, name: &str) -> Result<Node<'a, 'i>, WireError> {
    let root = doc.root_element();
    let tag = root.tag_name();
    if tag.name() != name {
        return Err(WireError::Xml(format!(
            "expected <{name}>, found <{}>",
            tag.name()
        )));
    }
    if !is_ec2_namespace(tag.namespace()) {
        return Err(WireError::Xml(format!(
            "<{name}> is in namespace {:?}, not EC2's",
            tag.namespace().unwrap_or_default()
        )));
    }
    Ok(root)
}

/// The element children of `node` named `name`.
pub fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The first element child named `name`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The first element child named `name`, or an error naming it.
pub fn required_child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Result<Node<'a, 'i>, WireError> {
    child(node, name)
        .ok_or_else(|| WireError::Xml(format!("<{}> has no <{name}>", node.tag_name().name())))
}

/// All text inside `node` (an empty element gives "").
pub fn node_text(node: Node<'_, '_>) -> String {
    node.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect()
}

/// The text of child `name`, if the child exists.
pub fn text(node: Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name).map(node_text)
}

/// The text of child `name`, absent or empty meaning none.
pub fn text_nonempty(node: Node<'_, '_>, name: &str) -> Option<String> {
    text(node, name).filter(|t| !t.is_empty())
}

/// The text of child `name`, or an error naming it.
pub fn required_text(node: Node<'_, '_>, name: &str) -> Result<String, WireError> {
    text(node, name)
        .ok_or_else(|| WireError::Xml(format!("<{}> has no <{name}>", node.tag_name().name())))
}

/// The text of child `name` parsed as a number.
pub fn number<T: std::str::FromStr>(
    node: Node<'_, '_>,
    name: &str,
) -> Result<Option<T>, WireError> {
    text_nonempty(node, name)
        .map(|t| {
            t.trim()
                .parse::<T>()
                .map_err(|_| WireError::Xml(format!("<{name}> is not a number: {t:?}")))
        })
        .transpose()
}

/// The `<item>` elements of child list `set` (`instancesSet`, `tagSet`, ...);
/// none if the list is absent.
pub fn items<'a, 'i: 'a>(node: Node<'a, 'i>, set: &str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    child(node, set)
        .into_iter()
        .flat_map(|s| children(s, "item"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writer_escapes_text() {
        let mut w = XmlWriter::document();
        w.open_root("R");
        w.leaf("v", "a<b & 'c' \"d\">");
        w.close("R");
        let xml = w.finish();
        let doc = parse(&xml).unwrap();
        let root = root(&doc, "R").unwrap();
        assert_eq!(text(root, "v").unwrap(), "a<b & 'c' \"d\">");
    }

    #[test]
    fn root_accepts_namespace_with_and_without_slash_or_none() {
        for ns in [
            " xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"",
            " xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15\"",
            "",
        ] {
            let xml = format!("<R{ns}><a>1</a></R>");
            let doc = parse(&xml).unwrap();
            assert!(root(&doc, "R").is_ok(), "{ns}");
        }
        let doc = parse("<R xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>").unwrap();
        assert!(root(&doc, "R").is_err());
        let doc = parse("<Other/>").unwrap();
        assert!(root(&doc, "R").is_err());
    }
}
