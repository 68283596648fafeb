#![no_main]
//! Fuzz target: see `durabus_log::fuzzing::check_config`.
durabus_fuzz::target!(durabus_log::fuzzing::check_config);
