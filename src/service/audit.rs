//! Building and recording audit events: every rule that records one goes through here.

use super::{AppState, ClientMeta};
use crate::domain::{AuditKind, User};
use crate::storage::AuditEvent;

/// An event about `user` (if any) caused by the client `meta` describes.
pub fn event(
    state: &AppState,
    kind: AuditKind,
    user: Option<&User>,
    meta: &ClientMeta,
    outcome: &'static str,
) -> AuditEvent {
    AuditEvent {
        user_id: user.map(|u| u.id),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        ..AuditEvent::new(state.now(), kind, outcome)
    }
}

impl AppState {
    /// Records a security event. A failed audit write is logged, not returned: the
    /// action it describes has already happened.
    pub async fn audit(&self, event: AuditEvent) {
        let kind = event.kind.as_str();
        if let Err(e) = self.db(move |s| s.record_audit(event)).await {
            tracing::error!(event = kind, error = %e, "could not record audit event");
        }
    }
}
