//! Harness for the identity tests (issue 15): moto's server as STS and IAM with request
//! authentication on, the node's credentials those of a moto IAM user (served by fake-metadata
//! with `--aws-credentials`), and botocore as the pod's client.
//!
//! The Python side lives in `tests/identity/` (set-up, one signed STS call, the pod's client) and
//! runs with the identity venv's python: `bash scripts/lib/identity-venv.sh` makes the venv
//! (scripts/test.sh runs it before `cargo test`); [`venv_dir`] says where it is looked for. A
//! missing venv is an error naming that command, never a skipped test.
//!
//! Network layout, added to [`crate::proxy::Cloud`]'s by [`attach_sts_address`]: moto listens on
//! [`STS_ADDR`] (192.0.2.10, TEST-NET-1) in the cloud namespace, port [`STS_PORT`]; the node routes
//! 192.0.2.10/32 via the cloud's 169.254.169.254 on `mgcloud0`; the cloud routes the node's pod
//! subnets back via the node's 169.254.169.1 (and fd00:ec2::1), so pods (default route via their
//! bridge's gateway, forwarded by the node, which the bridge plugin's `isGateway` turns on) reach
//! it too. Nothing leaves the test's namespaces: the node has no other link.
//!
//! Authentication: moto counts every request that goes through a service's `call_action`
//! (`ActionAuthenticatorMixin.request_count`, one class-wide counter, moto/core/authorization.py);
//! while the count is below `INITIAL_NO_AUTH_ACTION_COUNT` a request is not checked and adds one,
//! from then on every request's SigV4 signature is recomputed with the secret of the access key it
//! names (an IAM user's key, or an assumed role's with its session token) and compared:
//! `SignatureDoesNotMatch` on a mismatch, `InvalidClientTokenId` for an unknown key. A TCP connect
//! is not a request, so the readiness probe does not count. [`Moto::start`] sets the count to the
//! exact number of set-up calls (`moto_setup.py`, retries off so none is counted twice).

use crate::cni::Node;
use crate::fake::FakeOptions;
use crate::netns::{Netns, TempDir, IP};
use crate::proxy::Cloud;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Where moto listens in the cloud namespace (TEST-NET-1: never a real host).
pub const STS_ADDR: &str = "192.0.2.10";
pub const STS_PORT: u16 = 5000;
/// Overrides where the venv is looked for.
pub const VENV_ENV: &str = "METAGUARD_IDENTITY_VENV";
/// The command that makes the venv (relative to the repository).
pub const VENV_COMMAND: &str = "bash scripts/lib/identity-venv.sh";
/// The node's IAM user in moto.
pub const NODE_USER: &str = "metaguard-node";
/// The node role with [`MotoOptions::node_session`].
pub const NODE_ROLE: &str = "metaguard-node-role";
/// Its session's name: the instance's ID, as EC2 names it.
pub const NODE_SESSION: &str = crate::fake::INSTANCE_ID;
/// How long moto may take to accept connections (it imports every service: seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    #[error(
        "identity venv not usable: {path} is missing. Make it with `{VENV_COMMAND}` \
         (scripts/test.sh runs it), or point {VENV_ENV} at one made from tests/identity/requirements.txt"
    )]
    NoVenv { path: PathBuf },
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("moto exited before it accepted on {addr} ({status}); log: {log}")]
    Exited {
        addr: SocketAddr,
        status: String,
        log: String,
    },
    #[error("moto did not accept on {addr} within {waited:?}; log: {log}")]
    NotReady {
        addr: SocketAddr,
        waited: Duration,
        log: String,
    },
    #[error("{script} failed ({status}): {stderr}")]
    Script {
        script: String,
        status: String,
        stderr: String,
    },
    #[error("{script} printed no JSON line we understand ({reason}): {stdout}")]
    Output {
        script: String,
        reason: String,
        stdout: String,
    },
    #[error("set-up made {made} calls but moto was started to count {counted}")]
    CountMismatch { made: u32, counted: u32 },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The venv: `$METAGUARD_IDENTITY_VENV`, else `$CARGO_TARGET_DIR/identity-venv`, else
/// `identity-venv` in the target directory the test executable was built in
/// (`target/<profile>/deps/x` → `target/identity-venv`), as scripts/lib/identity-venv.sh does.
pub fn venv_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(VENV_ENV) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("identity-venv");
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop();
    dir.join("identity-venv")
}

/// A program of the venv (`python`, `moto_server`); [`MotoError::NoVenv`] when it is not there.
pub fn venv_bin(name: &str) -> Result<PathBuf, MotoError> {
    let p = venv_dir().join("bin").join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(MotoError::NoVenv { path: p })
    }
}

/// A script of `tests/identity/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("identity")
        .join(name)
}

/// moto's address and port.
pub fn sts_addr() -> SocketAddr {
    SocketAddr::new(STS_ADDR.parse().expect("STS_ADDR"), STS_PORT)
}

/// moto's endpoint URL, as clients are given it.
pub fn sts_endpoint() -> String {
    format!("http://{}", sts_addr())
}

/// Puts [`STS_ADDR`] in the cloud namespace and routes it from the node (and, through the node,
/// from pods on `pod_subnets`, IPv4 or IPv6 CIDRs): see the module docs. `cloud` is
/// [`crate::proxy::Cloud`]'s namespace, linked to `node` by [`crate::proxy::Cloud::attach`].
///
/// The cloud gets routes back to those subnets only, not a default route: with one, moto's start
/// (Python's `HTTPServer.server_bind` calls `socket.getfqdn`) sent a DNS query to the machine's
/// resolver towards the node, where it died, and start-up waited 10 s for the timeout; without
/// it the query fails at once and nothing leaves the cloud namespace.
pub fn attach_sts_address(node: &Netns, cloud: &Netns, pod_subnets: &[&str]) {
    cloud.ok(
        IP,
        &["addr", "add", &format!("{STS_ADDR}/32"), "dev", "eth0"],
    );
    for net in pod_subnets {
        let via = if net.contains(':') {
            "fd00:ec2::1"
        } else {
            "169.254.169.1"
        };
        cloud.ok(IP, &["route", "add", net, "via", via, "dev", "eth0"]);
    }
    node.ok(
        IP,
        &[
            "route",
            "add",
            &format!("{STS_ADDR}/32"),
            "via",
            "169.254.169.254",
            "dev",
            "mgcloud0",
        ],
    );
}

/// Credentials as the metadata service serves them (`security-credentials/<role>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `None` for an IAM user's long-term key: served as `"Token": ""`, and SDKs then send no
    /// `X-Amz-Security-Token` (moto refuses a user key that comes with one: `InvalidToken`).
    pub token: Option<String>,
    /// RFC 3339, UTC.
    pub expiration: String,
}

impl NodeCredentials {
    /// Writes the file fake-metadata's `--aws-credentials` reads (at every request: writing it
    /// again rotates the credentials). Written to a temporary name and renamed, so a request never
    /// reads half a file.
    pub fn write(&self, path: &Path) -> Result<(), MotoError> {
        let v = serde_json::json!({
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.token.clone().unwrap_or_default(),
            "Expiration": self.expiration,
        });
        let tmp = path.with_extension("tmp");
        let io = |source| MotoError::File {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, v.to_string()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// What set-up made (printed by `moto_setup.py`).
#[derive(Debug, Clone)]
pub struct MotoSetup {
    pub account_id: String,
    /// `arn:aws:iam::<account>:user/metaguard-node`
    pub user_arn: String,
    /// The node user's key, expiring [`MotoOptions::node_ttl`] from set-up.
    pub node: NodeCredentials,
    /// With [`MotoOptions::node_session`]: the user's session of the node role.
    pub node_session: Option<NodeSession>,
    /// Role name → ARN, for each role asked for.
    pub roles: BTreeMap<String, String>,
}

/// A session of the node role [`NODE_ROLE`], as EC2 hands an instance (with a session token).
#[derive(Debug, Clone)]
pub struct NodeSession {
    /// `arn:aws:sts::<account>:assumed-role/metaguard-node-role/<instance id>`
    pub arn: String,
    pub credentials: NodeCredentials,
}

impl MotoSetup {
    /// The node's credentials as fake-metadata serves them: the node role's session when there is
    /// one, else the user's key.
    pub fn served(&self) -> &NodeCredentials {
        self.node_session
            .as_ref()
            .map_or(&self.node, |s| &s.credentials)
    }

    /// What `get_caller_identity` answers for [`MotoSetup::served`].
    pub fn served_arn(&self) -> &str {
        self.node_session
            .as_ref()
            .map_or(self.user_arn.as_str(), |s| s.arn.as_str())
    }
}

#[derive(Debug, Deserialize)]
struct SessionLine {
    arn: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

#[derive(Debug, Deserialize)]
struct SetupLine {
    account_id: String,
    user_arn: String,
    access_key_id: String,
    secret_access_key: String,
    roles: BTreeMap<String, String>,
    node_session: Option<SessionLine>,
    calls: u32,
}

/// What [`Moto::start`] sets up.
#[derive(Debug, Clone)]
pub struct MotoOptions {
    /// Roles to create (each trusting the node user, and the node role's session if any).
    pub roles: Vec<String>,
    /// The node credentials' `Expiration` (what fake-metadata serves), from set-up. moto itself
    /// never expires credentials.
    pub node_ttl: Duration,
    /// The node's credentials are a session of [`NODE_ROLE`] (with a token), as on EC2, instead
    /// of the user's long-term key.
    pub node_session: bool,
    /// Authentication on after set-up; `false` is the control (moto's default: never).
    pub auth: bool,
}

impl Default for MotoOptions {
    fn default() -> Self {
        MotoOptions {
            roles: vec!["pod-role-a".into(), "pod-role-b".into()],
            node_ttl: Duration::from_secs(6 * 3600),
            node_session: false,
            auth: true,
        }
    }
}

/// A running moto server, killed and reaped on drop.
pub struct Moto {
    child: Child,
    dir: TempDir,
    netns: String,
    addr: SocketAddr,
    pub setup: MotoSetup,
    /// From spawning moto to its port accepting.
    pub started_in: Duration,
    /// The set-up script's run.
    pub setup_took: Duration,
}

fn read_log(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    // The end is what explains a failure.
    let start = s.len().saturating_sub(4000);
    s.get(start..).unwrap_or(&s).to_string()
}

/// The last non-empty line of a script's stdout, parsed as `T`.
fn parse_last_line<T: serde::de::DeserializeOwned>(
    script: &str,
    out: &Output,
) -> Result<T, MotoError> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let Some(line) = line else {
        return Err(MotoError::Script {
            script: script.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    };
    serde_json::from_str(line).map_err(|e| MotoError::Output {
        script: script.into(),
        reason: e.to_string(),
        stdout: stdout.clone().into_owned(),
    })
}

/// Runs `tests/identity/<name> args...` with the venv's python inside `ns`, with no AWS_*
/// variables from the caller.
fn run_script(ns: &Netns, name: &str, args: &[String]) -> Result<Output, MotoError> {
    let python = venv_bin("python")?;
    let mut cmd = ns.command(&python);
    cmd.arg(script(name)).args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().map_err(|source| MotoError::Spawn {
        what: format!("{} {name}", python.display()),
        source,
    })
}

impl Moto {
    /// Starts moto's server inside `ns` on `addr` and runs the set-up `opts` describes:
    /// [`NODE_USER`] with a key and a policy allowing `sts:AssumeRole` and `sts:TagSession`, one
    /// role per name in `opts.roles` trusting that user, and authentication on afterwards unless
    /// `opts.auth` is false (the control that shows a test of signatures can fail).
    pub fn start(ns: &Netns, addr: SocketAddr, opts: &MotoOptions) -> Result<Moto, MotoError> {
        let server = venv_bin("moto_server")?;
        venv_bin("python")?;
        let dir = TempDir::new("moto");
        let log_path = dir.path().join("moto.log");
        let log = File::create(&log_path).map_err(|source| MotoError::File {
            path: log_path.clone(),
            source,
        })?;
        let log2 = log.try_clone().map_err(|source| MotoError::File {
            path: log_path.clone(),
            source,
        })?;
        // CreateUser, CreateAccessKey, PutUserPolicy, [CreateRole, PutRolePolicy, AssumeRole for
        // the node session], one CreateRole per role.
        let count = 3 + 3 * u32::from(opts.node_session) + opts.roles.len() as u32;
        let mut cmd = ns.command(&server);
        cmd.args(["-H", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        if opts.auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", count.to_string());
        }
        let t0 = Instant::now();
        let child = cmd.spawn().map_err(|source| MotoError::Spawn {
            what: server.display().to_string(),
            source,
        })?;
        let mut moto = Moto {
            child,
            dir,
            netns: ns.name().to_string(),
            addr,
            setup: MotoSetup {
                account_id: String::new(),
                user_arn: String::new(),
                node: NodeCredentials {
                    access_key_id: String::new(),
                    secret_access_key: String::new(),
                    token: None,
                    expiration: String::new(),
                },
                node_session: None,
                roles: BTreeMap::new(),
            },
            started_in: Duration::ZERO,
            setup_took: Duration::ZERO,
        };
        // From here on Drop stops moto, whatever fails.
        moto.wait_accepting(ns, t0)?;
        moto.started_in = t0.elapsed();
        let t1 = Instant::now();
        moto.setup = moto.run_setup(ns, opts, count)?;
        moto.setup_took = t1.elapsed();
        Ok(moto)
    }

    /// Polls a TCP connect from inside `ns` until moto accepts, it exits, or the deadline passes.
    fn wait_accepting(&mut self, ns: &Netns, t0: Instant) -> Result<(), MotoError> {
        let deadline = t0 + START_TIMEOUT;
        loop {
            let addr = self.addr;
            if ns
                .enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(MotoError::Exited {
                    addr,
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            if Instant::now() >= deadline {
                return Err(MotoError::NotReady {
                    addr,
                    waited: t0.elapsed(),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn run_setup(
        &self,
        ns: &Netns,
        opts: &MotoOptions,
        count: u32,
    ) -> Result<MotoSetup, MotoError> {
        let mut args = vec![
            "--endpoint".to_string(),
            self.endpoint(),
            "--user".into(),
            NODE_USER.into(),
        ];
        if opts.node_session {
            args.extend([
                "--node-role".into(),
                NODE_ROLE.into(),
                "--node-session".into(),
                NODE_SESSION.into(),
            ]);
        }
        for r in &opts.roles {
            args.push("--role".into());
            args.push(r.clone());
        }
        let out = run_script(ns, "moto_setup.py", &args)?;
        if !out.status.success() {
            return Err(MotoError::Script {
                script: "moto_setup.py".into(),
                status: out.status.to_string(),
                stderr: format!(
                    "{}\nmoto log: {}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log()
                ),
            });
        }
        let line: SetupLine = parse_last_line("moto_setup.py", &out)?;
        if line.calls != count {
            return Err(MotoError::CountMismatch {
                made: line.calls,
                counted: count,
            });
        }
        let expiration = rfc3339(SystemTime::now() + opts.node_ttl);
        Ok(MotoSetup {
            account_id: line.account_id,
            user_arn: line.user_arn,
            node: NodeCredentials {
                access_key_id: line.access_key_id,
                secret_access_key: line.secret_access_key,
                token: None,
                expiration: expiration.clone(),
            },
            node_session: line.node_session.map(|s| NodeSession {
                arn: s.arn,
                credentials: NodeCredentials {
                    access_key_id: s.access_key_id,
                    secret_access_key: s.secret_access_key,
                    token: Some(s.session_token),
                    expiration,
                },
            }),
            roles: line.roles,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops moto now (SIGKILL, reaped): STS is gone, connections are refused. Its state (users,
    /// keys, roles) is in memory only, so there is no restarting it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes moto (SIGSTOP): connections are still accepted by the kernel but nothing is
    /// answered, as a slow or hung STS looks to a client. [`Moto::resume`] undoes it.
    pub fn pause(&self) -> Result<(), MotoError> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a paused moto answer again (SIGCONT); what waited is answered then.
    pub fn resume(&self) -> Result<(), MotoError> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<(), MotoError> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).map_err(|e| MotoError::Spawn {
            what: format!("{sig} to moto ({pid})"),
            source: std::io::Error::from(e),
        })
    }

    /// The namespace moto runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// moto's log (werkzeug prints one line per request), its last few kilobytes.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("moto.log"))
    }

    /// ARN of one of the roles set up.
    pub fn role_arn(&self, name: &str) -> Option<&str> {
        self.setup.roles.get(name).map(String::as_str)
    }

    /// One signed STS call from inside `ns` with the given credentials (`sts_call.py`).
    pub fn sts_call(
        &self,
        ns: &Netns,
        creds: &NodeCredentials,
        op: &StsOp,
    ) -> Result<StsAnswer, MotoError> {
        let mut args = vec![
            "--endpoint".to_string(),
            self.endpoint(),
            "--access-key".into(),
            creds.access_key_id.clone(),
            "--secret".into(),
            creds.secret_access_key.clone(),
        ];
        if let Some(t) = &creds.token {
            args.push("--token".into());
            args.push(t.clone());
        }
        match op {
            StsOp::CallerIdentity => args.push("caller-identity".into()),
            StsOp::AssumeRole {
                role_arn,
                session_name,
                tags,
                repeat,
            } => {
                args.extend([
                    "assume-role".into(),
                    "--role-arn".into(),
                    role_arn.clone(),
                    "--session-name".into(),
                    session_name.clone(),
                    "--repeat".into(),
                    repeat.max(&1).to_string(),
                ]);
                for (k, v) in tags {
                    args.push("--tag".into());
                    args.push(format!("{k}={v}"));
                }
            }
        }
        let out = run_script(ns, "sts_call.py", &args)?;
        parse_last_line("sts_call.py", &out)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (paused) process too.
        self.stop();
    }
}

/// Options of [`IdentityCloud::attach`].
#[derive(Debug, Clone, Default)]
pub struct IdentityOptions {
    /// moto's roles, the node credentials' `Expiration` and kind (see [`MotoOptions`]).
    pub moto: MotoOptions,
    /// fake-metadata refuses AWS requests without a valid IMDSv2 token (401).
    pub require_imdsv2: bool,
}

/// The whole cloud of the identity tests: [`Cloud`] (fake-metadata on 169.254.169.254 and
/// fd00:ec2::254 serving the moto node user's key as the node role's credentials) plus moto on
/// [`STS_ADDR`], routed from the node and its pods. Dropped in order: moto, then the cloud.
pub struct IdentityCloud {
    pub moto: Moto,
    pub cloud: Cloud,
    creds_file: PathBuf,
    _dir: TempDir,
}

impl IdentityCloud {
    /// Links a cloud namespace to `node`, starts fake-metadata and moto there and runs moto's
    /// set-up; the node credentials fake-metadata serves are then [`MotoSetup::served`].
    pub fn attach(node: &Node, opts: &IdentityOptions) -> Result<IdentityCloud, MotoError> {
        // Checked before anything is made, so a missing venv is the first and only error.
        venv_bin("moto_server")?;
        let dir = TempDir::new("identity");
        let creds_file = dir.path().join("node-credentials.json");
        // fake-metadata checks the file exists at start; the real key is written once moto has
        // made it. Until then a request gets these, which moto does not know (InvalidClientTokenId).
        NodeCredentials {
            access_key_id: "AKIANOTSETUPYET00000".into(),
            secret_access_key: "not-set-up-yet".into(),
            token: None,
            expiration: rfc3339(SystemTime::now() + opts.moto.node_ttl),
        }
        .write(&creds_file)?;
        let cloud = Cloud::attach_with(
            &node.ns,
            FakeOptions {
                aws_credentials: Some(creds_file.clone()),
                require_imdsv2: opts.require_imdsv2,
                ..FakeOptions::default()
            },
        );
        attach_sts_address(&node.ns, &cloud.ns, &[&node.subnet4, &node.subnet6]);
        let moto = Moto::start(&cloud.ns, sts_addr(), &opts.moto)?;
        moto.setup.served().write(&creds_file)?;
        Ok(IdentityCloud {
            moto,
            cloud,
            creds_file,
            _dir: dir,
        })
    }

    /// Serves other node credentials from now on (rotation, expiry, a wrong secret).
    pub fn set_node_credentials(&self, creds: &NodeCredentials) -> Result<(), MotoError> {
        creds.write(&self.creds_file)
    }

    /// The file fake-metadata reads the node credentials from.
    pub fn credentials_file(&self) -> &Path {
        &self.creds_file
    }
}

/// What [`Moto::sts_call`] does.
#[derive(Debug, Clone)]
pub enum StsOp {
    CallerIdentity,
    /// `repeat` calls on one client (the first opens the connection); the answer is the last's.
    AssumeRole {
        role_arn: String,
        session_name: String,
        tags: Vec<(String, String)>,
        repeat: u32,
    },
}

/// `sts_call.py`'s line.
#[derive(Debug, Clone, Deserialize)]
pub struct StsAnswer {
    pub ok: bool,
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    /// The error's code (`SignatureDoesNotMatch`, `InvalidClientTokenId`, `AccessDenied`...).
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
    // AssumeRole's credentials.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default)]
    pub expiration: Option<String>,
    /// One per AssumeRole call, milliseconds.
    #[serde(default)]
    pub latencies_ms: Vec<f64>,
}

/// How the pod's botocore talks to the metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImdsMode {
    /// botocore's default: IMDSv2, falling back to IMDSv1 when the token PUT is refused.
    #[default]
    V2,
    /// `AWS_EC2_METADATA_V1_DISABLED=true`: no fallback.
    V2Only,
    /// Never asks for a token (an old SDK).
    V1Only,
}

/// Options of [`pod_client`].
#[derive(Debug, Clone)]
pub struct PodClientOptions {
    pub sts_endpoint: String,
    pub region: String,
    pub imds: ImdsMode,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`: [fd00:ec2::254].
    pub ipv6: bool,
    /// `AWS_METADATA_SERVICE_TIMEOUT`, whole seconds (botocore parses it with int()).
    pub timeout_secs: u32,
    /// `AWS_METADATA_SERVICE_NUM_ATTEMPTS`.
    pub attempts: u32,
}

impl Default for PodClientOptions {
    fn default() -> Self {
        PodClientOptions {
            sts_endpoint: sts_endpoint(),
            region: "us-east-1".into(),
            imds: ImdsMode::V2,
            ipv6: false,
            timeout_secs: 2,
            attempts: 1,
        }
    }
}

/// An error `pod_client.py` reports.
#[derive(Debug, Clone, Deserialize)]
pub struct PodClientError {
    /// `credentials` or `sts`.
    pub stage: String,
    pub class: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// `pod_client.py`'s line: see the script's docs.
#[derive(Debug, Clone, Deserialize)]
pub struct PodClientResult {
    pub method: Option<String>,
    pub access_key_id: Option<String>,
    pub token_present: bool,
    pub imds_token: bool,
    pub credentials_ms: f64,
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub error: Option<PodClientError>,
    #[serde(default)]
    pub sts_ms: Option<f64>,
}

/// Runs botocore's default credential chain and `sts get_caller_identity` inside `ns` (a pod's
/// namespace, or the cloud's to reach fake-metadata directly); see `tests/identity/pod_client.py`.
pub fn pod_client(ns: &Netns, opts: &PodClientOptions) -> Result<PodClientResult, MotoError> {
    let mut args = vec![
        "--sts-endpoint".to_string(),
        opts.sts_endpoint.clone(),
        "--region".into(),
        opts.region.clone(),
        "--imds".into(),
        match opts.imds {
            ImdsMode::V2 => "v2",
            ImdsMode::V2Only => "v2-only",
            ImdsMode::V1Only => "v1-only",
        }
        .into(),
        "--timeout".into(),
        opts.timeout_secs.to_string(),
        "--attempts".into(),
        opts.attempts.to_string(),
    ];
    if opts.ipv6 {
        args.push("--ipv6".into());
    }
    let out = run_script(ns, "pod_client.py", &args)?;
    parse_last_line("pod_client.py", &out)
}

/// `t` as RFC 3339 UTC to the second (`2026-12-03T06:00:00Z`), as IMDS and STS write times.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(1_796_284_799), "2026-12-03T07:59:59Z");
        assert_eq!(t(4_102_444_800), "2100-01-01T00:00:00Z");
    }
}
