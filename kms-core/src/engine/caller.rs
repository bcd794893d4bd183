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

/// The principal and what policy conditions may look at (`acs:SourceIp`, `acs:SecureTransport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub source_ip: Option<std::net::IpAddr>,
    pub secure_transport: bool,
}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Caller { principal, source_ip: None, secure_transport: false }
    }

    pub fn owner() -> Self {
        Self::new(Principal::Owner)
    }

    pub fn service(name: &str) -> Self {
        Self::new(Principal::Service(name.to_ascii_lowercase()))
    }

    pub fn user(name: &str) -> Self {
        Self::new(Principal::User(name.to_string()))
    }

    /// `owner`, `user:<name>`, `service:<name>`: for logs and messages.
    pub fn label(&self) -> String {
        match &self.principal {
            Principal::Owner => "owner".into(),
            Principal::User(n) => format!("user:{n}"),
            Principal::Service(s) => format!("service:{s}"),
        }
    }

    /// The service this caller acts as, if any.
    pub fn service_name(&self) -> Option<&str> {
        match &self.principal {
            Principal::Service(s) => Some(s),
            _ => None,
        }
    }
}
