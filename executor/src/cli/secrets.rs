//! `pbs-executor secrets seal NAME`: an endpoint password sealed on this host as a systemd
//! credential (`systemd-creds encrypt`, with the host key, the TPM2 chip, or both), so it is
//! stored encrypted at rest and reaches the executor only through its unit's
//! `LoadCredentialEncrypted=`, in `$CREDENTIALS_DIRECTORY`. The password is read from standard
//! input (never argv); the sealed file and a drop-in for the unit are written, and the line for
//! the endpoint's configuration is printed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Which key seals the credential (`systemd-creds encrypt --with-key=`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SealKey {
    /// The TPM2 chip when there is one, else the host key.
    Auto,
    /// `/var/lib/systemd/credential.secret`, readable by root only.
    Host,
    /// The TPM2 chip: the file opens on this machine only.
    Tpm2,
    /// Both: needs the host key and this machine's TPM2 chip.
    HostAndTpm2,
}

impl SealKey {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Host => "host",
            Self::Tpm2 => "tpm2",
            Self::HostAndTpm2 => "host+tpm2",
        }
    }
}

/// Seals standard input as credential `name` into `dir/<name>.cred` and writes the unit drop-in
/// that loads it into `unit_dir`.
pub fn seal(name: &str, key: SealKey, dir: &Path, unit_dir: &Path) -> Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || name.starts_with('.')
    {
        bail!("{name:?} is not a credential name: use letters, digits, '-', '_' and '.'");
    }
    let mut secret = Vec::new();
    std::io::stdin()
        .read_to_end(&mut secret)
        .context("reading the password from standard input")?;
    for end in [b"\n".as_slice(), b"\r"] {
        if secret.ends_with(end) {
            secret.truncate(secret.len() - 1);
        }
    }
    if secret.is_empty() {
        bail!(
            "standard input is empty: pipe the password in, e.g. `systemd-ask-password | pbs-executor secrets seal {name}`"
        );
    }
    create_private_dir(dir)?;
    let sealed = dir.join(format!("{name}.cred"));
    let mut child = Command::new("systemd-creds")
        .arg("encrypt")
        .arg(format!("--name={name}"))
        .arg(format!("--with-key={}", key.as_arg()))
        .arg("-")
        .arg(&sealed)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running systemd-creds (from the systemd package, version 250 or later)")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&secret)
        .context("handing the password to systemd-creds")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "systemd-creds encrypt failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sealed, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", sealed.display()))?;
    }
    std::fs::create_dir_all(unit_dir)
        .with_context(|| format!("creating {}", unit_dir.display()))?;
    let dropin = unit_dir.join(format!("credential-{name}.conf"));
    std::fs::write(
        &dropin,
        format!(
            "# Written by `pbs-executor secrets seal {name}`: the endpoint password, decrypted by systemd\n\
             # into $CREDENTIALS_DIRECTORY/{name} when the executor starts.\n\
             [Service]\nLoadCredentialEncrypted={name}:{}\n",
            sealed.display()
        ),
    )
    .with_context(|| format!("writing {}", dropin.display()))?;
    println!(
        "sealed credential {name} into {} (key: {})",
        sealed.display(),
        key.as_arg()
    );
    println!("unit drop-in: {}", dropin.display());
    println!("in the endpoint's section of the executor's configuration:");
    println!("  password_credential = \"{name}\"");
    println!("then: systemctl daemon-reload && systemctl restart pbs-executor");
    Ok(())
}

/// `dir`, made if missing, readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Where sealed credentials are kept by default.
pub fn default_dir() -> PathBuf {
    PathBuf::from("/etc/pbs-executor/credentials")
}

/// Where the unit's drop-ins go by default.
pub fn default_unit_dir() -> PathBuf {
    PathBuf::from("/etc/systemd/system/pbs-executor.service.d")
}
