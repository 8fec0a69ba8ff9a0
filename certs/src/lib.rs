//! Certificates for triton-webhook without cert-manager: a CA, and a serving certificate for the
//! webhook Service's DNS names (and any extra names or IPs), signed by it.

use std::net::IpAddr;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A PEM certificate and its PEM private key.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// The DNS names a Service `name` in `namespace` is reached by from the API server.
pub fn service_dns_names(name: &str, namespace: &str) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clock skew between this machine and the cluster.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// A new self-signed CA.
pub fn new_ca(common_name: &str, days: i64) -> anyhow::Result<Pem> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    validity(&mut params, days);
    let ca = CertifiedIssuer::self_signed(params, key)?;
    Ok(Pem {
        cert: ca.pem(),
        key: ca.key().serialize_pem(),
    })
}

/// A serving certificate for `dns_names` and `ips`, signed by the CA in `ca`.
pub fn serving_cert(
    ca: &Pem,
    dns_names: &[String],
    ips: &[IpAddr],
    days: i64,
) -> anyhow::Result<Pem> {
    anyhow::ensure!(
        !dns_names.is_empty() || !ips.is_empty(),
        "a serving certificate needs at least one DNS name or IP"
    );
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = dns_names
        .iter()
        .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
        .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<anyhow::Result<_>>()?;
    let cn = dns_names
        .first()
        .cloned()
        .unwrap_or_else(|| ips[0].to_string());
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The `caBundle` value for a webhook configuration: the CA certificate PEM, base64-encoded.
pub fn ca_bundle(ca_cert_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_cert_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_cert_is_signed_by_the_ca_and_names_the_service() {
        let ca = new_ca("triton-webhook-ca", 365).unwrap();
        let names = service_dns_names("triton-webhook", "triton-system");
        let leaf = serving_cert(&ca, &names, &["127.0.0.1".parse().unwrap()], 90).unwrap();
        let (_, cert) = x509_parser::pem::parse_x509_pem(leaf.cert.as_bytes()).unwrap();
        let cert = cert.parse_x509().unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.cert.as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let text = format!("{san:?}");
        assert!(text.contains("triton-webhook.triton-system.svc"), "{text}");
        assert!(
            text.contains("127.0.0.1") || text.contains("[127, 0, 0, 1]"),
            "{text}"
        );
        assert!(ca_cert.is_ca());
        assert!(!cert.is_ca());
    }

    #[test]
    fn ca_bundle_round_trips() {
        let bundle = ca_bundle("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
        let back = base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .unwrap();
        assert!(
            String::from_utf8(back)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }

    #[test]
    fn a_certificate_needs_a_name() {
        let ca = new_ca("ca", 1).unwrap();
        assert!(serving_cert(&ca, &[], &[], 1).is_err());
    }
}
