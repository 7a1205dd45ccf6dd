//! The `--device auto|cpu|cuda[:N]|rocm[:N]` argument.

use std::fmt;
use std::str::FromStr;

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The first GPU found, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// An NVIDIA GPU by index.
    Cuda(usize),
    /// An AMD GPU by index.
    Rocm(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, idx) = match s.split_once(':') {
            Some((k, i)) => {
                let n = i
                    .parse::<usize>()
                    .map_err(|_| format!("device index '{i}' is not a number"))?;
                (k, Some(n))
            }
            None => (s, None),
        };
        match (kind, idx) {
            ("auto", None) => Ok(Device::Auto),
            ("cpu", None) => Ok(Device::Cpu),
            ("cuda", i) => Ok(Device::Cuda(i.unwrap_or(0))),
            ("rocm" | "hip", i) => Ok(Device::Rocm(i.unwrap_or(0))),
            _ => Err(format!(
                "unknown device '{s}' (expected auto, cpu, cuda[:N] or rocm[:N])"
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Rocm(i) => write!(f, "rocm:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("auto".parse::<Device>(), Ok(Device::Auto));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:1".parse::<Device>(), Ok(Device::Cuda(1)));
        assert_eq!("rocm:2".parse::<Device>(), Ok(Device::Rocm(2)));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
        assert!("cpu:1".parse::<Device>().is_err());
    }
}
