//! The JSON Schema of the spec file, for editors: draft-07, the draft that
//! yaml-language-server and most editors support (`# yaml-language-server:
//! $schema=...`). It describes the file as written, before overlay and
//! interpolation; the loader's checks (ranges across fields, secrets
//! resolvable, sizes) are stricter than any schema can say. Written by hand
//! rather than derived, because the file format is not the shape of the
//! resolved types.

use serde_json::{json, Value};

use crate::load::recipe_section::{BUILDERS, DURATION_PATTERN, MAX_KEEP_VERSIONS};
use crate::load::role_section::{kind_names, KindFields, Shape, KINDS, ROLE_NAME_PATTERN};
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

    let seconds = int(0, u64::from(u32::MAX));
    let number = json!({
        "anyOf": [
            { "type": "number" },
            { "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$" },
            var_ref.clone()
        ]
    });
    let share = json!({
        "anyOf": [
            { "type": "number", "minimum": 0, "maximum": 1 },
            { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?%$" }
        ]
    });
    let metric = json!({ "type": "string", "pattern": "^[a-z][a-z0-9_]*$" });
    let port = int(1, 65_535);
    let health_check = json!({
        "description": "How endstate serve tells healthy instances from unhealthy ones. Exactly one of http, tcp.",
        "type": "object",
        "additionalProperties": false,
        "minProperties": 1,
        "oneOf": [
            { "required": ["http"], "not": { "required": ["tcp"] } },
            { "required": ["tcp"], "not": { "required": ["http"] } }
        ],
        "properties": {
            "http": {
                "type": "object",
                "additionalProperties": false,
                "required": ["port"],
                "properties": {
                    "port": port.clone(),
                    "path": { "type": "string", "pattern": "^/", "default": "/" },
                    "expected": {
                        "description": "Status codes and ranges: 200, \"200-299\", \"200,204\".",
                        "anyOf": [
                            { "type": "integer", "minimum": 100, "maximum": 599 },
                            { "type": "string", "pattern": "^[0-9]{3}(-[0-9]{3})?(,[0-9]{3}(-[0-9]{3})?)*$" }
                        ],
                        "default": 200
                    }
                }
            },
            "tcp": {
                "type": "object",
                "additionalProperties": false,
                "required": ["port"],
                "properties": { "port": port.clone() }
            },
            "interval": { "description": "Seconds; default 30.", "allOf": [seconds.clone()] },
            "timeout": { "description": "Seconds, less than interval; default 5.", "allOf": [seconds.clone()] },
            "healthy_threshold": { "description": "Default 5.", "allOf": [int(1, u64::from(u32::MAX))] },
            "unhealthy_threshold": { "description": "Default 2.", "allOf": [int(1, u64::from(u32::MAX))] },
            "grace_period": { "description": "Seconds after launch; default 300.", "allOf": [seconds.clone()] }
        }
    });
    let replacement_brake = json!({
        "description": "Correlated failures pause replacement.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "max_unhealthy_share": { "allOf": [share.clone()], "default": 0.3 },
            "min_unhealthy": { "description": "Default 2.", "allOf": [int(0, 10_000)] },
            "window": { "description": "Seconds; default 300.", "allOf": [seconds.clone()] }
        }
    });
    let target_tracking = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["metric", "target"],
        "properties": {
            "metric": { "description": "cpu: the built-in cloud's per-instance CPU utilization (percent of one core).", "allOf": [metric.clone()] },
            "target": { "description": "Greater than 0.", "allOf": [number.clone()] },
            "scale_out_cooldown": { "description": "Seconds; default 300.", "allOf": [seconds.clone()] },
            "scale_in_cooldown": { "description": "Seconds; default 300.", "allOf": [seconds.clone()] },
            "instance_warmup": { "description": "Seconds; default 300.", "allOf": [seconds.clone()] },
            "disable_scale_in": { "anyOf": [{ "type": "boolean" }, var_ref.clone()], "default": false }
        }
    });
    let step = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["metric", "threshold", "adjustment_type", "steps"],
        "properties": {
            "metric": metric,
            "threshold": number.clone(),
            "adjustment_type": { "enum": ["change_in_capacity", "exact_capacity", "percent_change_in_capacity"] },
            "steps": {
                "description": "Bounds relative to threshold; absent is minus or plus infinity.",
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["adjustment"],
                    "properties": {
                        "lower": number.clone(),
                        "upper": number,
                        "adjustment": { "anyOf": [{ "type": "integer" }, var_ref.clone()] }
                    }
                }
            },
            "instance_warmup": { "description": "Seconds; default 300.", "allOf": [seconds.clone()] },
            "scale_in_cooldown": { "description": "Seconds; default 300.", "allOf": [seconds.clone()] },
            "min_adjustment_magnitude": int(1, 10_000)
        }
    });
    let scheduled = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "cron"],
        "anyOf": [
            { "required": ["min"] },
            { "required": ["max"] },
            { "required": ["desired"] }
        ],
        "properties": {
            "name": { "description": "Unique within the group.", "type": "string", "minLength": 1 },
            "cron": { "description": "minute hour day-of-month month day-of-week, in time_zone.", "type": "string" },
            "time_zone": { "description": "IANA zone name.", "type": "string", "default": "UTC" },
            "min": int(0, 10_000),
            "max": int(0, 10_000),
            "desired": int(0, 10_000)
        }
    });
    let scaling = json!({
        "description": "Auto-scaling policies applied by endstate serve.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "target_tracking": { "type": "array", "items": target_tracking },
            "step": { "type": "array", "items": step },
            "scheduled": { "type": "array", "items": scheduled }
        }
    });

    let amount = json!({
        "description": "A number of instances, or a whole percentage of desired capacity like \"25%\".",
        "anyOf": [
            { "type": "integer", "minimum": 0, "maximum": 10_000 },
            { "type": "string", "pattern": "^(100|[1-9]?[0-9])%$" },
            var_ref.clone()
        ],
        "default": "25%"
    });
    let load_balancer_spec = json!({
        "description": "An HTTP load balancer: a listener on port, with a target group per generation of the group that names it.",
        "type": "object",
        "additionalProperties": false,
        "required": ["port"],
        "properties": {
            "port": { "description": "The listener's port; one per load balancer.", "allOf": [port.clone()] },
            "deregistration_delay": {
                "description": "Seconds a deregistered target may finish requests in flight; default 300.",
                "allOf": [int(0, 3_600)]
            }
        }
    });
    let load_balancers = json!({
        "description": "name -> load balancer.",
        "type": "object",
        "propertyNames": {
            "maxLength": 32,
            "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$",
            "not": { "pattern": "^internal-" }
        },
        "additionalProperties": load_balancer_spec
    });
    let group_load_balancer = json!({
        "description": "The load balancer (under load_balancers) the group serves behind, one group per load balancer. Without a health_check, its target groups probe HTTP GET / on port.",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "port"],
        "properties": {
            "name": { "type": "string" },
            "port": { "description": "The port the instances serve traffic on.", "allOf": [port.clone()] }
        }
    });
    let rollout_common = json!({
        "healthy_timeout": { "description": "Seconds the new instances may take to be healthy; default 300.", "allOf": [int(1, u64::from(u32::MAX))] },
        "watch": { "description": "Seconds health and the error rate are watched after the switch or the last batch; default 60.", "allOf": [seconds.clone()] },
        "auto_rollback": { "anyOf": [{ "type": "boolean" }, var_ref.clone()], "default": true },
        "max_error_rate": {
            "description": "Share of 5xx answers above which the new generation fails; greater than 0; default 5%.",
            "allOf": [share.clone()],
            "default": "5%"
        }
    });
    // One branch per strategy, each closed over its own keys and the
    // shared ones, so that a key of the other strategy is an error.
    let strategy = |name: &str, own: Value| {
        let mut properties = rollout_common.clone();
        if let (Some(all), Value::Object(own)) = (properties.as_object_mut(), own) {
            all.extend(own);
        }
        properties["strategy"] = json!({ "const": name });
        json!({ "required": ["strategy"], "additionalProperties": false, "properties": properties })
    };
    let rolling = strategy(
        "rolling",
        json!({
            "max_surge": { "description": "Instances above desired during the update; default 25%.", "allOf": [amount.clone()] },
            "max_unavailable": { "description": "Instances below desired during the update; default 25%.", "allOf": [amount] },
            "pause": { "description": "Seconds between batches; default 0.", "allOf": [seconds.clone()] }
        }),
    );
    let blue_green = strategy(
        "blue_green",
        json!({
            "canary": {
                "description": "Percent of requests to the new generation, each step held canary_pause; increasing; default [].",
                "type": "array",
                "items": int(1, 99)
            },
            "canary_pause": { "description": "Seconds; default 30.", "allOf": [seconds.clone()] },
            "keep_old_for": { "description": "Seconds the old generation is kept after the switch; default 300.", "allOf": [seconds.clone()] }
        }),
    );
    let rollout = json!({
        "description": "How endstate serve moves the group to a new generation; needs load_balancer. Default: rolling, 25% surge, 25% unavailable.",
        "type": "object",
        "oneOf": [rolling, blue_green]
    });

    let tags = json!({
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
    });
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
                "description": "AMI id: ami- and 8 or 17 hex digits, or RECIPE@CHANNEL: the head of a channel of a recipe under recipes (after interpolation).",
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
            "tags": tags.clone(),
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
            },
            "health_check": health_check,
            "replacement_brake": replacement_brake,
            "scaling": scaling,
            "load_balancer": group_load_balancer,
            "rollout": rollout,
            "roles": {
                "description": "Roles (under roles) configured on the group's instances, in this order; each once.",
                "type": "array",
                "uniqueItems": true,
                "items": { "type": "string" }
            }
        }
    });

    let role = roles_schema(&var_ref, &int(0, u64::from(u32::MAX)));
    let recipe = recipe_schema(&tags, &int(1, MAX_KEEP_VERSIONS.unsigned_abs()));

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
        "definitions": { "group": group, "name": name, "role": role, "recipe": recipe },
        "properties": {
            "project": { "$ref": "#/definitions/name" },
            "provider": provider,
            "variables": variables,
            "secrets": secrets,
            "load_balancers": load_balancers,
            "roles": {
                "description": "name -> role: resources configured on the instances of the groups that list it.",
                "type": "object",
                "propertyNames": { "pattern": ROLE_NAME_PATTERN },
                "additionalProperties": { "$ref": "#/definitions/role" }
            },
            "recipes": {
                "description": "name -> recipe: a golden image baked from an image or another recipe, by steps.",
                "type": "object",
                "propertyNames": { "$ref": "#/definitions/name" },
                "additionalProperties": { "$ref": "#/definitions/recipe" }
            },
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
                        "load_balancers": {
                            "type": "object",
                            "additionalProperties": { "type": "object" }
                        },
                        "roles": {
                            "description": "A role here replaces its base's resources list whole, or adds a role.",
                            "type": "object",
                            "additionalProperties": { "type": ["object", "null"] }
                        },
                        "recipes": {
                            "type": "object",
                            "additionalProperties": { "type": "object" }
                        },
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

/// A role: `{ resources: [...] }`, each resource one of the kinds of
/// `endstate-config` with exactly its fields (the loader's table).
fn roles_schema(var_ref: &Value, id: &Value) -> Value {
    let resources: Vec<Value> = KINDS
        .iter()
        .map(
            |KindFields {
                 kind,
                 fields,
                 required,
             }| {
                let mut properties = serde_json::Map::new();
                properties.insert("kind".to_string(), json!({ "const": kind }));
                for (field, shape) in fields.iter() {
                    let schema = match (shape, *field) {
                        // YAML 1.1 readers take an unquoted 0644 for an integer.
                        (Shape::Text, "mode") => json!({ "type": ["string", "integer"] }),
                        (Shape::Text, "version") => json!({ "type": ["string", "number"] }),
                        (Shape::Text | Shape::SecretText, _) => json!({ "type": "string" }),
                        (Shape::List, _) => {
                            json!({ "type": "array", "items": { "type": "string" } })
                        }
                        (Shape::Bool, _) => json!({ "anyOf": [{ "type": "boolean" }, var_ref] }),
                        (Shape::Id | Shape::Seconds, _) => id.clone(),
                        (Shape::Ensure, _) => json!({ "enum": ["running", "stopped"] }),
                        (Shape::Vars, _) => json!({ "type": "object" }),
                    };
                    properties.insert((*field).to_string(), schema);
                }
                let mut all_required = vec!["kind", "name"];
                all_required.extend(required.iter().copied());
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": all_required,
                    "properties": properties
                })
            },
        )
        .collect();
    json!({
        "description": format!("Resources, each of a kind: {}. requires and notify name ids, kind:name.", kind_names().join(", ")),
        "type": ["object", "null"],
        "additionalProperties": false,
        "properties": {
            "resources": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": { "kind": { "enum": kind_names() } },
                    "oneOf": resources
                }
            }
        }
    })
}

/// A recipe: `from`, `steps` (each a name and exactly one of file, shell,
/// role), tags as a group's, channels, builder and keep.
fn recipe_schema(tags: &Value, versions: &Value) -> Value {
    let builders: Vec<&str> = BUILDERS.iter().map(|(name, _)| *name).collect();
    let file = json!({
        "description": "A file the step writes: exactly one of content, source.",
        "type": "object",
        "additionalProperties": false,
        "required": ["path"],
        "oneOf": [
            { "required": ["content"], "not": { "required": ["source"] } },
            { "required": ["source"], "not": { "required": ["content"] } }
        ],
        "properties": {
            "path": { "description": "Absolute, without . or .. components.", "type": "string", "pattern": "^/" },
            "content": { "type": "string" },
            "source": { "description": "A file relative to the spec's directory, read and hashed at load time.", "type": "string" },
            // YAML 1.1 readers take an unquoted 0644 for an integer.
            "mode": { "description": "Octal, like \"0644\".", "type": ["string", "integer"] }
        }
    });
    let step = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name"],
        "oneOf": [
            { "required": ["file"], "not": { "anyOf": [{ "required": ["shell"] }, { "required": ["role"] }] } },
            { "required": ["shell"], "not": { "anyOf": [{ "required": ["file"] }, { "required": ["role"] }] } },
            { "required": ["role"], "not": { "anyOf": [{ "required": ["file"] }, { "required": ["shell"] }] } }
        ],
        "properties": {
            "name": { "description": "Unique within the recipe.", "type": "string", "pattern": ROLE_NAME_PATTERN },
            "file": file,
            "shell": { "description": "A script run with /bin/sh.", "type": "string", "minLength": 1 },
            "role": { "description": "A role under roles, applied by the configuration engine.", "type": "string" }
        }
    });
    let duration = json!({
        "description": "Seconds, or a number and a unit: 90m, 12h, 14d, 2w.",
        "anyOf": [
            { "type": "integer", "minimum": 1 },
            { "type": "string", "pattern": DURATION_PATTERN }
        ]
    });
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["from", "steps"],
        "properties": {
            "from": { "description": "An AMI id, or the name of another recipe (a lineage, at most 16 deep).", "type": "string" },
            "steps": { "type": "array", "minItems": 1, "items": step },
            "tags": tags,
            "channels": {
                "description": "Channels this recipe's bakes may be promoted to; groups name them as RECIPE@CHANNEL.",
                "type": "array",
                "uniqueItems": true,
                "items": { "type": "string", "pattern": "^[a-z0-9-]{1,40}$" }
            },
            "builder": { "description": "Default: the backend decides.", "enum": builders },
            "keep": {
                "description": "Retention: an image is kept when any rule set keeps it.",
                "type": "object",
                "additionalProperties": false,
                "minProperties": 1,
                "properties": {
                    "versions": { "description": "The newest N versions per channel.", "allOf": [versions] },
                    "younger_than": duration
                }
            }
        }
    })
}
