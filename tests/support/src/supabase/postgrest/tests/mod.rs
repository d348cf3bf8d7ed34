//! The PostgREST double's own tests, black-box over HTTP, one file per concern.

mod errors;
mod faults;
mod keys;
mod reads;
mod rpc;
mod writes;
