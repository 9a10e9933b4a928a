//! The command-line options of the gateway stage (`prime_gatewayd`, `prime_workerd
//! --gateway`); re-exported by [`super::cli`].

use super::command_line::{key_file, seconds};
use std::time::Duration;

/// The gateway stage's options (`prime_gatewayd`, `prime_workerd --gateway`).
#[derive(clap::Args, Clone, Debug)]
pub struct GatewayArgs {
    /// Seconds one backend call may take (connect, send, wait, read) before the client
    /// gets 504. In prime_gatewayd the request timeout is raised to cover it (unless
    /// --request-timeout is given); elsewhere give the front end a --request-timeout
    /// above it.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub gateway_timeout: f64,
    /// Sign each forwarded request with this secret in X-Prime-Signature (HMAC-SHA256).
    /// Prefer --gateway-secret-file: a command line is visible to other users.
    #[arg(long, value_name = "SECRET", conflicts_with = "gateway_secret_file")]
    pub gateway_secret: Option<String>,
    /// Read the signing secret from this file (a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub gateway_secret_file: Option<std::path::PathBuf>,
    /// Sign each forwarded request with Grip-Sig, a JWT (HS256) made with the key in
    /// this file (a trailing newline is ignored), so that GRIP backends (gripcontrol's
    /// validate_sig) know a GRIP proxy is in front. A backend's GRIP instructions are
    /// followed with or without it.
    #[arg(long, value_name = "FILE")]
    pub grip_key_file: Option<std::path::PathBuf>,
}

impl GatewayArgs {
    /// The bound on one backend call, from `--gateway-timeout`.
    pub fn timeout(&self) -> Result<Duration, String> {
        seconds("--gateway-timeout", self.gateway_timeout)
    }

    /// A gateway stage to `target` configured by these options.
    pub fn gateway(&self, target: &str) -> Result<crate::stages::HttpGateway, String> {
        let mut gateway = crate::stages::HttpGateway::new(target)
            .map_err(|e| e.to_string())?
            .timeout(self.timeout()?);
        let secret = match (&self.gateway_secret, &self.gateway_secret_file) {
            (Some(secret), _) => Some(secret.clone().into_bytes()),
            (None, Some(path)) => Some(key_file("--gateway-secret-file", path)?),
            (None, None) => None,
        };
        if let Some(path) = &self.grip_key_file {
            let key = key_file("--grip-key-file", path)?;
            if key.is_empty() {
                return Err(format!(
                    "--grip-key-file {}: the key is empty",
                    path.display()
                ));
            }
            gateway = gateway.grip_key(key);
        }
        if let Some(secret) = secret {
            if secret.is_empty() {
                return Err("the gateway secret is empty".into());
            }
            gateway = gateway.secret(secret);
        }
        Ok(gateway)
    }
}
