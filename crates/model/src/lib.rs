//! endstate's spec: the YAML file format, and the resolved, validated
//! [`Spec`] it turns into. [`load`] parses (keeping every node's position),
//! overlays an environment, interpolates `${var.*}` / `${secret.*}` and
//! validates, reporting every problem at once as [`Diagnostics`] with
//! file:line:column. [`json_schema`] describes the file for editors,
//! [`starter_spec`] is what `endstate init` writes, and
//! [`UserData::render`] produces user data bytes at apply time.
//!
//! This crate does no network I/O and holds no secret values: secrets stay
//! [`SecretRef`]s until `render` resolves them. Planning, state and talking
//! to EC2 live in other crates.
//!
//! # The file format
//!
//! ```yaml
//! project: shop                      # required; [a-z0-9-]{1,40}
//! provider:
//!   aws:
//!     region: us-east-1              # required
//!     endpoint: http://127.0.0.1:5000   # optional http(s) URL
//!     profile: dev                   # optional
//! variables:                         # name -> string, integer or boolean
//!   ami: ami-0123456789abcdef0
//!   web_count: 3
//! secrets:                           # name -> env:NAME | file:PATH (relative to the spec)
//!   db_password: env:DB_PASSWORD
//! load_balancers:                    # name (ELBv2's: 1-32 of A-Za-z0-9-, no - at either end) -> LB
//!   web-lb:
//!     port: 8080                     # the listener's port, required; one per load balancer
//!     deregistration_delay: 30       # seconds, 0..=3600 (default 300)
//! roles:                             # name -> role, configured on the instances of groups listing it
//!   web:
//!     resources:                     # kinds: file, directory, template, package, service, user, group, exec
//!       - { kind: package, name: nginx }
//!       - kind: template             # minijinja ({{ }} is left alone); sees facts, tags, metadata, vars
//!         name: site
//!         path: /etc/nginx/conf.d/site.conf
//!         template: "listen {{ vars.port }};"
//!         vars: { port: 80 }
//!         mode: "0644"
//!         requires: ['package:nginx']   # ids, kind:name, unique across roles
//!         notify: ['service:nginx']     # restarted only when this changed
//!       - { kind: file, name: key, path: /etc/key, content: '${secret.db_password}' }   # secrets: content, template, vars, command, onlyif, unless
//!       - { kind: exec, name: init, command: nginx -t, creates: /etc/nginx/ok }   # guards: creates, onlyif, unless
//!       - { kind: service, name: nginx }
//! recipes:                           # name ([a-z0-9-]{1,40}) -> golden image recipe (endstate bake)
//!   base:
//!     from: ami-0123456789abcdef0    # an AMI id, or another recipe: a lineage, at most 16 deep
//!     steps:                         # in order, names unique; each exactly one of file, shell, role
//!       - { name: motd, file: { path: /etc/motd, content: "baked\n", mode: "0644" } }   # or source: FILE, relative to the spec
//!       - { name: tools, shell: "apt-get install -y curl" }   # run with /bin/sh; no ${secret.*} in file or shell
//!   web-base:
//!     from: base
//!     steps:
//!       - { name: web, role: web }   # a role under roles:
//!     tags: { team: storefront }     # as a group's tags
//!     channels: [stable, canary]     # what groups name: image: web-base@stable
//!     builder: volume                # or instance; default: the backend decides
//!     keep: { versions: 5, younger_than: 14d }   # an image is kept if any rule keeps it; 3600, 90m, 12h, 14d, 2w
//! groups:                            # name ([a-z0-9-]{1,40}) -> group
//!   web:
//!     image: ${var.ami}              # ami- and 8 or 17 hex digits, or RECIPE@CHANNEL (web-base@stable)
//!     instance_types: [t3.micro, t3a.micro]   # or instance_type: t3.micro
//!     capacity:                      # min <= desired <= max <= 10,000
//!       min: 2
//!       desired: ${var.web_count}    # exactly ${var.X}: takes the variable's type
//!       max: 6
//!     zones:                         # zone -> subnets, or a list of zones
//!       us-east-1a: [subnet-aaa]
//!     security_groups: [sg-123]
//!     key_pair: ops
//!     iam_instance_profile: web-role
//!     root_volume: { size_gib: 20, type: gp3 }
//!     metadata: { tokens: required, hop_limit: 2 }
//!     tags: { team: storefront }     # no aws: / endstate: keys; at most 40
//!     user_data:                     # exactly one of script, file, cloud_config
//!       script: |
//!         echo ${secret.db_password} > /etc/db
//!     disruption_budget: { min_healthy: 90%, max_surge: 2 }
//!     health_check:                  # for endstate serve; exactly one of http, tcp
//!       http: { port: 8080, path: /healthz, expected: "200-299" }   # path /, expected 200
//!       interval: 10                 # seconds (default 30); timeout (5) must be less
//!       timeout: 2
//!       healthy_threshold: 2         # default 5
//!       unhealthy_threshold: 3       # default 2
//!       grace_period: 300            # seconds after launch, default 300
//!     replacement_brake: { max_unhealthy_share: 0.3, min_unhealthy: 2, window: 300 }
//!     scaling:                       # types of endstate-scaling, checked by it
//!       target_tracking:
//!         - { metric: cpu, target: 50, scale_out_cooldown: 60, scale_in_cooldown: 300, instance_warmup: 60 }
//!       step:
//!         - metric: requests
//!           threshold: 100
//!           adjustment_type: change_in_capacity   # or exact_capacity, percent_change_in_capacity
//!           steps: [{ lower: 0, upper: 50, adjustment: 1 }, { lower: 50, adjustment: 3 }]
//!       scheduled:                   # names unique; sets at least one of min, max, desired
//!         - { name: evening, cron: 0 19 * * 1-5, time_zone: Europe/Berlin, min: 0, desired: 0 }
//!     load_balancer: { name: web-lb, port: 8000 }   # one group per LB; port: the instances' traffic port
//!     roles: [web]                   # names under roles:, in the order they apply; version: Group::roles_hash
//!     rollout:                       # needs load_balancer; default rolling with 25% / 25%
//!       strategy: blue_green         # or rolling, required
//!       canary: [10, 50]             # blue_green: % of requests to the new generation, increasing, 1..=99
//!       canary_pause: 30             # blue_green: seconds each step is held (default 30)
//!       keep_old_for: 300            # blue_green: seconds the old generation is kept (default 300)
//!       # rolling: max_surge, max_unavailable (2 or "25%", default 25%; not both 0), pause (seconds, 0)
//!       healthy_timeout: 300         # seconds, at least 1 (default 300)
//!       watch: 60                    # seconds (default 60)
//!       auto_rollback: true          # default true
//!       max_error_rate: 5%           # 5% or 0.05; above 0, at most 1 (default 5%)
//! environments:                      # picked with -e; deep-merged over the above
//!   prod:
//!     variables: { web_count: 10 }
//!     groups:
//!       web:
//!         capacity: { desired: '${var.web_count}', max: 20 }
//! ```
//!
//! A group behind a load balancer without a `health_check` is probed by
//! its target group with HTTP GET / on its traffic port. An overlay that
//! sets `rollout.strategy` drops the base's keys of the other strategy.
//!
//! Inside `{ }` and `[ ]` YAML needs quotes around `${...}`; a quoted scalar
//! that is exactly `${var.X}` still takes the variable's type. `$${` is a
//! literal `${`, and `${...}` not of the form `${word.word}` (a shell's
//! `${HOME}`) is left as it is. An explicit `null` in an overlay unsets an
//! optional value.
//!
//! An environment's `roles:` adds roles or replaces a role's `resources`
//! list whole. A recipe's version is a hash chain over its parent's
//! version and its steps' contents ([`recipe`]); a group naming a channel
//! keeps the reference's text in `image_id` until the plan resolves it. [`load_roles`] reads the `roles:` of a standalone file (or
//! of a spec) for `endstate config apply`.

// The black-box tests (once `tests/model_all`) live here as a module of the
// unit tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_model;
#[cfg(test)]
mod black_box;

mod cloud_config;
mod diagnostic;
pub mod health;
mod interpolate;
mod load;
pub mod recipe;
pub mod roles;
pub mod rollout;
mod schema;
mod starter;
mod types;
mod user_data;

pub use cloud_config::needs_quotes as yaml11_needs_quotes;
pub use diagnostic::{Diagnostic, Diagnostics};
/// The configuration engine whose [`config::Role`]s the `roles:` section holds.
pub use endstate_config as config;
/// The auto-scaling crate whose policy types [`Scaling`] holds.
pub use endstate_scaling as scaling;
pub use load::{load, load_roles, load_roles_str, load_str, MAX_CAPACITY, MAX_USER_TAGS};
pub use recipe::{ChannelRef, Recipe, RecipeVersion};
pub use rollout::{Amount, GroupLoadBalancer, LoadBalancerSpec, Rollout, Strategy};
pub use schema::json_schema;
pub use starter::starter_spec;
pub use types::*;
pub use user_data::{resolve_secret, SecretError, USER_DATA_LIMIT};
