//! Plain words for TLS failures: which side refused, and which setting to look at.
//!
//! A handshake failure reaches the agent as a transport error several causes deep (and,
//! when the broker refuses the agent's certificate under TLS 1.3, only on the first
//! request); this finds the rustls error in the chain and says what it means.

use std::error::Error;

use rustls::{AlertDescription, CertificateError};

/// What went wrong, if `error` (or one of its causes) is a TLS failure.
pub fn explain(error: &(dyn Error + 'static)) -> Option<String> {
    let tls = find_rustls_error(error)?;
    Some(match &tls {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => "the broker's certificate is not signed by a CA \
                this agent trusts (unknown CA): set tls.ca_file to the CA that signed it"
                .to_owned(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the broker's certificate is not valid for the name the agent checked \
                     (name mismatch): use the name in the certificate in the broker URL, or \
                     set tls.server_name ({certificate:?})"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet (check both clocks)".to_owned()
            }
            CertificateError::Revoked => "the broker's certificate was revoked".to_owned(),
            other => format!("the broker's certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the broker requires a client certificate: set tls.cert_file and tls.key_file"
                .to_owned()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) => format!(
            "the broker refused this agent's client certificate ({alert:?}): it must be \
             signed by the CA in the broker's agent_tls_client_ca_file, and valid"
        ),
        other => format!("TLS failed: {other}"),
    })
}

fn find_rustls_error(error: &(dyn Error + 'static)) -> Option<rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        // `io::Error::source` skips the error it wraps; look inside.
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.clone());
        }
        // HTTP/2 keeps only the text of an I/O error, so an alert that ends a request
        // arrives as "received fatal alert: <name>".
        if let Some(alert) = alert_in_text(&error.to_string()) {
            return Some(rustls::Error::AlertReceived(alert));
        }
        current = error.source();
    }
    None
}

/// The alerts a broker sends about a client certificate, by the name rustls prints.
fn alert_in_text(text: &str) -> Option<AlertDescription> {
    let (_, name) = text.split_once("received fatal alert: ")?;
    let name = name.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    [
        AlertDescription::CertificateRequired,
        AlertDescription::UnknownCA,
        AlertDescription::BadCertificate,
        AlertDescription::CertificateUnknown,
        AlertDescription::CertificateExpired,
        AlertDescription::AccessDenied,
    ]
    .into_iter()
    .find(|alert| format!("{alert:?}") == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Transport(#[source] std::io::Error);

    fn wrapped(tls: rustls::Error) -> Transport {
        Transport(std::io::Error::new(std::io::ErrorKind::InvalidData, tls))
    }

    #[test]
    fn causes_are_named_with_the_setting_to_fix() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown CA",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "name mismatch",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "expired",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                "requires a client certificate",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                "refused this agent's client certificate",
            ),
        ];
        for (tls, expected) in cases {
            let explained = explain(&wrapped(tls.clone())).unwrap();
            assert!(explained.contains(expected), "{tls:?}: {explained}");
        }
    }

    #[test]
    fn an_alert_known_only_by_its_text_is_recognised() {
        // What h2 makes of the alert that ends the first request under TLS 1.3.
        let text = Transport(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        ));
        let explained = explain(&text).unwrap();
        assert!(
            explained.contains("requires a client certificate"),
            "{explained}"
        );
    }

    #[test]
    fn other_errors_are_not_tls() {
        let refused = Transport(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(explain(&refused), None);
    }
}
