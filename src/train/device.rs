//! Where training runs: `cpu` (the fused kernels) or `cuda[:N]` (composed
//! candle ops on the GPU; needs a build with `--features cuda`).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TrainDevice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl TrainDevice {
    /// Opens the device; a CUDA device in a build without CUDA, or with no
    /// GPU, is a clear error.
    pub fn open(self) -> Result<Device> {
        match self {
            TrainDevice::Cpu => Ok(Device::Cpu),
            TrainDevice::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                Error::Config(format!(
                    "cannot train on {self}: {e} (CUDA training needs chatforge built with `--features cuda` on a machine with the CUDA toolkit and a GPU)"
                ))
            }),
        }
    }
}

impl fmt::Display for TrainDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainDevice::Cpu => f.write_str("cpu"),
            TrainDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for TrainDevice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "cpu" => Ok(TrainDevice::Cpu),
            "cuda" => Ok(TrainDevice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(TrainDevice::Cuda)
                .ok_or_else(|| format!("unknown device {other:?} (cpu, cuda or cuda:N)")),
        }
    }
}

impl TryFrom<String> for TrainDevice {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<TrainDevice> for String {
    fn from(d: TrainDevice) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_and_open() {
        assert_eq!("cpu".parse(), Ok(TrainDevice::Cpu));
        assert_eq!("cuda".parse(), Ok(TrainDevice::Cuda(0)));
        assert_eq!("cuda:2".parse(), Ok(TrainDevice::Cuda(2)));
        assert!(
            "gpu"
                .parse::<TrainDevice>()
                .unwrap_err()
                .contains("cpu, cuda or cuda:N")
        );
        assert_eq!(TrainDevice::Cuda(1).to_string(), "cuda:1");
        assert!(TrainDevice::Cpu.open().unwrap().is_cpu());
        if !candle_core::utils::cuda_is_available() {
            let err = TrainDevice::Cuda(0).open().unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
