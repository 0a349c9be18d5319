//! Reading the world: every instance carrying the project's owner tag, in
//! pages of up to 1,000 (one DescribeInstances call per page, never one per
//! instance).

use endstate_model::tags;
use endstate_plan::Observed;
use endstate_provider::{Filter, Instance, Provider, ProviderError};

/// States worth reading: terminated instances linger in EC2's answers for a
/// while and carry nothing to plan.
const LIVE_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

/// Every page of DescribeInstances for `filters`.
pub async fn describe_all(
    provider: &dyn Provider,
    filters: &[Filter],
) -> Result<Vec<Instance>, ProviderError> {
    Ok(endstate_provider::describe_all(provider, filters).await?.0)
}

/// The project's instances, in every state but terminated.
pub async fn observe(provider: &dyn Provider, project: &str) -> Result<Observed, ProviderError> {
    let instances = read(provider, vec![Filter::tag(tags::PROJECT, project)]).await?;
    Ok(Observed { instances })
}

/// One group's instances of the project, in every state but terminated.
pub async fn observe_group(
    provider: &dyn Provider,
    project: &str,
    group: &str,
) -> Result<Vec<Instance>, ProviderError> {
    read(
        provider,
        vec![
            Filter::tag(tags::PROJECT, project),
            Filter::tag(tags::GROUP, group),
        ],
    )
    .await
}

/// Every page for `filters` and the live states, sorted by id, each once
/// (a page boundary may repeat an instance).
async fn read(
    provider: &dyn Provider,
    mut filters: Vec<Filter>,
) -> Result<Vec<Instance>, ProviderError> {
    filters.push(Filter::new("instance-state-name", LIVE_STATES));
    let mut instances = describe_all(provider, &filters).await?;
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    instances.dedup_by(|a, b| a.id == b.id);
    Ok(instances)
}
