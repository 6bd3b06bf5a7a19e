//! Without the `metrics` feature: asking for metrics is an error.

use std::io;
use std::path::Path;

use slog::Logger;

use crate::config::MetricsConfig;
use crate::error::SupervisorError;
use crate::listen::Listener;

/// Never constructed in this build.
pub(crate) enum Metrics {}

impl Metrics {
    pub(crate) fn new(
        _cfg: &MetricsConfig,
        _keep_files: bool,
        _inherited: Option<std::os::fd::RawFd>,
        _prefix: &str,
        _log: &Logger,
    ) -> Result<Metrics, SupervisorError> {
        Err(SupervisorError::NotBuilt("metrics are"))
    }

    pub(crate) fn listener_fd(&self) -> std::os::fd::RawFd {
        match *self {}
    }

    pub(crate) fn dir(&self) -> &Path {
        match *self {}
    }

    pub(crate) fn register(&mut self, _reg: &mio::Registry, _first: usize) -> io::Result<()> {
        match *self {}
    }

    pub(crate) fn owns(&self, _t: mio::Token) -> bool {
        match *self {}
    }

    pub(crate) fn handle(&mut self, _reg: &mio::Registry, _ev: &mio::event::Event) {
        match *self {}
    }

    pub(crate) fn tick(&mut self, _reg: &mio::Registry) -> std::time::Duration {
        match *self {}
    }

    pub(crate) fn set_listeners(&self, _listeners: &[Listener]) {
        match *self {}
    }

    pub(crate) fn set_workers(&self, _alive: usize, _target: usize) {
        match *self {}
    }

    pub(crate) fn worker_exited(&self, _pid: u32, _restart: Option<&'static str>) {
        match *self {}
    }

    pub(crate) fn in_child(&self, _keep: &[std::os::fd::RawFd]) {
        match *self {}
    }

    pub(crate) fn finish(self) {
        match self {}
    }
}
