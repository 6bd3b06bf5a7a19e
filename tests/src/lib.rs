//! Helpers for ferrocorn's end-to-end tests: run the built binary, wait for
//! its ports, talk to it with real clients.
