//! Which Flux APIs the cluster serves, found through API discovery.
//!
//! The agent needs `GitRepository` (`source.toolkit.fluxcd.io`, `v1`, or `v1beta2` on an
//! older Flux) and `Receiver` (`notification.toolkit.fluxcd.io/v1`). A cluster without
//! them is reported, loudly and in `/readyz`, and checked again every
//! [`RECHECK_INTERVAL`], so discovery starts when Flux is installed, without a restart.
//! Discovery (`GET /apis/<group>/<version>`) needs no RBAC beyond what every
//! authenticated client has.

use std::time::Duration;

use kube::Client;
use kube::discovery::ApiResource;

/// How often a cluster without the Flux APIs is checked again.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

pub const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
pub const NOTIFICATION_GROUP: &str = "notification.toolkit.fluxcd.io";
/// `GitRepository` versions, preferred first.
const GIT_REPOSITORY_VERSIONS: [&str; 2] = ["v1", "v1beta2"];
const RECEIVER_VERSION: &str = "v1";

/// The Flux APIs the agent works with, as served by this cluster.
#[derive(Debug, Clone)]
pub struct FluxApis {
    pub git_repository: ApiResource,
    pub receiver: ApiResource,
}

/// Looks the Flux APIs up. `Ok(Err(missing))` names what the cluster does not serve; an
/// `Err` is a failure to ask (network, credentials).
pub async fn discover(client: &Client) -> Result<Result<FluxApis, Vec<String>>, kube::Error> {
    let mut missing = Vec::new();
    let mut git_repository = None;
    for version in GIT_REPOSITORY_VERSIONS {
        if let Some(resource) = find(client, SOURCE_GROUP, version, "GitRepository").await? {
            git_repository = Some(resource);
            break;
        }
    }
    if git_repository.is_none() {
        missing.push(format!(
            "{SOURCE_GROUP} GitRepository (v1 or v1beta2): Flux's source-controller CRDs"
        ));
    }
    let receiver = find(client, NOTIFICATION_GROUP, RECEIVER_VERSION, "Receiver").await?;
    if receiver.is_none() {
        missing.push(format!(
            "{NOTIFICATION_GROUP}/{RECEIVER_VERSION} Receiver: Flux's notification-controller CRDs"
        ));
    }
    Ok(match (git_repository, receiver) {
        (Some(git_repository), Some(receiver)) => Ok(FluxApis {
            git_repository,
            receiver,
        }),
        _ => Err(missing),
    })
}

/// The resource of `kind` in `group/version`, if that version is served.
async fn find(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
) -> Result<Option<ApiResource>, kube::Error> {
    let group_version = format!("{group}/{version}");
    let list = match client.list_api_group_resources(&group_version).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
        Err(error) => return Err(error),
    };
    Ok(list
        .resources
        .iter()
        .find(|resource| resource.kind == kind && !resource.name.contains('/'))
        .map(|resource| ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: group_version.clone(),
            kind: kind.to_owned(),
            plural: resource.name.clone(),
        }))
}
