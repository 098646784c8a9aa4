//! How a server is set up: where it listens, its folders, its limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Default address: loopback only, ComfyUI's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8188";
/// Default limit on a request body (`POST /prompt`, `/queue`, ...).
pub const DEFAULT_MAX_BODY: usize = 8 << 20;
/// Default limit on one uploaded file.
pub const DEFAULT_MAX_UPLOAD: usize = 64 << 20;

/// The settings of a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Required on every request when set: `Authorization: Bearer T` or `?token=T`.
    pub token: Option<String>,
    /// Where uploads go and `LoadImage` / `image.load` read from.
    pub input_dir: PathBuf,
    /// Where `SaveImage` / `image.save` write.
    pub output_dir: PathBuf,
    /// Where `PreviewImage` writes (ComfyUI's `temp` type).
    pub temp_dir: PathBuf,
    /// Folder of the rhai scripts served graphs may use (`script.NAME`).
    pub scripts_dir: PathBuf,
    /// Models folder in ComfyUI's layout, if any (model files may be read there).
    pub models_dir: Option<PathBuf>,
    /// The server's own files: the queue, the history, the folder graphs run in.
    pub state_dir: PathBuf,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body: usize,
    /// Largest uploaded file accepted, in bytes (413 beyond).
    pub max_upload: usize,
    /// Runs executed at once (their heavy nodes still share the device lanes).
    pub concurrent_runs: usize,
}

impl ServerConfig {
    /// A configuration with the default limits: `state_dir` under `cache_dir`
    /// (`serve/`), temp and scripts folders inside it.
    pub fn new(listen: SocketAddr, cache_dir: &Path, input_dir: PathBuf, output_dir: PathBuf) -> Self {
        let state_dir = cache_dir.join("serve");
        ServerConfig {
            listen,
            token: None,
            input_dir,
            output_dir,
            temp_dir: state_dir.join("temp"),
            scripts_dir: state_dir.join("scripts"),
            models_dir: None,
            state_dir,
            max_body: DEFAULT_MAX_BODY,
            max_upload: DEFAULT_MAX_UPLOAD,
            concurrent_runs: 2,
        }
    }

    /// Refuses settings that would expose the server: an address other than
    /// loopback without a token, an empty token.
    pub fn check(&self) -> Result<()> {
        if let Some(t) = &self.token {
            if t.trim().is_empty() {
                bail!("--token is empty");
            }
        }
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            bail!(
                "listening on {} makes the server reachable from other machines: set --token T \
                 (clients send `Authorization: Bearer T` or `?token=T`), or listen on 127.0.0.1",
                self.listen
            );
        }
        if self.concurrent_runs == 0 {
            bail!("at least one run must be able to execute");
        }
        Ok(())
    }

    /// Creates the folders and makes their paths absolute and canonical, so
    /// that confinement checks compare like with like.
    pub fn prepare_folders(&mut self) -> Result<()> {
        for dir in
            [&mut self.input_dir, &mut self.output_dir, &mut self.temp_dir, &mut self.scripts_dir, &mut self.state_dir]
        {
            std::fs::create_dir_all(&*dir).with_context(|| format!("cannot create the folder {}", dir.display()))?;
            *dir = dir.canonicalize().with_context(|| format!("cannot resolve the folder {}", dir.display()))?;
        }
        if let Some(m) = &mut self.models_dir {
            if let Ok(c) = m.canonicalize() {
                *m = c;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_addresses_need_a_token() {
        let dir = Path::new("/tmp");
        let mut c = ServerConfig::new("0.0.0.0:8188".parse().unwrap(), dir, dir.into(), dir.into());
        assert!(c.check().unwrap_err().to_string().contains("--token"));
        c.token = Some("  ".into());
        assert!(c.check().is_err());
        c.token = Some("s3cret".into());
        assert!(c.check().is_ok());
        let local = ServerConfig::new(DEFAULT_LISTEN.parse().unwrap(), dir, dir.into(), dir.into());
        assert!(local.check().is_ok());
        let v6 = ServerConfig::new("[::1]:0".parse().unwrap(), dir, dir.into(), dir.into());
        assert!(v6.check().is_ok());
    }
}
