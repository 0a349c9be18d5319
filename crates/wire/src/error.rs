//! What can be wrong with a request's parameters (a server's concern) or a
//! response's XML (a client's concern), and EC2's error document, both ways.
//!
//! Not here: HTTP statuses for a server's own faults, and transport errors;
//! those belong to the crates that do I/O.

use crate::xml::{self, XmlWriter};

/// A request or response that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A required parameter is absent.
    #[error("the request must contain the parameter {0}")]
    MissingParameter(String),
    /// A parameter's value cannot be read (not a number, not a boolean, a bad
    /// list index, ...).
    #[error("invalid value for parameter {name}: {reason}")]
    InvalidParameterValue { name: String, reason: String },
    /// A parameter this action does not take (or that we do not support).
    #[error("unknown parameter {0}")]
    UnknownParameter(String),
    /// `Action` names nothing we implement.
    #[error("the action {0} is not valid for this web service")]
    InvalidAction(String),
    /// `UserData` is not base64.
    #[error("invalid BASE64 encoding of user data")]
    InvalidUserData,
    /// The body is not a form (bad UTF-8, a parameter given twice).
    #[error("malformed form body: {0}")]
    MalformedForm(String),
    /// The body is not XML, or not the document expected.
    #[error("malformed XML: {0}")]
    Xml(String),
}

impl WireError {
    /// The EC2 error code a server answers with (HTTP 400) for this error.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::MissingParameter(_) => "MissingParameter",
            WireError::InvalidParameterValue { .. } => "InvalidParameterValue",
            WireError::UnknownParameter(_) => "UnknownParameter",
            WireError::InvalidAction(_) => "InvalidAction",
            WireError::InvalidUserData => "InvalidUserData.Malformed",
            WireError::MalformedForm(_) => "MalformedQueryString",
            // A client-side problem; a server never sends it.
            WireError::Xml(_) => "InternalError",
        }
    }

    /// The error document a server answers with for this error.
    pub fn to_response(&self, request_id: impl Into<String>) -> ErrorResponse {
        ErrorResponse::single(self.code(), self.to_string(), request_id)
    }
}

/// One `<Error>` of an error document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// EC2's error document:
/// `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub errors: Vec<ErrorDetail>,
    pub request_id: Option<String>,
}

impl ErrorResponse {
    /// A document with one error.
    pub fn single(
        code: impl Into<String>,
        message: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self {
            errors: vec![ErrorDetail {
                code: code.into(),
                message: message.into(),
            }],
            request_id: Some(request_id.into()),
        }
    }

    /// The first error, which is the one EC2 clients report.
    pub fn first(&self) -> Option<&ErrorDetail> {
        self.errors.first()
    }

    /// The XML a server sends. EC2 sends error documents without a
    /// namespace.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open("Response");
        w.open("Errors");
        for e in &self.errors {
            w.open("Error");
            w.leaf("Code", &e.code);
            w.leaf("Message", &e.message);
            w.close("Error");
        }
        w.close("Errors");
        if let Some(id) = &self.request_id {
            w.leaf("RequestID", id);
        }
        w.close("Response");
        w.finish()
    }

    /// Parses an error document. Accepts `RequestID` and `RequestId`, and
    /// the EC2 namespace or none.
    pub fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, "Response")?;
        let errors_node = xml::required_child(root, "Errors")?;
        let errors = xml::children(errors_node, "Error")
            .map(|e| {
                Ok(ErrorDetail {
                    code: xml::required_text(e, "Code")?,
                    message: xml::text(e, "Message").unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        if errors.is_empty() {
            return Err(WireError::Xml(
                "error document without an <Error>".to_string(),
            ));
        }
        let request_id = xml::text(root, "RequestID").or_else(|| xml::text(root, "RequestId"));
        Ok(Self { errors, request_id })
    }
}
