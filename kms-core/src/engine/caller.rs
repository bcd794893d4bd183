//! Who is calling. Authentication happens in the transport; the engine receives its result and
//! hands back, in the caller's [`Trail`], every resource it resolved and authorised the caller
//! against – the audit line names exactly those, for allowed and denied calls alike.

use parking_lot::Mutex;

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

/// The ARNs the engine resolved for one request, in the order it checked them, each once.
/// Interior mutability because the engine takes `&Caller` everywhere (a request is one caller).
#[derive(Debug, Default)]
pub struct Trail(Mutex<Vec<String>>);

impl Trail {
    pub(crate) fn push(&self, arn: &str) {
        let mut v = self.0.lock();
        if !v.iter().any(|a| a == arn) {
            v.push(arn.to_string());
        }
    }

    /// Takes the ARNs recorded so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl Clone for Trail {
    fn clone(&self) -> Self {
        Trail(Mutex::new(self.0.lock().clone()))
    }
}

/// The principal and what policy conditions may look at (`acs:SourceIp`, `acs:SecureTransport`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub source_ip: Option<std::net::IpAddr>,
    pub secure_transport: bool,
    /// What the engine resolved and checked for this caller's request (for the audit line).
    pub trail: Trail,
}

impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        self.principal == other.principal
            && self.source_ip == other.source_ip
            && self.secure_transport == other.secure_transport
    }
}

impl Eq for Caller {}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Caller { principal, source_ip: None, secure_transport: false, trail: Trail::default() }
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
