#![no_main]
//! Fuzz target: see `durabus_log::fuzzing::check_checkpoint`.
durabus_fuzz::target!(durabus_log::fuzzing::check_checkpoint);
