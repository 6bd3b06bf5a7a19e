//! The supervisor's own logs, replaceable on SIGHUP: every logger the
//! supervisor hands out writes through one switch, so a reload that brings
//! new log settings (level, format, destinations) applies them to every
//! line the supervisor writes from then on, and the old files are closed.

use std::io;
use std::sync::{Arc, RwLock};

use slog::{Drain, Logger, Never, OwnedKVList, Record};

use crate::SupervisorLogs;

/// A drain writing to whatever logger the switch holds now.
struct SwitchDrain(Arc<RwLock<Logger>>);

impl Drain for SwitchDrain {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        // A poisoned lock: a panic while swapping; the logger is whole.
        let current = self.0.read().unwrap_or_else(|e| e.into_inner());
        Drain::log(&*current, record, values)
    }

    fn is_enabled(&self, level: slog::Level) -> bool {
        let current = self.0.read().unwrap_or_else(|e| e.into_inner());
        current.is_enabled(level)
    }
}

/// The supervisor's logs and the switch its loggers write through.
pub(crate) struct SwitchLogs {
    current: Box<dyn SupervisorLogs>,
    logger: Arc<RwLock<Logger>>,
}

impl SwitchLogs {
    pub(crate) fn new(logs: Box<dyn SupervisorLogs>) -> SwitchLogs {
        let logger = Arc::new(RwLock::new(logs.logger()));
        SwitchLogs {
            current: logs,
            logger,
        }
    }

    /// A logger that writes to the current logs, also after a [`switch`](Self::switch).
    pub(crate) fn logger(&self) -> Logger {
        Logger::root(SwitchDrain(Arc::clone(&self.logger)), slog::o!())
    }

    /// From now on, write to `new`; the old logs are flushed and dropped
    /// (their files closed once nothing else holds them).
    pub(crate) fn switch(&mut self, new: Box<dyn SupervisorLogs>) {
        self.current.flush();
        let logger = new.logger();
        *self.logger.write().unwrap_or_else(|e| e.into_inner()) = logger;
        self.current = new;
    }

    pub(crate) fn reopen(&self) -> io::Result<()> {
        self.current.reopen()
    }

    pub(crate) fn flush(&self) {
        self.current.flush()
    }

    /// In a forked worker: give up the supervisor's log files.
    pub(crate) fn close_in_child(&self) {
        self.current.close_in_child()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocorn_log::{Destination, Format, Level, LogConfig, Logs, MemoryLog};

    fn logs(level: Level, into: &MemoryLog) -> Box<dyn SupervisorLogs> {
        Box::new(
            Logs::new(&LogConfig {
                format: Format::Plain,
                level,
                error_log: Destination::Memory(into.clone()),
                ..LogConfig::default()
            })
            .unwrap(),
        )
    }

    #[test]
    fn loggers_follow_the_switch() {
        let (a, b) = (MemoryLog::new(), MemoryLog::new());
        let mut switch = SwitchLogs::new(logs(Level::Info, &a));
        let log = switch.logger().new(slog::o!("k" => 1));
        slog::info!(log, "one");
        switch.switch(logs(Level::Warning, &b));
        slog::info!(log, "two: below the new level");
        slog::warn!(log, "three");
        assert_eq!(a.lines().len(), 1);
        assert!(a.lines()[0].ends_with("one k=1"), "{:?}", a.lines());
        assert_eq!(b.lines().len(), 1, "{:?}", b.lines());
        assert!(b.lines()[0].ends_with("three k=1"), "{:?}", b.lines());
    }
}
