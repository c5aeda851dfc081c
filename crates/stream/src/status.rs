//! The gRPC edge of the fan-out: why a stream was refused or closed, as the status the
//! agent receives. Codes and messages are part of the protocol; agents act on the codes
//! (UNAUTHENTICATED stops them, the others make them reconnect).

use fluxgate_fanout::{CloseReason, LimitError, RegisterError};
use tonic::Status;

/// The status a stream closed by the hub ends with.
pub fn closed(reason: CloseReason) -> Status {
    let message = reason.message();
    match reason {
        CloseReason::Lagged => Status::resource_exhausted(message),
        CloseReason::AgentDeleted | CloseReason::TokenRotated => Status::unauthenticated(message),
        CloseReason::Shutdown => Status::unavailable(message),
    }
}

/// The status a stream the hub would not register is refused with.
pub fn refused(err: &RegisterError) -> Status {
    match err {
        RegisterError::Limit(limit) => over_limit(limit),
        RegisterError::AgentDeleted | RegisterError::TokenRotated => {
            Status::unauthenticated(err.to_string())
        }
        RegisterError::ShuttingDown => closed(CloseReason::Shutdown),
    }
}

/// The status a request over one of the agent's limits is refused with.
pub fn over_limit(err: &LimitError) -> Status {
    Status::resource_exhausted(err.to_string())
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_close_reason_keeps_its_code_and_message() {
        let cases = [
            (
                CloseReason::Lagged,
                Code::ResourceExhausted,
                "the agent did not keep up with its events; reconnect to resume from the cursor",
            ),
            (
                CloseReason::AgentDeleted,
                Code::Unauthenticated,
                "the agent was deleted",
            ),
            (
                CloseReason::TokenRotated,
                Code::Unauthenticated,
                "the agent's token was rotated; use the new token",
            ),
            (
                CloseReason::Shutdown,
                Code::Unavailable,
                "the broker is shutting down; reconnect to another replica",
            ),
        ];
        for (reason, code, message) in cases {
            let status = closed(reason);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    #[test]
    fn refusals_keep_their_codes() {
        let limit = RegisterError::Limit(LimitError::Streams { open: 2, max: 2 });
        assert_eq!(refused(&limit).code(), Code::ResourceExhausted);
        assert_eq!(
            refused(&RegisterError::TokenRotated).message(),
            "the agent's token was rotated; use the new token"
        );
        assert_eq!(
            refused(&RegisterError::AgentDeleted).code(),
            Code::Unauthenticated
        );
    }
}
