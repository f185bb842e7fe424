//! The `[clock]` config section: which clock sources the clock tier queries.

use exporter_core::config::{Flag, Settings};
use serde::{Deserialize, Serialize};

use crate::chrony;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClockSettings {
    /// chronyd command socket: HOST:PORT or unix:///PATH; empty disables the chrony probe.
    pub chrony_address: String,
    /// NTP servers (HOST:PORT) queried directly.
    #[serde(default)]
    pub ntp_server: Vec<String>,
    /// PTP hardware clocks (/dev/ptpN) compared with the system clock.
    #[serde(default)]
    pub ptp_device: Vec<String>,
}

impl Default for ClockSettings {
    fn default() -> Self {
        ClockSettings {
            chrony_address: chrony::DEFAULT_ADDRESS.into(),
            ntp_server: Vec::new(),
            ptp_device: Vec::new(),
        }
    }
}

impl Settings for ClockSettings {
    const SECTION: &'static str = "clock";
    const FLAGS: &'static [Flag] = &[
        Flag::one(
            "clock.chrony-address",
            "clock.chrony_address",
            "chronyd's command socket, HOST:PORT or unix:///PATH (empty disables the chrony probe)",
        ),
        Flag::list(
            "clock.ntp-server",
            "clock.ntp_server",
            "NTP server to query directly, HOST:PORT (repeatable)",
        ),
        Flag::list(
            "clock.ptp-device",
            "clock.ptp_device",
            "PTP hardware clock to compare with the system clock, /dev/ptpN (repeatable)",
        ),
    ];

    fn validate(&self) -> Result<(), String> {
        for server in &self.ntp_server {
            if !server.contains(':') {
                return Err(format!("ntp_server: {server:?} must be HOST:PORT"));
            }
        }
        Ok(())
    }
}
