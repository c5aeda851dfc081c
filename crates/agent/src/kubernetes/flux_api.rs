//! Which Flux APIs the cluster serves, found through API discovery.
//!
//! The agent needs `GitRepository` (`source.toolkit.fluxcd.io`, `v1`, or `v1beta2` on an
//! older Flux) and `Receiver` (`notification.toolkit.fluxcd.io/v1`). A cluster without
//! them is reported, loudly and in `/readyz`, and checked again every
//! [`RECHECK_INTERVAL`], so discovery starts when Flux is installed, without a restart.
//!
//! `OCIRepository` (`v1`, else `v1beta2`) is optional: every Flux 2 installs it, but a
//! cluster without it can still have its `GitRepository` sources served, so its absence
//! does not hold the rest back. It is logged as an error, named in `/readyz`
//! (`flux_apis_optional_missing`, without making the agent unready) and asked for again
//! by the controller's periodic pass, which then starts watching it.
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
/// `OCIRepository` versions, preferred first (`v1` from Flux 2.6).
const OCI_REPOSITORY_VERSIONS: [&str; 2] = ["v1", "v1beta2"];
/// What `/readyz` and the log call a missing `OCIRepository` API.
pub const OCI_REPOSITORY_MISSING: &str = "source.toolkit.fluxcd.io OCIRepository (v1 or v1beta2): OCIRepository sources are not followed";
const RECEIVER_VERSION: &str = "v1";

/// The Flux APIs the agent works with, as served by this cluster.
#[derive(Debug, Clone)]
pub struct FluxApis {
    pub git_repository: ApiResource,
    pub receiver: ApiResource,
    /// `None` while the cluster does not serve it (see the module documentation).
    pub oci_repository: Option<ApiResource>,
}

/// Looks the Flux APIs up. `Ok(Err(missing))` names what the cluster does not serve; an
/// `Err` is a failure to ask (network, credentials).
pub async fn discover(client: &Client) -> Result<Result<FluxApis, Vec<String>>, kube::Error> {
    let mut missing = Vec::new();
    let git_repository = find_first(
        client,
        SOURCE_GROUP,
        &GIT_REPOSITORY_VERSIONS,
        "GitRepository",
    )
    .await?;
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
            oci_repository: discover_oci_repository(client).await?,
        }),
        _ => Err(missing),
    })
}

/// `OCIRepository`, in the first version the cluster serves, if any.
pub async fn discover_oci_repository(client: &Client) -> Result<Option<ApiResource>, kube::Error> {
    find_first(
        client,
        SOURCE_GROUP,
        &OCI_REPOSITORY_VERSIONS,
        "OCIRepository",
    )
    .await
}

/// The workloads whose sync the agent watches (`Kustomization` `v1`, `HelmRelease` `v2`
/// or `v2beta2`), each if the cluster serves it.
pub async fn discover_workloads(client: &Client) -> Result<Vec<ApiResource>, kube::Error> {
    let kustomization = find(client, "kustomize.toolkit.fluxcd.io", "v1", "Kustomization").await?;
    let helm_release = find_first(
        client,
        "helm.toolkit.fluxcd.io",
        &["v2", "v2beta2"],
        "HelmRelease",
    )
    .await?;
    Ok(kustomization.into_iter().chain(helm_release).collect())
}

/// The resource of `kind` in the first of `versions` the cluster serves.
async fn find_first(
    client: &Client,
    group: &str,
    versions: &[&str],
    kind: &str,
) -> Result<Option<ApiResource>, kube::Error> {
    for version in versions {
        if let Some(resource) = find(client, group, version, kind).await? {
            return Ok(Some(resource));
        }
    }
    Ok(None)
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
