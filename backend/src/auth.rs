//! Join tokens for private rooms.
//!
//! A room whose name starts with `private-` admits only holders of a join
//! token: an HS256 JWT signed with `--token-secret`, whose claims name the
//! `room`, when it expires (`exp`, seconds since the Unix epoch) and
//! optionally the client id it binds (`sub`). Tokens are checked before any
//! upgrade or stream starts; a missing token is a 401, any other refusal a
//! 403, each with a JSON body and a count in
//! `heartsync_tokens_refused_total{reason}`.
//!
//! JWT parsing and validation are `jsonwebtoken`'s. Its crypto backends
//! come as features that also bring RSA and elliptic curves, which we never
//! use, so [`HS256`] plugs RustCrypto's `hmac` and `sha2` into it instead:
//! no cryptography is written here, and `hmac`'s `verify_slice` compares
//! signatures in constant time.
//!
//! Expiry is judged on the server's [`Clock`](crate::clock::Clock) (not
//! `jsonwebtoken`'s system time), so paused-time tests and the socket's
//! expiry deadline agree.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shared::{ClientId, RoomName};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The prefix that makes a room private.
pub const PRIVATE_PREFIX: &str = "private-";

/// The shortest secret accepted: HS256 keys shorter than its 32-byte hash
/// are easier to guess than the signature is to forge.
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether `room` needs a join token.
pub fn is_private(room: &RoomName) -> bool {
    room.as_str().starts_with(PRIVATE_PREFIX)
}

/// The secret join tokens are signed with. Its `Debug` never shows it, so
/// logging the configuration cannot leak it.
#[derive(Clone)]
pub struct TokenSecret(String);

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// Why a secret was refused.
#[derive(Debug, thiserror::Error)]
#[error("the token secret must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)")]
pub struct SecretTooShort;

impl FromStr for TokenSecret {
    type Err = SecretTooShort;
    fn from_str(s: &str) -> Result<Self, SecretTooShort> {
        if s.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort);
        }
        Ok(Self(s.to_owned()))
    }
}

/// What a join token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The one room the token opens.
    pub room: String,
    /// When it stops opening it, in seconds since the Unix epoch.
    pub exp: u64,
    /// The client id it binds, if any: a socket must use this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// Why a token was refused. Each is a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token came with a request for a private room.
    #[error("this room is private: a join token is needed")]
    Missing,
    /// The server has private rooms turned off.
    #[error("private rooms are not enabled on this server")]
    Disabled,
    /// Not a JWT, or not one of ours (another algorithm, `alg: none`,
    /// missing claims).
    #[error("the join token is malformed")]
    Malformed,
    /// The signature does not match.
    #[error("the join token's signature is not valid")]
    BadSignature,
    /// The token has expired.
    #[error("the join token has expired")]
    Expired,
    /// The token is for another room.
    #[error("the join token is for another room")]
    WrongRoom,
    /// The token binds another client id.
    #[error("the join token is bound to another client id")]
    WrongClient,
}

impl Refusal {
    /// A stable name for metrics and the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Disabled => "disabled",
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::WrongRoom => "wrong_room",
            Refusal::WrongClient => "wrong_client",
        }
    }

    /// 401 when there is no token to judge, 403 otherwise.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Missing => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// The JSON body of a refusal (and of every read API error).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// A stable machine-readable reason, e.g. `missing`, `expired`.
    pub reason: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        crate::metrics::metrics().token_refused(self.as_str());
        let body = ErrorBody { error: self.to_string(), reason: self.as_str().to_owned() };
        let mut response = (self.status(), Json(body)).into_response();
        if self == Refusal::Missing {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// What a valid token admits.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The client id the token binds, if it binds one.
    pub sub: Option<ClientId>,
    /// When the token expires, in ms on the server's clock.
    pub expires_ms: f64,
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Tokens are for private rooms only.
    #[error(
        "{0} is a public room: it needs no token (private rooms start with `{PRIVATE_PREFIX}`)"
    )]
    PublicRoom(String),
    /// The bound client id breaks the client-id rules.
    #[error(transparent)]
    BadSub(#[from] shared::protocol::NameError),
    /// Signing failed (it cannot for HS256 with a valid key).
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs and checks join tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens(<secret>)")
    }
}

impl Tokens {
    /// Tokens signed with `secret`.
    pub fn new(secret: &TokenSecret) -> Self {
        install_hs256();
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the server's clock in `check`.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        Self {
            encoding: EncodingKey::from_secret(secret.0.as_bytes()),
            decoding: DecodingKey::from_secret(secret.0.as_bytes()),
            validation,
        }
    }

    /// A token for `room`, valid for `ttl` from `now_ms` (server clock),
    /// bound to `sub` if given.
    pub fn mint(
        &self,
        room: &RoomName,
        ttl: Duration,
        sub: Option<&str>,
        now_ms: f64,
    ) -> Result<String, MintError> {
        if !is_private(room) {
            return Err(MintError::PublicRoom(room.to_string()));
        }
        let sub = sub.map(ClientId::parse).transpose()?;
        let exp = (now_ms / 1000.0) as u64 + ttl.as_secs().max(1);
        let claims =
            Claims { room: room.to_string(), exp, sub: sub.map(|s| s.as_str().to_owned()) };
        self.sign(&claims)
    }

    /// Signs any claims (tests use this for tokens `mint` refuses to make).
    pub fn sign(&self, claims: &Claims) -> Result<String, MintError> {
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)?)
    }

    /// Checks `token` for `room` at `now_ms` (server clock).
    pub fn check(&self, token: &str, room: &RoomName, now_ms: f64) -> Result<Admitted, Refusal> {
        let data =
            jsonwebtoken::decode::<Claims>(token.as_bytes(), &self.decoding, &self.validation)
                .map_err(|error| match error.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                        Refusal::BadSignature
                    }
                    _ => Refusal::Malformed,
                })?;
        let claims = data.claims;
        let expires_ms = claims.exp as f64 * 1000.0;
        if expires_ms <= now_ms {
            return Err(Refusal::Expired);
        }
        if claims.room != room.as_str() {
            return Err(Refusal::WrongRoom);
        }
        let sub = claims
            .sub
            .as_deref()
            .map(ClientId::parse)
            .transpose()
            .map_err(|_| Refusal::Malformed)?;
        Ok(Admitted { sub, expires_ms })
    }
}

/// The access check every entrance to a room makes: public rooms admit
/// anyone (`Ok(None)`, whatever token comes along); private rooms need a
/// valid token for themselves.
pub fn admit(
    tokens: Option<&Tokens>,
    room: &RoomName,
    token: Option<&str>,
    now_ms: f64,
) -> Result<Option<Admitted>, Refusal> {
    if !is_private(room) {
        return Ok(None);
    }
    let tokens = tokens.ok_or(Refusal::Disabled)?;
    let token = token.filter(|t| !t.is_empty()).ok_or(Refusal::Missing)?;
    tokens.check(token, room, now_ms).map(Some)
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `heartsync token` subcommand: mints a join token and a share link.
#[derive(clap::Parser, Debug)]
#[command(name = "heartsync token", about = "Mint a join token for a private room")]
pub struct TokenCommand {
    /// The private room the token opens (`private-…`).
    #[arg(long)]
    pub room: String,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Bind the token to this client id.
    #[arg(long)]
    pub sub: Option<String>,
    /// The secret the server checks tokens with.
    #[arg(long, env = "HEARTSYNC_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: TokenSecret,
    /// Where the share link points.
    #[arg(long, env = "HEARTSYNC_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
}

impl TokenCommand {
    /// The token and the share link, one a line. The token travels in the
    /// link's fragment, which browsers never send to servers (so it reaches
    /// no access log).
    pub fn run(&self, now_ms: f64) -> anyhow::Result<String> {
        let room = RoomName::parse(&self.room)?;
        let token =
            Tokens::new(&self.token_secret).mint(&room, self.ttl, self.sub.as_deref(), now_ms)?;
        let base = self.public_url.trim_end_matches('/');
        Ok(format!("{token}\n{base}/r/{room}#token={token}\n"))
    }
}

/// HS256 only, from RustCrypto: the one algorithm join tokens use.
static HS256: CryptoProvider = CryptoProvider {
    signer_factory: hs256_signer,
    verifier_factory: hs256_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

fn install_hs256() {
    // Installing twice (a second `Tokens`) keeps the first, which is this one.
    let _ = HS256.install_default();
}

/// HMAC-SHA256 keyed with the token secret.
struct Hs256(Hmac<Sha256>);

fn hs256(algorithm: &Algorithm, key: &[u8]) -> jsonwebtoken::errors::Result<Hs256> {
    if *algorithm != Algorithm::HS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Hmac::<Sha256>::new_from_slice(key).map(Hs256).map_err(|_| ErrorKind::InvalidKeyFormat.into())
}

fn hs256_signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Ok(Box::new(hs256(algorithm, key.as_bytes())?))
}

fn hs256_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(hs256(algorithm, key.try_get_as_bytes()?)?))
}

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant time (`subtle` underneath).
        mac.verify_slice(signature).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_700_000_000_000.0;

    fn tokens() -> Tokens {
        Tokens::new(&"a-test-secret-that-is-long-enough-for-hs256".parse().expect("a secret"))
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a room name")
    }

    fn check(token: &str, name: &str) -> Result<Admitted, Refusal> {
        tokens().check(token, &room(name), NOW)
    }

    #[test]
    fn a_minted_token_opens_its_room_until_it_expires() {
        let token =
            tokens().mint(&room("private-x"), Duration::from_secs(60), None, NOW).expect("minted");
        let admitted = check(&token, "private-x").expect("admitted");
        assert_eq!(admitted, Admitted { sub: None, expires_ms: NOW + 60_000.0 });
        let later = tokens().check(&token, &room("private-x"), NOW + 60_000.0);
        assert_eq!(later, Err(Refusal::Expired));
    }

    #[test]
    fn a_token_opens_no_other_room() {
        let token =
            tokens().mint(&room("private-x"), Duration::from_secs(60), None, NOW).expect("minted");
        assert_eq!(check(&token, "private-y"), Err(Refusal::WrongRoom));
    }

    #[test]
    fn a_token_binds_its_client_id() {
        let token = tokens()
            .mint(&room("private-x"), Duration::from_secs(60), Some("alice-123"), NOW)
            .expect("minted");
        let admitted = check(&token, "private-x").expect("admitted");
        assert_eq!(admitted.sub.as_ref().map(ClientId::as_str), Some("alice-123"));
    }

    #[test]
    fn tokens_are_for_private_rooms_only() {
        let minted = tokens().mint(&room("kitchen"), Duration::from_secs(60), None, NOW);
        assert!(matches!(minted, Err(MintError::PublicRoom(_))));
    }

    #[test]
    fn another_secret_tampering_and_alg_none_are_refused() {
        let token =
            tokens().mint(&room("private-x"), Duration::from_secs(60), None, NOW).expect("minted");
        let other =
            Tokens::new(&"another-secret-that-is-also-long-enough!!".parse().expect("a secret"))
                .mint(&room("private-x"), Duration::from_secs(60), None, NOW)
                .expect("minted");
        assert_eq!(check(&other, "private-x"), Err(Refusal::BadSignature));

        // The claims swapped for another room's, the signature kept.
        let forged =
            tokens().mint(&room("private-y"), Duration::from_secs(60), None, NOW).expect("minted");
        let parts: Vec<&str> = token.split('.').collect();
        let forged_parts: Vec<&str> = forged.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
        assert_eq!(check(&tampered, "private-y"), Err(Refusal::BadSignature));

        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert_eq!(check(&none, "private-x"), Err(Refusal::Malformed));
        let hs384 = format!("{}.{}.{}", b64(r#"{"alg":"HS384","typ":"JWT"}"#), parts[1], parts[2]);
        assert_eq!(check(&hs384, "private-x"), Err(Refusal::BadSignature));
        assert_eq!(check("not a token", "private-x"), Err(Refusal::Malformed));
    }

    fn b64(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    #[test]
    fn public_rooms_admit_anyone_and_private_ones_need_a_token() {
        let t = tokens();
        assert_eq!(admit(Some(&t), &room("kitchen"), None, NOW), Ok(None));
        assert_eq!(admit(Some(&t), &room("kitchen"), Some("garbage"), NOW), Ok(None));
        assert_eq!(admit(Some(&t), &room("private-x"), None, NOW), Err(Refusal::Missing));
        assert_eq!(admit(None, &room("private-x"), Some("x"), NOW), Err(Refusal::Disabled));
    }

    #[test]
    fn short_secrets_are_refused_and_secrets_never_print() {
        assert!("short".parse::<TokenSecret>().is_err());
        let secret: TokenSecret =
            "a-test-secret-that-is-long-enough-for-hs256".parse().expect("a secret");
        assert!(!format!("{secret:?}").contains("long-enough"));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers
            .insert(axum::http::header::AUTHORIZATION, "Bearer abc.def".parse().expect("a value"));
        assert_eq!(bearer(&headers), Some("abc.def"));
        headers.insert(axum::http::header::AUTHORIZATION, "Basic abc".parse().expect("a value"));
        assert_eq!(bearer(&headers), None);
    }
}
