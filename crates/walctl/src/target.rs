//! Which log a command works on: the backend flags.
//!
//! `--dir` selects the file backend. The etcd flags are parsed now so that
//! scripts and help text are stable; an etcd target fails with a clear
//! "etcd support not built" until `wal-etcd` is wired in behind the `etcd`
//! feature.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

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
        env = "WALCTL_ETCD_ENDPOINTS"
    )]
    pub endpoints: Vec<String>,

    /// etcd key prefix the logs live under.
    #[arg(long, global = true, value_name = "PREFIX", default_value = "/wal")]
    pub prefix: String,

    /// Name of the log under the prefix.
    #[arg(long, global = true, value_name = "NAME")]
    pub name: Option<String>,

    /// CA certificate (PEM) to verify etcd's TLS certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM) for TLS client authentication.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Client key (PEM) for TLS client authentication.
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
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
}

impl TargetArgs {
    /// The target the flags name, or an error saying what is missing.
    pub fn resolve(&self) -> Result<Target> {
        if let Some(dir) = &self.dir {
            return Ok(Target::Dir(dir.clone()));
        }
        if !self.endpoints.is_empty() {
            bail!("etcd support not built: this walctl was built without the `etcd` feature (use --dir for a local log)");
        }
        bail!("no log given: pass --dir DIR (or --endpoints URLS --name NAME for etcd)")
    }

    /// The directory, for commands that exist only for the file backend.
    pub fn dir(&self) -> Result<PathBuf> {
        match self.resolve()? {
            Target::Dir(d) => {
                if !d.is_dir() {
                    bail!("{} is not a directory", d.display());
                }
                Ok(d)
            }
        }
    }
}
