#![no_main]
//! Fuzz target: see `durabus::fuzzing::check_url`.
durabus_fuzz::target!(durabus::fuzzing::check_url);
