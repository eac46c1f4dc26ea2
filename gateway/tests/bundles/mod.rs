//! Test bundles: UKIs with a security version, and manifests signed over them.
#![allow(dead_code)]

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// A UKI whose `.osrel` says `secver`.
pub fn uki(version: &str, secver: u64) -> Vec<u8> {
    let stub = std::fs::read(STUB).expect("systemd-boot-efi (scripts/test installs it)");
    let mut b = images::pe::UkiBuilder::new(stub);
    b.osrel(
        format!("ID=appliance\nIMAGE_VERSION=\"{version}\"\nAPPLIANCE_SECURITY_VERSION={secver}\n")
            .into_bytes(),
    )
    .unwrap()
    .cmdline(b"console=ttyS0".to_vec())
    .unwrap()
    .linux(vec![0x4d; 64 * 1024])
    .unwrap();
    b.build().unwrap()
}

pub fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A signed bundle: the manifest names `name`, `version`, `secver` and the
/// UKI's digest; `uki` is what the bundle carries.
pub fn bundle(
    key: &signing::SigningKey,
    name: &str,
    version: &str,
    secver: u64,
    uki: &[u8],
) -> Vec<u8> {
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "format": 3,
        "profile": {"name": name, "version": version, "security_version": secver, "lab": true, "sha256": "00"},
        "uki": {"sha256": sha(uki), "size": uki.len(), "authenticode_sha256": "00", "cmdline": "", "sections": []},
    }))
    .unwrap();
    update_bundle::encode(&manifest, &key.sign(&manifest), uki).unwrap()
}
