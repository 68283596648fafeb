//! NKey users and decentralized JWT auth ("operator mode") for test
//! servers: keys generated with the `nkeys` crate, JWTs encoded and signed
//! as the NATS jwt v2 library (and so `nsc`) does, and `.creds` files in
//! the format clients read.
//!
//! A JWT is `base64url(header).base64url(claims).base64url(signature)`,
//! base64url without padding; the header is
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, the signature is the issuer's
//! ed25519 signature of `header.claims` (the two encoded parts joined by a
//! dot). The claims hold `jti`, `iat`, `iss` (the issuer's public key),
//! `sub` (the subject's public key), `name`, and `nats` with the `type`
//! (`operator`, `account`, `user`), `version: 2` and the type's fields.
//!
//! Facts of nats-server 2.9.10 (jwt v2) this relies on, tried out:
//! - `nats.version: 2` is required: without it a JWT is read as version 0
//!   and the server does not start ("error parsing operator JWT: library
//!   supports version 2 or less - received 0", "invalid account JWT");
//! - `jti` and `iat` are not checked (a JWT without them works); they are
//!   written anyway, `jti` as jwt v2 computes it: base32 (no padding) of
//!   the SHA-512/256 (not SHA-256, that was v1) of the claims without
//!   `jti`, as Go marshals them (`iat`, `iss`, `name`, `sub`);
//! - limits left out of a JWT are 0, not unlimited: an account without
//!   `conn: -1` refuses every connection ("maximum account active
//!   connections exceeded"), a user without `subs`/`payload: -1` may not
//!   subscribe ("maximum subscriptions exceeded") nor publish ("maximum
//!   payload exceeded: 2 vs 0"), so every limit is written as -1;
//! - JetStream is on for an account when its `nats.limits` has
//!   `mem_storage` or `disk_storage` other than 0 (here -1, with `streams`
//!   and `consumer` -1 too); without, clients get "JetStream not enabled
//!   for account";
//! - with JetStream on, a system account is required ("Can't start
//!   JetStream: ... system account not setup"); naming it in the operator
//!   JWT (`nats.system_account`) or in the config (`system_account`) is
//!   enough (both are written); its JWT must be resolvable at start ("error
//!   resolving system account: account missing"), and it must not have
//!   JetStream limits ("Not allowed to enable JetStream on the system
//!   account");
//! - with `resolver: MEMORY` the server knows only the accounts in
//!   `resolver_preload`: a user of any other account is refused with
//!   `Authorization Violation`; the log says "Account fetch failed: account
//!   missing" and "authentication error", without naming the account;
//! - the start banner's "System  :" line under "Trusted Operators" shows
//!   `""` even with a system account; `/varz` shows the real
//!   `system_account`;
//! - `operator:` takes the JWT inline (a value starting with `eyJ` that is
//!   no file) as well as a file path.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha512_256};

use super::quote;

/// The JOSE header of every NATS v2 JWT.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// A generated NKey user: the server lists its public key in
/// `authorization { users: [ { nkey: <public key> } ] }`, and a client
/// proves it holds the seed by signing the server's nonce.
///
/// durabus: `?nkey_seed_file=<seed_file>` in the URL; async-nats:
/// `ConnectOptions::with_nkey(seed)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NKeyUser {
    /// The user's public key (`U...`).
    pub public_key: String,
    /// A file (mode 0600) holding the user's seed (`SU...`) and a newline.
    pub seed_file: PathBuf,
}

impl NKeyUser {
    /// Generates a user key pair and writes its seed to `dir/user.nk`
    /// (`dir` is created if missing).
    pub(crate) fn generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let user = KeyPair::new_user();
        let seed_file = dir.join("user.nk");
        write_secret(&seed_file, &format!("{}\n", seed(&user, "NKey user")?))?;
        Ok(Self {
            public_key: user.public_key(),
            seed_file,
        })
    }

    /// The server config's `authorization` block.
    pub(crate) fn render(&self) -> String {
        format!(
            "authorization {{\n  users: [\n    {{ nkey: {} }}\n  ]\n}}\n",
            quote(&self.public_key)
        )
    }
}

/// Decentralized JWT auth ("operator mode") with generated keys: an
/// operator, a system account, an application account with JetStream, a
/// user of that account, and a user of an account the server does not
/// know (for "refused" tests).
///
/// The server trusts the operator (`operator: <operator JWT>`) and knows
/// the two accounts from `resolver: MEMORY` with `resolver_preload`.
/// Clients log in with a `.creds` file (durabus:
/// `ConnectOptions::credentials_file` or `?creds=<file>`; async-nats:
/// `ConnectOptions::credentials_file`).
///
/// Only public keys and paths are kept here; the seeds are in the
/// `.creds` files alone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperatorAuth {
    /// The operator's public key (`O...`), the server's trust anchor.
    pub operator_public_key: String,
    /// The system account (`A...`), without JetStream.
    pub system_account_public_key: String,
    /// The application account (`A...`), with unlimited JetStream.
    pub account_public_key: String,
    /// The user (`U...`) of the application account.
    pub user_public_key: String,
    /// The user's `.creds` file (user JWT and seed, mode 0600).
    pub creds_file: PathBuf,
    /// An account (`A...`) signed by no one the server trusts, and not
    /// preloaded: the server cannot resolve it.
    pub unknown_account_public_key: String,
    /// The `.creds` file of a user signed by
    /// [`OperatorAuth::unknown_account_public_key`]: the server refuses it
    /// (`Authorization Violation`).
    pub unknown_account_creds_file: PathBuf,
    /// The operator JWT, for the server config.
    operator_jwt: String,
    /// The system and application account JWTs by public key, for
    /// `resolver_preload`.
    preload: Vec<(String, String)>,
}

impl OperatorAuth {
    /// Generates the keys and JWTs, and writes `dir/user.creds` and
    /// `dir/unknown-account-user.creds` (`dir` is created if missing).
    pub(crate) fn generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let unknown_account = KeyPair::new_account();
        let unknown_user = KeyPair::new_user();

        let operator_jwt = encode(
            &operator,
            &operator.public_key(),
            "durabus-test-operator",
            json!({
                "type": "operator",
                "version": 2,
                "system_account": system.public_key(),
            }),
        )?;
        let system_jwt = encode(
            &operator,
            &system.public_key(),
            "SYS",
            account_claims(false),
        )?;
        let account_jwt = encode(
            &operator,
            &account.public_key(),
            "APP",
            account_claims(true),
        )?;
        let user_jwt = encode(&account, &user.public_key(), "app", user_claims())?;
        let unknown_user_jwt = encode(
            &unknown_account,
            &unknown_user.public_key(),
            "stranger",
            user_claims(),
        )?;

        let creds_file = dir.join("user.creds");
        write_secret(&creds_file, &creds(&user_jwt, &seed(&user, "user")?))?;
        let unknown_account_creds_file = dir.join("unknown-account-user.creds");
        write_secret(
            &unknown_account_creds_file,
            &creds(&unknown_user_jwt, &seed(&unknown_user, "unknown user")?),
        )?;
        Ok(Self {
            operator_public_key: operator.public_key(),
            system_account_public_key: system.public_key(),
            account_public_key: account.public_key(),
            user_public_key: user.public_key(),
            creds_file,
            unknown_account_public_key: unknown_account.public_key(),
            unknown_account_creds_file,
            operator_jwt,
            preload: vec![
                (system.public_key(), system_jwt),
                (account.public_key(), account_jwt),
            ],
        })
    }

    /// The server config's trust settings: operator, system account and
    /// the memory resolver with both accounts preloaded.
    pub(crate) fn render(&self) -> String {
        let preload: String = self
            .preload
            .iter()
            .map(|(key, jwt)| format!("  {}: {}\n", quote(key), quote(jwt)))
            .collect();
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
            quote(&self.operator_jwt),
            quote(&self.system_account_public_key),
        )
    }
}

/// The `nats` claims of an account: everything unlimited; JetStream
/// unlimited when `jetstream`, off otherwise (as for a system account).
fn account_claims(jetstream: bool) -> Value {
    let mut limits = json!({
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": true,
        "conn": -1,
        "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    json!({
        "type": "account",
        "version": 2,
        "limits": limits,
        "default_permissions": { "pub": {}, "sub": {} },
    })
}

/// The `nats` claims of a user: any subject, no limits.
fn user_claims() -> Value {
    json!({
        "type": "user",
        "version": 2,
        "pub": {},
        "sub": {},
        "subs": -1,
        "data": -1,
        "payload": -1,
    })
}

/// A JWT with `nats` claims about `subject`, issued and signed by
/// `issuer`, as jwt v2 encodes it.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> anyhow::Result<String> {
    let iss = issuer.public_key();
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    // jwt v2's jti: the claims data without jti, as Go's json.Marshal writes
    // it (fields in struct order, empty ones left out).
    let data = format!(
        "{{\"iat\":{iat},\"iss\":{},\"name\":{},\"sub\":{}}}",
        quote(&iss),
        quote(name),
        quote(subject)
    );
    let jti = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(data.as_bytes()));
    let claims = json!({
        "jti": jti,
        "iat": iat,
        "iss": iss,
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|e| anyhow!("signing the JWT of {name:?}: {e}"))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// A `.creds` file's text, as `nsc` writes it (and async-nats's
/// `credentials_file` and nats-server read it).
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

fn seed(key: &KeyPair, what: &str) -> anyhow::Result<String> {
    key.seed()
        .map_err(|e| anyhow!("the seed of the {what} key: {e}"))
}

/// Writes `text` to a new file only its owner may read.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn part(jwt: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap()
    }

    #[test]
    fn jwts_are_signed_by_their_issuer_over_header_and_claims() {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let jwt = encode(
            &operator,
            &account.public_key(),
            "APP",
            account_claims(true),
        )
        .unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        assert_eq!(part(&jwt, 0), HEADER.as_bytes());
        let claims: Value = serde_json::from_slice(&part(&jwt, 1)).unwrap();
        assert_eq!(claims["iss"], operator.public_key());
        assert_eq!(claims["sub"], account.public_key());
        assert_eq!(claims["nats"]["type"], "account");
        assert_eq!(claims["nats"]["version"], 2);
        assert_eq!(claims["nats"]["limits"]["disk_storage"], -1);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 52);
        let (signed, _) = jwt.rsplit_once('.').unwrap();
        let verifier = KeyPair::from_public_key(&operator.public_key()).unwrap();
        verifier.verify(signed.as_bytes(), &part(&jwt, 2)).unwrap();
        assert!(!jwt.contains('='), "no padding: {jwt}");
    }

    #[test]
    fn creds_files_hold_the_jwt_and_the_seed_in_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let auth = OperatorAuth::generate(dir.path()).unwrap();
        let text = std::fs::read_to_string(&auth.creds_file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert!(lines[1].starts_with("eyJ"));
        assert_eq!(lines[2], "------END NATS USER JWT------");
        let seed_at = lines
            .iter()
            .position(|l| *l == "-----BEGIN USER NKEY SEED-----")
            .unwrap();
        let user = KeyPair::from_seed(lines[seed_at + 1]).unwrap();
        assert_eq!(user.public_key(), auth.user_public_key);
        assert_eq!(lines[seed_at + 2], "------END USER NKEY SEED------");
        assert!(!format!("{auth:?}").contains(lines[seed_at + 1]));
        assert_ne!(auth.unknown_account_public_key, auth.account_public_key);
    }
}
