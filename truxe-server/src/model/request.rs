//! Where a request comes from: kept for the audit trail and session records, never used to
//! decide anything. The HTTP layer builds it once per request (`http::request_meta`); truxectl
//! passes [`RequestMeta::default`].

/// User agents are kept to this many characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub fn new(ip: Option<String>, request_id: Option<String>, user_agent: Option<&str>) -> Self {
        Self { ip, request_id, user_agent: user_agent.map(truncate_user_agent) }
    }
}

/// Printable characters only, at most [`MAX_USER_AGENT_CHARS`].
pub fn truncate_user_agent(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_truncated_and_cleaned() {
        let long = "x".repeat(1000);
        assert_eq!(truncate_user_agent(&long).len(), MAX_USER_AGENT_CHARS);
        assert_eq!(truncate_user_agent("a\u{0}b\nc"), "abc");
    }
}
