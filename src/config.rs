//! `chatforge.toml`: settings shared by the serving commands, with
//! environment overrides for deployments that configure by environment.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::runtime::{Provider, RuntimeConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {name}: {reason}")]
    Env { name: &'static str, reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub runtime: RuntimeConfig,
}

impl Config {
    /// Reads `path` (or the defaults when `None`), then applies
    /// `CHATFORGE_PROVIDERS` (e.g. `cuda,cpu`), `CHATFORGE_STRICT` (`1`/`0`)
    /// and `CHATFORGE_INTRA_THREADS`.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let mut cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::File {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| Error::File {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?
            }
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        if let Some(v) = get("CHATFORGE_PROVIDERS") {
            self.runtime.providers = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    <Provider as clap::ValueEnum>::from_str(s, true).map_err(|_| Error::Env {
                        name: "CHATFORGE_PROVIDERS",
                        reason: format!("unknown provider {s:?} (use tensorrt, cuda, cpu)"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("CHATFORGE_STRICT") {
            self.runtime.strict = match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                other => {
                    return Err(Error::Env {
                        name: "CHATFORGE_STRICT",
                        reason: format!("{other:?} is not 1/0/true/false"),
                    });
                }
            };
        }
        if let Some(v) = get("CHATFORGE_INTRA_THREADS") {
            self.runtime.intra_threads = v.parse().map_err(|_| Error::Env {
                name: "CHATFORGE_INTRA_THREADS",
                reason: format!("{v:?} is not a number"),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_toml_and_env_overrides() {
        let cfg: Config =
            toml::from_str("[runtime]\nproviders = [\"tensorrt\", \"cpu\"]\nstrict = true\n")
                .unwrap();
        assert_eq!(
            cfg.runtime.providers,
            vec![Provider::Tensorrt, Provider::Cpu]
        );
        assert!(cfg.runtime.strict);
        assert!(toml::from_str::<Config>("[runtime]\nprovider = [\"cpu\"]\n").is_err());
        let mut cfg = Config::default();
        cfg.apply_env(|k| match k {
            "CHATFORGE_PROVIDERS" => Some("CUDA, cpu".into()),
            "CHATFORGE_STRICT" => Some("1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.runtime.providers, vec![Provider::Cuda, Provider::Cpu]);
        assert!(cfg.runtime.strict);
        let err = cfg
            .apply_env(|k| (k == "CHATFORGE_PROVIDERS").then(|| "gpu".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("unknown provider \"gpu\""));
    }
}
