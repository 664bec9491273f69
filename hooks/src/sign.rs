//! Standard Webhooks v1 signatures: `webhook-signature` is
//! `v1,<base64 of HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`,
//! one per secret, space-separated, so that a receiver holding either the
//! old or the new secret verifies during a rotation. A secret is written
//! `whsec_<base64 key>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// A signing key.
pub struct Secret(hmac::Key);

impl Secret {
    /// From `whsec_<base64>` (the prefix optional, padding optional).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &key_bytes(s)?)))
    }

    /// `v1,<base64>` for one message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// The key of a `whsec_<base64>` secret (the prefix optional, padding
/// optional): at least 16 bytes.
pub fn key_bytes(s: &str) -> anyhow::Result<Vec<u8>> {
    let b64 = s.strip_prefix("whsec_").unwrap_or(s).trim_end_matches('=');
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64)
        .map_err(|_| anyhow::anyhow!("a webhook secret is whsec_ and base64"))?;
    if key.len() < 16 {
        anyhow::bail!(
            "a webhook secret's key must be at least 16 bytes (24 and more base64 characters)"
        );
    }
    Ok(key)
}

/// The `webhook-signature` header: every secret's signature.
pub fn header(secrets: &[Secret], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `header` (a `webhook-signature`) holds a signature of the
/// message by one of `secrets`, compared in constant time.
pub fn verify(secrets: &[Secret], id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
    secrets.iter().any(|s| {
        let want = s.sign(id, timestamp, body);
        header
            .split(' ')
            .any(|got| same(want.as_bytes(), got.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_as_the_reference_libraries_do() {
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_signs_with_every_secret_and_bad_secrets_say_why() {
        let a = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let h = header(&[a, b], "evt_1", 1, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")) && parts[0] != parts[1]);
        let h2 = header(
            &[Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap()],
            "evt_1",
            1,
            b"{}",
        );
        let b = Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(verify(std::slice::from_ref(&b), "evt_1", 1, b"{}", &h));
        assert!(verify(std::slice::from_ref(&b), "evt_1", 1, b"{}", &h2));
        assert!(!verify(std::slice::from_ref(&b), "evt_1", 1, b"{ }", &h));
        assert!(!verify(std::slice::from_ref(&b), "evt_2", 1, b"{}", &h));
        assert!(Secret::parse("whsec_not base64!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err(), "too short");
    }
}
