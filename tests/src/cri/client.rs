//! The blocking CRI client: tonic on containerd's unix socket, `k8s-cri`'s `runtime.v1` types.

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, ListPodSandboxRequest, PodSandbox, PodSandboxConfig,
    PodSandboxStatus, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StatusRequest, StopPodSandboxRequest, VersionRequest, VersionResponse,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Errors of the CRI client.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("connecting to the CRI at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI {call}: {status}")]
    Rpc {
        call: &'static str,
        // Boxed: a Status is large and would make every Result large.
        status: Box<tonic::Status>,
    },
    #[error("CRI {call}: the answer has no {what}")]
    Missing {
        call: &'static str,
        what: &'static str,
    },
    #[error("CRI PodSandboxStatus: verbose info is not the JSON expected: {0}")]
    Info(String),
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Rpc {
        call,
        status: Box::new(status),
    }
}

/// A blocking CRI client on a unix socket.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// What PodSandboxStatus says about a sandbox, with the parts of its verbose info tests use.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub status: PodSandboxStatus,
    /// The sandbox process (containerd's verbose info `pid`), 0 when not running.
    pub pid: u32,
    /// The network namespace path containerd created (and passed as CNI_NETNS), as seen in
    /// containerd's mount namespace.
    pub netns: Option<String>,
    /// The whole verbose info (`info["info"]`, parsed).
    pub info: Value,
}

impl SandboxStatus {
    pub fn ready(&self) -> bool {
        self.status.state == k8s_cri::v1::PodSandboxState::SandboxReady as i32
    }

    /// Every pod address the CRI reports (primary first).
    pub fn ips(&self) -> Vec<String> {
        let Some(net) = &self.status.network else {
            return Vec::new();
        };
        let mut ips = vec![net.ip.clone()];
        ips.extend(net.additional_ips.iter().map(|p| p.ip.clone()));
        ips.retain(|ip| !ip.is_empty());
        ips
    }
}

impl CriClient {
    /// Connects to the CRI on `socket`; `timeout` bounds every call.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<CriClient, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CriError::Runtime)?;
        let path = socket.to_path_buf();
        // The URI is required by the API but never used: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout);
        let dial = path.clone();
        let channel = rt
            .block_on(
                endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let dial = dial.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(dial).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                })),
            )
            .map_err(|source| CriError::Connect { path, source })?;
        Ok(CriClient {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    pub fn version(&mut self) -> Result<VersionResponse, CriError> {
        let req = VersionRequest {
            version: "v1".into(),
        };
        self.rt
            .block_on(self.runtime.version(req))
            .map(|r| r.into_inner())
            .map_err(rpc("Version"))
    }

    /// The runtime's conditions as (type, status, reason: message).
    pub fn conditions(&mut self) -> Result<Vec<(String, bool, String)>, CriError> {
        let resp = self
            .rt
            .block_on(self.runtime.status(StatusRequest { verbose: false }))
            .map_err(rpc("Status"))?
            .into_inner();
        let status = resp.status.ok_or(CriError::Missing {
            call: "Status",
            what: "status",
        })?;
        Ok(status
            .conditions
            .into_iter()
            .map(|c| (c.r#type, c.status, format!("{}: {}", c.reason, c.message)))
            .collect())
    }

    /// Whether the CRI reports `NetworkReady` (it has loaded a CNI configuration).
    pub fn network_ready(&mut self) -> Result<bool, CriError> {
        Ok(self
            .conditions()?
            .iter()
            .any(|(t, ok, _)| t == "NetworkReady" && *ok))
    }

    /// Whether the CRI's image store knows `image` (what RunPodSandbox looks up before pulling).
    pub fn image_present(&mut self, image: &str) -> Result<bool, CriError> {
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        let resp = self
            .rt
            .block_on(self.images.image_status(req))
            .map_err(rpc("ImageStatus"))?
            .into_inner();
        Ok(resp.image.is_some())
    }

    /// RunPodSandbox; returns the sandbox ID (also the CNI container ID).
    pub fn run_pod_sandbox(&mut self, config: PodSandboxConfig) -> Result<String, CriError> {
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        self.rt
            .block_on(self.runtime.run_pod_sandbox(req))
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(rpc("RunPodSandbox"))
    }

    /// PodSandboxStatus with verbose info (containerd adds the pid, the runtime spec with the
    /// netns path, the CNI result...).
    pub fn pod_sandbox_status(&mut self, id: &str) -> Result<SandboxStatus, CriError> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        let resp = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(req))
            .map_err(rpc("PodSandboxStatus"))?
            .into_inner();
        let status = resp.status.ok_or(CriError::Missing {
            call: "PodSandboxStatus",
            what: "status",
        })?;
        let info: Value = match resp.info.get("info") {
            Some(text) => serde_json::from_str(text).map_err(|e| CriError::Info(e.to_string()))?,
            None => Value::Null,
        };
        let pid = info
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let netns = info
            .pointer("/runtimeSpec/linux/namespaces")
            .and_then(Value::as_array)
            .and_then(|nss| {
                nss.iter()
                    .find(|ns| ns.get("type").and_then(Value::as_str) == Some("network"))
            })
            .and_then(|ns| ns.get("path"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(SandboxStatus {
            status,
            pid,
            netns,
            info,
        })
    }

    pub fn list_pod_sandboxes(&mut self) -> Result<Vec<PodSandbox>, CriError> {
        self.rt
            .block_on(
                self.runtime
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )
            .map(|r| r.into_inner().items)
            .map_err(rpc("ListPodSandbox"))
    }

    /// StopPodSandbox: kills the sandbox's processes, calls CNI DEL, removes the netns.
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), CriError> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(req))
            .map(|_| ())
            .map_err(rpc("StopPodSandbox"))
    }

    /// RemovePodSandbox: forgets a stopped sandbox (containerd calls CNI DEL again if needed).
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), CriError> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.remove_pod_sandbox(req))
            .map(|_| ())
            .map_err(rpc("RemovePodSandbox"))
    }
}
