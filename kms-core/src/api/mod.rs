//! Typed requests and responses of the engine. Responses serialise to exactly the JSON the
//! Alibaba KMS 2016-01-20 API returns (PascalCase keys, XML-style list wrappers, integers for
//! paging), so the sidecar renders them and the Rust client parses them with one definition.
//! `RequestId` is added by the transport.

mod action;
mod asymmetric;
mod common;
mod crypto;
mod keys;
mod parameter_docs;
mod parameters;
mod secrets;
mod tags;

pub use action::*;
pub use asymmetric::*;
pub use common::*;
pub use crypto::*;
pub use keys::*;
pub use parameters::{Parameter, ParameterKind};
pub use secrets::*;
pub use tags::*;
