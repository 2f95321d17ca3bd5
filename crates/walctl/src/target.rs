//! Which log a command works on: the backend flags.
//!
//! `--dir` selects the file backend; `--endpoints` (with `--name`, and
//! optionally `--prefix` and the TLS / auth flags) selects etcd. The etcd
//! password is read from `WALCTL_ETCD_PASSWORD` only, and no credential is
//! ever printed (`EtcdOptions`' `Debug` redacts them). The TLS files come
//! from `--cacert`/`--cert`/`--key` or `WALCTL_ETCD_CACERT`/`_CERT`/`_KEY`;
//! `--help` never shows environment values.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use wal_etcd::{etcd_client, EtcdOptions, EtcdTls};

/// Environment variable holding the etcd password for `--user`.
pub const PASSWORD_ENV: &str = "WALCTL_ETCD_PASSWORD";

/// Target flags, global to every subcommand.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A log directory (wal-fs backend).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "endpoints")]
    pub dir: Option<PathBuf>,

    /// etcd endpoints, comma separated (wal-etcd backend).
    #[arg(
        long,
        global = true,
        value_name = "URLS",
        value_delimiter = ',',
        env = "WALCTL_ETCD_ENDPOINTS",
        // An endpoint may carry `user:password@`: never echo it in --help.
        hide_env_values = true
    )]
    pub endpoints: Vec<String>,

    /// etcd key prefix the logs live under, exactly as the application's
    /// `EtcdOptions::prefix` (keys are `{PREFIX}{NAME}/...`, so it usually
    /// ends in `/`).
    #[arg(long, global = true, value_name = "PREFIX", default_value = "/wal/")]
    pub prefix: String,

    /// Name of the log under the prefix.
    #[arg(long, global = true, value_name = "NAME")]
    pub name: Option<String>,

    /// CA certificate(s) (PEM) that sign etcd's server certificates; turns
    /// on TLS (endpoints without a scheme become https://).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "WALCTL_ETCD_CACERT",
        hide_env_values = true
    )]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM), for clusters run with --client-cert-auth.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "key",
        env = "WALCTL_ETCD_CERT",
        hide_env_values = true
    )]
    pub cert: Option<PathBuf>,

    /// The client certificate's private key (PEM). Never printed.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "cert",
        env = "WALCTL_ETCD_KEY",
        hide_env_values = true
    )]
    pub key: Option<PathBuf>,

    /// etcd user name; the password is read from WALCTL_ETCD_PASSWORD, never
    /// from the command line (it would show in `ps`).
    #[arg(long, global = true, value_name = "USER")]
    pub user: Option<String>,
}

/// A resolved target.
#[derive(Debug)]
pub enum Target {
    /// A local directory.
    Dir(PathBuf),
    /// A log on etcd (boxed: the options are large).
    Etcd(Box<EtcdOptions>),
}

impl TargetArgs {
    /// The target the flags name, or an error saying what is missing.
    pub fn resolve(&self) -> Result<Target> {
        if let Some(dir) = &self.dir {
            return Ok(Target::Dir(dir.clone()));
        }
        if !self.endpoints.is_empty() {
            let Some(name) = &self.name else {
                bail!("an etcd log needs --name NAME (the log's name under --prefix)");
            };
            return Ok(Target::Etcd(Box::new(self.etcd_options(name)?)));
        }
        bail!("no log given: pass --dir DIR (or --endpoints URLS --name NAME for etcd)")
    }

    /// etcd options for the log `name` from the endpoint, prefix, TLS and
    /// auth flags (also used by `bench etcd`, which picks its own name).
    pub fn etcd_options(&self, name: &str) -> Result<EtcdOptions> {
        let endpoints = self.etcd_endpoints()?;
        let mut o = EtcdOptions::new(endpoints, name).prefix(self.prefix.clone());
        if let Some((user, password)) = self.credentials()? {
            o = o.user(user, password);
        }
        if let Some(tls) = self.tls()? {
            o = o.tls(tls);
        }
        Ok(o)
    }

    /// The endpoints, `http://` (`https://` with TLS flags) added where no
    /// scheme is given.
    pub fn etcd_endpoints(&self) -> Result<Vec<String>> {
        let scheme = if self.tls_wanted() { "https" } else { "http" };
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            bail!("no etcd endpoints: pass --endpoints URL[,URL...]");
        }
        Ok(endpoints)
    }

    /// `--user` and its password from the environment.
    fn credentials(&self) -> Result<Option<(String, String)>> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let password = std::env::var(PASSWORD_ENV).with_context(|| {
            format!("--user {user} needs the password in the {PASSWORD_ENV} environment variable")
        })?;
        Ok(Some((user.clone(), password)))
    }

    /// Whether any endpoint is `https://` or a TLS flag is given.
    fn tls_wanted(&self) -> bool {
        self.cacert.is_some()
            || self.cert.is_some()
            || self
                .endpoints
                .iter()
                .any(|e| e.trim().starts_with("https://"))
    }

    /// TLS settings, if any endpoint is `https://` or a TLS flag is given.
    fn tls(&self) -> Result<Option<EtcdTls>> {
        if !self.tls_wanted() {
            return Ok(None);
        }
        let Some(ca) = &self.cacert else {
            bail!("TLS to etcd needs --cacert FILE: the CA certificate that signed the servers' certificates");
        };
        let pem =
            std::fs::read(ca).with_context(|| format!("reading --cacert {}", ca.display()))?;
        let mut tls = EtcdTls::new().ca_pem(pem);
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let c = std::fs::read(cert)
                .with_context(|| format!("reading --cert {}", cert.display()))?;
            let k =
                std::fs::read(key).with_context(|| format!("reading --key {}", key.display()))?;
            tls = tls.identity_pem(c, k);
        }
        Ok(Some(tls))
    }

    /// Plain etcd-client connect options with the same TLS and auth, for
    /// clients that are not a log (the raw-put peer of `bench etcd`).
    pub fn etcd_connect_options(&self) -> Result<etcd_client::ConnectOptions> {
        let mut o = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(3));
        if let Some((user, password)) = self.credentials()? {
            o = o.with_user(user, password).with_auto_token_refresh(true);
        }
        if let Some(tls) = self.tls()? {
            o = o.with_tls(tls.tls_options());
        }
        Ok(o)
    }

    /// The log directory, for the file backend. It must hold a log
    /// ([`wal_fs::holds_log`]: a segment file or the lock file): a mistyped
    /// `--dir` is an error here, not an empty report.
    pub fn dir(&self) -> Result<PathBuf> {
        match self.resolve()? {
            Target::Dir(d) => {
                if !d.is_dir() {
                    if d.exists() {
                        bail!("no log at {}: not a directory", d.display());
                    }
                    bail!(
                        "no log at {}: not a directory (it does not exist)",
                        d.display()
                    );
                }
                let holds =
                    wal_fs::holds_log(&d).with_context(|| format!("listing {}", d.display()))?;
                if !holds {
                    bail!(
                        "no log at {}: the directory holds no segment files (*.wal) and no {}",
                        d.display(),
                        wal_fs::LOCK_FILE_NAME
                    );
                }
                Ok(d)
            }
            Target::Etcd(_) => bail!("this command works on a log directory only (--dir DIR)"),
        }
    }
}
