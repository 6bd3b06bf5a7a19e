//! The access log hook: one record per answered request, written on the
//! thread that produced the response: a pool thread (one write per line),
//! or the event loop for `App::nonblocking` requests (lines held and written
//! together at most 10 ms after the first, see `Server::run`).

pub(crate) use ferrocorn_log::AccessLog as AccessSink;
pub(crate) use ferrocorn_log::AccessRecord as Record;
