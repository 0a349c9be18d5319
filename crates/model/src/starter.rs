//! The spec `endstate init` writes: commented, valid as it is (a test loads
//! it), and pointed at the built-in cloud's defaults. It is text, not a
//! rendering of types, so that the comments survive.

/// A commented starter spec for `project` (which should be a valid project
/// name: `[a-z0-9-]`, 1 to 40 characters).
pub fn starter_spec(project: &str) -> String {
    STARTER.replace("{project}", project)
}

const STARTER: &str = r#"# endstate spec: the end state of your fleet. `endstate validate` checks it,
# `endstate plan` shows what would change, `endstate apply` converges to it.
# yaml-language-server: $schema=./endstate.schema.json

# Goes into the endstate:project tag of everything endstate creates.
project: {project}

# Where instances run. `local: {}` instead of `aws:` runs them on endstate's
# built-in cloud on this machine (started when needed; starter image
# ami-0e5c0f5d3b1e2a4f6).
provider:
  aws:
    region: us-east-1
    # An EC2-compatible endpoint (moto, say). Leave it out for AWS.
    # endpoint: http://127.0.0.1:5000
    # profile: dev

# Values for ${var.NAME}. A value that is exactly ${var.NAME} keeps its type.
variables:
  ami: ami-0123456789abcdef0
  web_count: 2

# References, never values: env:NAME or file:PATH (relative to this file).
# Usable only in user data, as ${secret.NAME}; resolved at apply time.
secrets: {}
#  db_password: env:DB_PASSWORD

groups:
  web:
    image: ${var.ami}
    instance_types: [t3.micro, t3a.micro]   # in order of preference
    capacity: { min: 1, desired: '${var.web_count}', max: 4 }   # quote ${...} inside { }
    zones:                                  # zone -> subnets (may be empty)
      us-east-1a: []
      us-east-1b: []
    # security_groups: [sg-0123456789abcdef0]
    # key_pair: ops
    # root_volume: { size_gib: 20, type: gp3 }
    metadata: { tokens: required, hop_limit: 2 }
    tags:
      team: web
    user_data:
      # One of script, file (relative to this file) or cloud_config.
      script: |
        #!/bin/sh
        echo "hello from ${var.ami}" > /var/tmp/hello
    disruption_budget: { min_healthy: 90%, max_surge: 1 }

# Overlays picked with `-e NAME`, deep-merged over the above.
environments:
  prod:
    variables: { web_count: 4 }
    groups:
      web:
        capacity: { max: 8 }
"#;
