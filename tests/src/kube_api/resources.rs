//! The resource types the stand-in serves: the built-in ones a cluster always has, and the
//! Flux CRDs a test installs at runtime.

/// One resource type, as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    /// Served versions, the storage (preferred) version first.
    pub versions: Vec<&'static str>,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Whether `status` is a subresource (CRDs here): writes to the main resource ignore it.
    pub status_subresource: bool,
    /// Whether the type is a CRD: `metadata.generation` is tracked and
    /// `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/<plural>.<group>` exists.
    pub custom: bool,
}

impl ResourceType {
    fn built_in(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        kind: &'static str,
        namespaced: bool,
    ) -> Self {
        Self {
            group,
            versions: vec![version],
            plural,
            singular: "",
            kind,
            namespaced,
            status_subresource: false,
            custom: false,
        }
        .with_singular()
    }

    fn crd(
        group: &'static str,
        versions: &[&'static str],
        plural: &'static str,
        kind: &'static str,
    ) -> Self {
        Self {
            group,
            versions: versions.to_vec(),
            plural,
            singular: "",
            kind,
            namespaced: true,
            status_subresource: true,
            custom: true,
        }
        .with_singular()
    }

    fn with_singular(mut self) -> Self {
        self.singular = singular_of(self.kind);
        self
    }

    /// `v1` for the core group, `<group>/<version>` otherwise.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The storage version's `apiVersion`.
    pub fn storage_api_version(&self) -> String {
        self.api_version(self.versions[0])
    }

    /// `<plural>.<group>`, the CRD's name (or just `<plural>` for the core group).
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.contains(&version)
    }
}

/// Lower-case kind names, as Kubernetes derives `singularName`.
fn singular_of(kind: &'static str) -> &'static str {
    match kind {
        "Namespace" => "namespace",
        "Secret" => "secret",
        "Service" => "service",
        "ConfigMap" => "configmap",
        "Event" => "event",
        "Lease" => "lease",
        "GitRepository" => "gitrepository",
        "OCIRepository" => "ocirepository",
        "Receiver" => "receiver",
        "Kustomization" => "kustomization",
        _ => "",
    }
}

/// The types every cluster serves.
pub fn built_in_types() -> Vec<ResourceType> {
    vec![
        ResourceType::built_in("", "v1", "namespaces", "Namespace", false),
        ResourceType::built_in("", "v1", "secrets", "Secret", true),
        ResourceType::built_in("", "v1", "services", "Service", true),
        ResourceType::built_in("", "v1", "configmaps", "ConfigMap", true),
        ResourceType::built_in("", "v1", "events", "Event", true),
        ResourceType::built_in("events.k8s.io", "v1", "events", "Event", true),
        ResourceType::built_in("coordination.k8s.io", "v1", "leases", "Lease", true),
    ]
}

pub const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
pub const NOTIFICATION_GROUP: &str = "notification.toolkit.fluxcd.io";
pub const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";

/// Which Flux CRDs to install, and which versions they serve.
#[derive(Debug, Clone, Copy)]
pub struct FluxCrds {
    /// Served versions of `gitrepositories` (storage version first); empty: not installed.
    pub git_repository_versions: &'static [&'static str],
    /// Served versions of `ocirepositories`; empty: not installed.
    pub oci_repository_versions: &'static [&'static str],
    /// `notification.toolkit.fluxcd.io/v1` `receivers`.
    pub receivers: bool,
    /// `kustomize.toolkit.fluxcd.io/v1` `kustomizations`.
    pub kustomizations: bool,
}

impl FluxCrds {
    /// A current Flux (2.6+): sources serve `v1` and `v1beta2`.
    pub const CURRENT: Self = Self {
        git_repository_versions: &["v1", "v1beta2"],
        oci_repository_versions: &["v1", "v1beta2"],
        receivers: true,
        kustomizations: true,
    };

    /// An old Flux whose `gitrepositories` and `ocirepositories` serve only `v1beta2`.
    pub const OLD_BETA_SOURCES: Self = Self {
        git_repository_versions: &["v1beta2"],
        oci_repository_versions: &["v1beta2"],
        receivers: true,
        kustomizations: true,
    };

    pub(crate) fn types(&self) -> Vec<ResourceType> {
        let mut types = Vec::new();
        if !self.git_repository_versions.is_empty() {
            types.push(ResourceType::crd(
                SOURCE_GROUP,
                self.git_repository_versions,
                "gitrepositories",
                "GitRepository",
            ));
        }
        if !self.oci_repository_versions.is_empty() {
            types.push(ResourceType::crd(
                SOURCE_GROUP,
                self.oci_repository_versions,
                "ocirepositories",
                "OCIRepository",
            ));
        }
        if self.receivers {
            types.push(ResourceType::crd(
                NOTIFICATION_GROUP,
                &["v1"],
                "receivers",
                "Receiver",
            ));
        }
        if self.kustomizations {
            types.push(ResourceType::crd(
                KUSTOMIZE_GROUP,
                &["v1"],
                "kustomizations",
                "Kustomization",
            ));
        }
        types
    }
}

/// Splits an `apiVersion` into group and version (`v1` → `("", "v1")`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}
