//! The hint line the CLI prints under an error: which `durabus` command
//! fixes it. Library errors name library calls; the commands are the CLI's
//! to name.

use durabus::BackendUrl;

/// The hint for `err`, if a `durabus` command fixes it: creating the
/// missing stream, consumer or bucket, or checking a corrupt store. `url`
/// is the backend the command ran on. Printed as `hint: <hint>` under the
/// error, or as the `hint` of the JSON error object.
pub(crate) fn hint(err: &anyhow::Error, url: &str) -> Option<String> {
    let error = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<durabus::Error>())?;
    match error {
        durabus::Error::StreamNotFound { name } => Some(format!(
            "create it with `durabus stream add {name} --subjects ...`"
        )),
        durabus::Error::ConsumerNotFound { stream, name } => Some(format!(
            "create it with `durabus consumer add {stream} {name}`"
        )),
        durabus::Error::BucketNotFound { bucket } => {
            Some(format!("create it with `durabus kv add {bucket}`"))
        }
        durabus::Error::Corrupt { .. }
        | durabus::Error::StreamUnavailable { .. }
        | durabus::Error::ConsumerUnavailable { .. } => {
            let dir = match durabus::parse_url(url) {
                Ok(BackendUrl::File { path, .. }) => path.display().to_string(),
                _ => "<dir>".to_owned(),
            };
            Some(format!(
                "check the data directory with `durabus verify {dir}`"
            ))
        }
        durabus::Error::Unreachable { reason, .. } => {
            let lower = reason.to_ascii_lowercase();
            if lower.contains("refused") {
                Some(
                    "nothing listens at that address: start the server there, or name another \
                     with --url or -s"
                        .to_owned(),
                )
            } else if lower.contains("timeout") || lower.contains("timed out") {
                Some(
                    "if the server is slow to answer, allow it longer with --connect-timeout 10s"
                        .to_owned(),
                )
            } else {
                None
            }
        }
        durabus::Error::AuthFailed { .. } => Some(
            "pass the credentials with --user and --password, --user TOKEN or --creds FILE"
                .to_owned(),
        ),
        durabus::Error::Tls { .. } => Some(
            "name the CA with --tlsca FILE, a client certificate with --tlscert FILE --tlskey FILE"
                .to_owned(),
        ),
        durabus::Error::ReadOnly { .. } => Some(
            "this store can only be read here (a read-only file system, a backup or a snapshot); \
             copy it to a writable directory to change it"
                .to_owned(),
        ),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    fn hint_of(error: durabus::Error, url: &str) -> Option<String> {
        // As the verbs return them: with context around the library error.
        let err = Err::<(), _>(error)
            .context("cannot do the thing")
            .unwrap_err();
        hint(&err, url)
    }

    #[test]
    fn missing_streams_consumers_and_buckets_name_the_command_that_creates_them() {
        let url = "file:/tmp/x";
        assert_eq!(
            hint_of(
                durabus::Error::StreamNotFound {
                    name: "ORDERS".into()
                },
                url
            )
            .unwrap(),
            "create it with `durabus stream add ORDERS --subjects ...`"
        );
        assert_eq!(
            hint_of(
                durabus::Error::ConsumerNotFound {
                    stream: "ORDERS".into(),
                    name: "billing".into()
                },
                url
            )
            .unwrap(),
            "create it with `durabus consumer add ORDERS billing`"
        );
        assert_eq!(
            hint_of(
                durabus::Error::BucketNotFound {
                    bucket: "cfg".into()
                },
                url
            )
            .unwrap(),
            "create it with `durabus kv add cfg`"
        );
    }

    #[test]
    fn corruption_names_verify_on_the_data_directory() {
        let corrupt =
            || durabus::Error::corrupt("/srv/data/streams/ORDERS/00000001.log", 42, "crc mismatch");
        assert_eq!(
            hint_of(corrupt(), "file:/srv/data?durability=always").unwrap(),
            "check the data directory with `durabus verify /srv/data`"
        );
        assert_eq!(
            hint_of(corrupt(), "memory:").unwrap(),
            "check the data directory with `durabus verify <dir>`"
        );
    }

    #[test]
    fn other_errors_have_no_hint() {
        assert_eq!(hint_of(durabus::Error::Closed, "memory:"), None);
        assert_eq!(hint(&anyhow::anyhow!("plain"), "memory:"), None);
    }
}
