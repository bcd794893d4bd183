//! Who is calling. Authentication happens in the transport; the engine receives its result.

/// The principal an access key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The account owner: may do everything.
    Owner,
    /// A RAM user or role, by name.
    User(String),
    /// A cloud service acting for the account (`oss`, `ecs`, …, lower case). Its first use of
    /// `alias/acs/<service>` creates the service key.
    Service(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
}

impl Caller {
    pub fn owner() -> Self {
        Caller { principal: Principal::Owner }
    }

    pub fn service(name: &str) -> Self {
        Caller { principal: Principal::Service(name.to_ascii_lowercase()) }
    }

    pub fn user(name: &str) -> Self {
        Caller { principal: Principal::User(name.to_string()) }
    }

    /// The service this caller acts as, if any.
    pub fn service_name(&self) -> Option<&str> {
        match &self.principal {
            Principal::Service(s) => Some(s),
            _ => None,
        }
    }
}
