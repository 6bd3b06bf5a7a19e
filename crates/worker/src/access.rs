//! The access log hook: one record per answered request, written on the
//! pool thread that produced the response (never on the event loop).

pub(crate) use ferrocorn_log::AccessLog as AccessSink;
pub(crate) use ferrocorn_log::AccessRecord as Record;
