//! Devices and their lanes: each accelerator runs one heavy node at a time;
//! the CPU lane runs as many as it has slots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use candle_core::Device;
use tokio::sync::Semaphore;

use crate::graph::DeviceChoice;

/// A device with the slots heavy nodes must hold to run on it.
#[derive(Clone)]
pub struct Lane {
    /// `cpu` or `cuda:N`.
    pub name: String,
    /// The candle device.
    pub device: Device,
    /// Heavy nodes hold one permit while they run.
    pub slots: Arc<Semaphore>,
}

/// The devices of an engine, created on first use.
pub struct Devices {
    cpu_slots: usize,
    default: DeviceChoice,
    lanes: Mutex<HashMap<DeviceChoice, Lane>>,
}

impl Devices {
    /// Devices where the CPU runs `cpu_slots` heavy nodes at once and
    /// `device: auto` means `default` (itself `auto` = the first CUDA device
    /// if there is one, else the CPU).
    pub fn new(cpu_slots: usize, default: DeviceChoice) -> Self {
        Devices { cpu_slots: cpu_slots.max(1), default, lanes: Mutex::new(HashMap::new()) }
    }

    /// The concrete device `auto` stands for.
    pub fn resolve(&self, choice: DeviceChoice) -> DeviceChoice {
        match (choice, self.default) {
            (DeviceChoice::Auto, DeviceChoice::Auto) => {
                if candle_core::utils::cuda_is_available() {
                    DeviceChoice::Cuda(0)
                } else {
                    DeviceChoice::Cpu
                }
            }
            (DeviceChoice::Auto, default) => default,
            (choice, _) => choice,
        }
    }

    /// The lane of a node's device choice.
    pub fn lane(&self, choice: DeviceChoice) -> Result<Lane> {
        let choice = self.resolve(choice);
        let mut lanes = self.lanes.lock().map_err(|_| anyhow!("device table poisoned"))?;
        if let Some(lane) = lanes.get(&choice) {
            return Ok(lane.clone());
        }
        let (device, slots) = match choice {
            DeviceChoice::Cuda(n) => (
                Device::new_cuda(n).map_err(|e| {
                    anyhow!("cannot use cuda:{n}: {e} (GPU support needs a build with `--features cuda`)")
                })?,
                1,
            ),
            _ => (Device::Cpu, self.cpu_slots),
        };
        let lane = Lane { name: choice.to_string(), device, slots: Arc::new(Semaphore::new(slots)) };
        lanes.insert(choice, lane.clone());
        Ok(lane)
    }
}

/// CPU slots by default: the machine's parallelism, at least 2.
pub fn default_cpu_slots() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}
