#![no_main]
//! Fuzz target: see `durabus_log::fuzzing::check_consumer_file`.
durabus_fuzz::target!(durabus_log::fuzzing::check_consumer_file);
