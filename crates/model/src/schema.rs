//! The JSON Schema of the spec file, for editors: draft-07, the draft that
//! yaml-language-server and most editors support (`# yaml-language-server:
//! $schema=...`). It describes the file as written, before overlay and
//! interpolation; the loader's checks (ranges across fields, secrets
//! resolvable, sizes) are stricter than any schema can say. Written by hand
//! rather than derived, because the file format is not the shape of the
//! resolved types.

use serde_json::{json, Value};

use crate::load::VOLUME_TYPES;

/// The JSON Schema of a spec file.
pub fn json_schema() -> Value {
    let name = json!({
        "type": "string",
        "pattern": "^[a-z0-9-]{1,40}$"
    });
    // Anywhere a number or boolean goes, `${var.NAME}` may stand instead.
    let var_ref = json!({
        "type": "string",
        "pattern": "^\\$\\{var\\.[A-Za-z_][A-Za-z0-9_-]*\\}$"
    });
    let int = |min: u64, max: u64| {
        json!({
            "anyOf": [
                { "type": "integer", "minimum": min, "maximum": max },
                var_ref.clone()
            ]
        })
    };
    let string_list = json!({ "type": "array", "items": { "type": "string" } });
    let scalar = json!({ "type": ["string", "integer", "boolean"] });

    let group = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["image", "capacity", "zones"],
        "oneOf": [
            { "required": ["instance_types"], "not": { "required": ["instance_type"] } },
            { "required": ["instance_type"], "not": { "required": ["instance_types"] } }
        ],
        "properties": {
            "image": {
                "description": "AMI id: ami- and 8 or 17 hex digits (after interpolation).",
                "type": "string"
            },
            "instance_types": {
                "description": "In order of preference.",
                "type": "array", "minItems": 1, "items": { "type": "string" }
            },
            "instance_type": { "type": "string" },
            "capacity": {
                "type": "object",
                "additionalProperties": false,
                "required": ["min", "desired", "max"],
                "properties": {
                    "min": int(0, 10_000),
                    "desired": int(0, 10_000),
                    "max": int(0, 10_000)
                }
            },
            "zones": {
                "description": "zone -> subnet ids, or a list of zone names.",
                "anyOf": [
                    {
                        "type": "object", "minProperties": 1,
                        "additionalProperties": {
                            "anyOf": [string_list.clone(), { "type": "null" }]
                        }
                    },
                    { "type": "array", "minItems": 1, "items": { "type": "string" } }
                ]
            },
            "security_groups": string_list.clone(),
            "key_pair": { "type": "string" },
            "iam_instance_profile": { "type": "string" },
            "root_volume": {
                "type": "object",
                "additionalProperties": false,
                "required": ["size_gib"],
                "properties": {
                    "size_gib": int(1, 16_384),
                    "type": { "enum": VOLUME_TYPES, "default": "gp3" }
                }
            },
            "metadata": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "tokens": { "enum": ["required", "optional"], "default": "required" },
                    "hop_limit": int(1, 64)
                }
            },
            "tags": {
                "type": "object",
                "maxProperties": 40,
                "propertyNames": {
                    "maxLength": 128,
                    "not": { "pattern": "^([Aa][Ww][Ss]|endstate):" }
                },
                "additionalProperties": {
                    "anyOf": [
                        { "type": "string", "maxLength": 256 },
                        { "type": ["integer", "boolean", "null"] }
                    ]
                }
            },
            "user_data": {
                "type": "object",
                "additionalProperties": false,
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "script": { "type": "string" },
                    "file": { "description": "Relative to the spec's directory.", "type": "string" },
                    "cloud_config": { "type": "object" }
                }
            },
            "disruption_budget": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "min_healthy": {
                        "anyOf": [
                            { "type": "number", "minimum": 0, "maximum": 1 },
                            { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?%$" }
                        ],
                        "default": "90%"
                    },
                    "max_surge": int(0, 10_000)
                }
            }
        }
    });

    let provider = json!({
        "type": "object",
        "additionalProperties": false,
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "local": {
                "description": "The built-in cloud on this machine, started in the background when none runs.",
                "type": ["object", "null"],
                "additionalProperties": false,
                "properties": {
                    "region": { "type": "string" },
                    "dir": { "type": "string" }
                }
            },
            "aws": {
                "type": "object",
                "additionalProperties": false,
                "required": ["region"],
                "properties": {
                    "region": { "type": "string" },
                    "endpoint": { "type": "string", "pattern": "^https?://" },
                    "profile": { "type": "string" }
                }
            }
        }
    });
    let variables = json!({
        "type": "object",
        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$" },
        "additionalProperties": scalar
    });
    let secrets = json!({
        "type": "object",
        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$" },
        "additionalProperties": { "type": "string", "pattern": "^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$" }
    });

    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://endstate.dev/schema/spec.json",
        "title": "endstate spec",
        "type": "object",
        "additionalProperties": false,
        "required": ["project", "provider", "groups"],
        "definitions": { "group": group, "name": name },
        "properties": {
            "project": { "$ref": "#/definitions/name" },
            "provider": provider,
            "variables": variables,
            "secrets": secrets,
            "groups": {
                "type": "object",
                "propertyNames": { "$ref": "#/definitions/name" },
                "additionalProperties": { "$ref": "#/definitions/group" }
            },
            "environments": {
                "type": "object",
                "propertyNames": { "$ref": "#/definitions/name" },
                "additionalProperties": {
                    "description": "Deep-merged over the base: mappings key by key, other values replaced.",
                    "type": ["object", "null"],
                    "additionalProperties": false,
                    "properties": {
                        "provider": { "type": "object" },
                        "variables": variables,
                        "secrets": secrets,
                        "groups": {
                            "type": "object",
                            "additionalProperties": { "type": "object" }
                        }
                    }
                }
            }
        }
    })
}
