//! Reading a request's input: the query string (only the parameters a route
//! names, each at most once) and JSON bodies, with errors that say which
//! parameter or field is wrong. Answers with [`BadRequest`] (400); does not
//! know about routes or the controller.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;

/// The client sent something the API cannot read: 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Query {
    params: BTreeMap<String, String>,
}

impl Query {
    /// Parses `raw` (`a=1&b=x`), refusing parameters not in `allowed` and
    /// repeated ones.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, BadRequest> {
        let mut params = BTreeMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key)?;
            let value = decode(value)?;
            if !allowed.contains(&key.as_str()) {
                let expected = if allowed.is_empty() {
                    "this route takes none".to_string()
                } else {
                    format!("this route takes {}", allowed.join(", "))
                };
                return Err(BadRequest(format!(
                    "query parameter `{key}` is unknown: {expected}"
                )));
            }
            if params.insert(key.clone(), value).is_some() {
                return Err(BadRequest(format!(
                    "query parameter `{key}` is given more than once"
                )));
            }
        }
        Ok(Query { params })
    }

    /// A text parameter; an empty value counts as absent.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An integer parameter within `min..=max`.
    pub fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, BadRequest> {
        let Some(text) = self.text(key) else {
            return Ok(None);
        };
        let value: i64 = text.parse().map_err(|_| {
            BadRequest(format!(
                "query parameter `{key}`: `{text}` is not an integer"
            ))
        })?;
        if value < min || value > max {
            return Err(BadRequest(format!(
                "query parameter `{key}`: {value} is out of range {min}..={max}"
            )));
        }
        Ok(Some(value))
    }
}

fn decode(text: &str) -> Result<String, BadRequest> {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| BadRequest(format!("query string `{text}` is not UTF-8")))
}

/// Reads a JSON body of type `T`; an empty body is `T`'s default when
/// `empty` gives one.
pub fn json_body<T: DeserializeOwned>(
    body: &[u8],
    what: &str,
    empty: Option<T>,
) -> Result<T, BadRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| BadRequest(format!("request body: expected {what}")));
    }
    serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "request body: expected {what}: {e} (line {} column {})",
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decodes_and_refuses_unknown_and_repeated() {
        let q = Query::parse(Some("group=web%20a&after=5"), &["group", "after"]).unwrap();
        assert_eq!(q.text("group"), Some("web a"));
        assert_eq!(q.integer("after", 0, 10).unwrap(), Some(5));
        assert_eq!(q.integer("missing", 0, 10).unwrap(), None);

        let unknown = Query::parse(Some("grp=web"), &["group"]).unwrap_err();
        assert_eq!(
            unknown.0,
            "query parameter `grp` is unknown: this route takes group"
        );
        let twice = Query::parse(Some("group=a&group=b"), &["group"]).unwrap_err();
        assert!(twice.0.contains("more than once"), "{}", twice.0);
    }

    #[test]
    fn integers_out_of_range_or_not_numbers_are_refused() {
        let q = Query::parse(Some("limit=5000&after=x"), &["limit", "after"]).unwrap();
        assert_eq!(
            q.integer("limit", 1, 1000).unwrap_err().0,
            "query parameter `limit`: 5000 is out of range 1..=1000"
        );
        assert_eq!(
            q.integer("after", 0, 9).unwrap_err().0,
            "query parameter `after`: `x` is not an integer"
        );
    }

    #[test]
    fn json_body_names_the_position_and_allows_empty_defaults() {
        let err = json_body::<super::super::types::ProtectionRequest>(
            b"{\"protected\": 1}",
            "{\"protected\": bool}",
            None,
        )
        .unwrap_err();
        assert!(err.0.contains("line 1 column"), "{}", err.0);
        let empty = json_body(
            b" ",
            "a pause",
            Some(super::super::types::PauseRequest::default()),
        );
        assert_eq!(empty.unwrap().reason, None);
    }
}
