//! Real file servers for the endpoint tests: Samba's `smbd` and OpenSSH's `sshd`, each started
//! per test on its own 127.0.0.1 port with its own configuration, keys and folders (installed by
//! `infra/install-tools.sh`). Both need root, as the tests do.
//!
//! Both authenticate one local account, `pbs-test`, created on first use with a random password
//! kept in a root-only file, so parallel tests share it without racing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The local account the SMB and SFTP servers authenticate.
pub const TEST_USER: &str = "pbs-test";

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Random hex, for passwords and names.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<()> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The test account's password, creating the account on first use.
pub fn test_user_password() -> Result<String> {
    let lock = std::fs::File::create("/tmp/pbs-test-user.lock")?;
    lock.lock()?;
    let secret = Path::new("/tmp/pbs-test-user.secret");
    let exists = Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if exists && let Ok(pw) = std::fs::read_to_string(secret) {
        return Ok(pw.trim().to_owned());
    }
    if !exists {
        run(
            Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/bin/sh",
                TEST_USER,
            ]),
            None,
        )?;
    }
    let password = format!("Pw-{}", random_hex(12)?);
    run(
        &mut Command::new("chpasswd"),
        Some(&format!("{TEST_USER}:{password}\n")),
    )?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(secret)?;
    f.write_all(password.as_bytes())?;
    Ok(password)
}

use std::os::unix::fs::OpenOptionsExt;

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "server exited with {status} before listening: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("server did not listen on 127.0.0.1:{port} within 15 s")
}

/// A server process in its own process group, stopped with everything it forked.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn spawn_server(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Ok(cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?)
}

/// A Samba server with one share, `files`, on 127.0.0.1.
pub struct SmbServer {
    pub port: u16,
    pub share: &'static str,
    pub user: &'static str,
    pub password: String,
    /// The share's folder on this machine.
    pub root: PathBuf,
    _server: Server,
    _dir: tempfile::TempDir,
}

impl SmbServer {
    pub fn start() -> Result<Self> {
        let password = test_user_password()?;
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let root = d.join("share");
        for sub in [
            "share", "private", "lock", "state", "cache", "pid", "ncalrpc",
        ] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let port = free_port()?;
        let conf = d.join("smb.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 server role = standalone server\n\
                 interfaces = 127.0.0.1\n\
                 bind interfaces only = yes\n\
                 smb ports = {port}\n\
                 disable netbios = yes\n\
                 server min protocol = SMB2\n\
                 map to guest = never\n\
                 load printers = no\n\
                 printing = bsd\n\
                 printcap name = /dev/null\n\
                 disable spoolss = yes\n\
                 private dir = {d}/private\n\
                 lock directory = {d}/lock\n\
                 state directory = {d}/state\n\
                 cache directory = {d}/cache\n\
                 pid directory = {d}/pid\n\
                 ncalrpc dir = {d}/ncalrpc\n\
                 log file = {d}/smbd.log\n\
                 passdb backend = tdbsam:{d}/private/passdb.tdb\n\
                 [files]\n\
                 path = {root}\n\
                 read only = no\n\
                 valid users = {TEST_USER}\n\
                 force user = root\n",
                d = d.display(),
                root = root.display(),
            ),
        )?;
        run(
            Command::new("pdbedit")
                .arg(format!("--configfile={}", conf.display()))
                .args(["-a", "-t", "-u", TEST_USER]),
            Some(&format!("{password}\n{password}\n")),
        )?;
        let log = d.join("smbd.out");
        let mut child = spawn_server(
            Command::new("smbd")
                .arg("--foreground")
                .arg("--no-process-group")
                .arg(format!("--configfile={}", conf.display()))
                .arg("--debuglevel=1"),
            &log,
        )?;
        wait_for_port(port, &mut child, &log)?;
        Ok(Self {
            port,
            share: "files",
            user: TEST_USER,
            password,
            root,
            _server: Server(child),
            _dir: dir,
        })
    }
}

/// An OpenSSH server on 127.0.0.1 that accepts the test account by password or key.
pub struct SftpServer {
    pub port: u16,
    pub user: &'static str,
    pub password: String,
    /// A folder the test account owns: the endpoint's root.
    pub root: PathBuf,
    /// known_hosts pinning this server's host key.
    pub known_hosts: PathBuf,
    /// A private key the server accepts.
    pub key_file: PathBuf,
    _server: Server,
    _dir: tempfile::TempDir,
}

impl SftpServer {
    pub fn start() -> Result<Self> {
        let password = test_user_password()?;
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        // The test account must be able to reach its root below this folder.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        let root = d.join("root");
        std::fs::create_dir(&root)?;
        run(Command::new("chown").arg(TEST_USER).arg(&root), None)?;
        let host_key = d.join("host_key");
        let key_file = d.join("client_key");
        for key in [&host_key, &key_file] {
            run(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(key),
                None,
            )?;
        }
        let authorized = d.join("authorized_keys");
        std::fs::copy(d.join("client_key.pub"), &authorized)?;
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644))?;
        let port = free_port()?;
        let host_pub = std::fs::read_to_string(d.join("host_key.pub"))?;
        let mut fields = host_pub.split_whitespace();
        let known_hosts = d.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!(
                "[127.0.0.1]:{port} {} {}\n",
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default()
            ),
        )?;
        let conf = d.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "ListenAddress 127.0.0.1\n\
                 Port {port}\n\
                 HostKey {host_key}\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {authorized}\n\
                 StrictModes no\n\
                 PasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM yes\n\
                 PermitRootLogin no\n\
                 AllowUsers {TEST_USER}\n\
                 Subsystem sftp internal-sftp\n",
                host_key = host_key.display(),
                d = d.display(),
                authorized = authorized.display(),
            ),
        )?;
        // Privilege separation needs this folder; a fresh machine may not have it.
        std::fs::create_dir_all("/run/sshd")?;
        let log = d.join("sshd.log");
        let mut child = spawn_server(
            Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&conf),
            &log,
        )?;
        wait_for_port(port, &mut child, &log)?;
        Ok(Self {
            port,
            user: TEST_USER,
            password,
            root,
            known_hosts,
            key_file,
            _server: Server(child),
            _dir: dir,
        })
    }
}
