#![no_main]
//! Fuzz target: see `durabus_log::fuzzing::check_record`.
durabus_fuzz::target!(durabus_log::fuzzing::check_record);
