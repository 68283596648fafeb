#![no_main]
//! Fuzz target: see `durabus_server::fuzzing::check_protocol`.
durabus_fuzz::target!(durabus_server::fuzzing::check_protocol);
