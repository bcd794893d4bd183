//! The wire protocol: parameters in, JSON out.

pub mod params;
pub mod response;
