//! `attest::ekcert` against certificates we did not make: an swtpm manufactured with EK
//! and platform certificates by `swtpm_setup`/`swtpm_localca` from a private local CA
//! (as `attestation-lab.sh` part 1 does), and chains made by the openssl CLI; on the
//! good chains `openssl verify` must agree with us.
//!
//! Skips, loudly (`SKIP:` on stderr), only when swtpm, swtpm-tools, tpm2-tools or
//! openssl are missing (`apt-get install -y swtpm swtpm-tools tpm2-tools openssl`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use attest::ekcert::{parse_pem_bundle, verify_ek_certificate, EkCertError};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn run(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap_or_else(|e| panic!("{}: {e}", args[0]))
}

fn ok(dir: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let out = run(dir, args, env);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// openssl

fn openssl_present() -> bool {
    if have("openssl", "version") {
        return true;
    }
    eprintln!("SKIP: openssl not found (apt-get install -y openssl)");
    false
}

/// `openssl verify` of `cert` with trust anchors `ca_file` (and `untrusted`
/// intermediates), optionally at a given time: true if it says OK.
fn openssl_verify(
    dir: &Path,
    ca_file: &Path,
    untrusted: Option<&Path>,
    cert: &Path,
    at: Option<i64>,
) -> bool {
    let mut args = vec!["openssl".to_owned(), "verify".into(), "-CAfile".into()];
    args.push(ca_file.display().to_string());
    if let Some(u) = untrusted {
        args.push("-untrusted".into());
        args.push(u.display().to_string());
    }
    if let Some(t) = at {
        args.push("-attime".into());
        args.push(t.to_string());
    }
    args.push(cert.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(dir, &args, &[]);
    out.status.success()
}

const OPENSSL_CNF: &str = r#"
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ca_pathlen0]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
[ca_no_certsign]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature
[ca_false]
basicConstraints = critical, CA:FALSE
[ca_name_constraints]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign
nameConstraints = critical, permitted;DNS:example.com

[ek]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = 2.23.133.8.1
subjectAltName = critical, dirName:tcg
[tcg]
# openssl drops everything up to the first '.' of a field name (for "1.OU = ..."):
# "x.2.23.133.2.1" is the attribute 2.23.133.2.1.
x.2.23.133.2.1 = id:00001014
x.2.23.133.2.2 = testtpm
x.2.23.133.2.3 = id:20240101
[ek_no_eku]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
[ek_server_auth]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth
[ek_unknown_critical]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = 2.23.133.8.1
1.3.6.1.4.1.99999.1 = critical, ASN1:NULL
[ek_is_ca]
basicConstraints = critical, CA:TRUE
extendedKeyUsage = 2.23.133.8.1
"#;

/// Keys and certificates made with the openssl CLI in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.cnf"), OPENSSL_CNF).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ossl(&self, args: &[&str]) {
        let mut v = vec!["openssl"];
        v.extend_from_slice(args);
        ok(self.dir.path(), &v, &[]);
    }

    /// `kind`: `rsa:2048`, `rsa:3072`, `ec:P-256`, `ec:P-384`.
    fn key(&self, name: &str, kind: &str) {
        let file = format!("{name}.key");
        match kind.split_once(':') {
            Some(("rsa", bits)) => self.ossl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                &file,
            ]),
            Some(("ec", curve)) => self.ossl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
                "-out",
                &file,
            ]),
            _ => panic!("key kind {kind}"),
        }
    }

    /// A self-signed CA `name` (key `name.key` of `kind`), `name.pem`.
    fn root(&self, name: &str, cn: &str, kind: &str, digest: &str, days: u32, section: &str) {
        self.key(name, kind);
        self.ossl(&[
            "req",
            "-x509",
            "-new",
            "-config",
            "x.cnf",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            &format!("-{digest}"),
            "-days",
            &days.to_string(),
            "-extensions",
            section,
            "-set_serial",
            "1",
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// `name.pem` for a new key of `kind`, issued by `issuer` with extensions `section`.
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &self,
        name: &str,
        cn: &str,
        kind: &str,
        issuer: &str,
        digest: &str,
        days: u32,
        section: &str,
    ) {
        self.key(name, kind);
        self.ossl(&[
            "req",
            "-new",
            "-config",
            "x.cnf",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            "2",
            &format!("-{digest}"),
            "-days",
            &days.to_string(),
            "-extfile",
            "x.cnf",
            "-extensions",
            section,
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read(self.path(&format!("{name}.pem"))).unwrap();
        let mut v = parse_pem_bundle(&pem).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    /// The moduli of `name.key`, from openssl.
    fn rsa_modulus(&self, name: &str) -> Vec<u8> {
        let out = ok(
            self.dir.path(),
            &[
                "openssl",
                "rsa",
                "-noout",
                "-modulus",
                "-in",
                &format!("{name}.key"),
            ],
            &[],
        );
        hex::decode(out.trim().strip_prefix("Modulus=").unwrap()).unwrap()
    }

    fn verify(
        &self,
        ek: &str,
        cas: &[&str],
        now: i64,
    ) -> Result<attest::ekcert::EkCertificate, EkCertError> {
        let cas: Vec<Vec<u8>> = cas.iter().map(|c| self.der(c)).collect();
        verify_ek_certificate(&self.der(ek), &cas, now)
    }
}

/// An ECDSA P-256 root signs an RSA-2048 EK certificate; a P-384 root (SHA-384) signs an
/// RSA-3072 intermediate that signs an EK certificate with sha512WithRSA. openssl agrees.
#[test]
fn openssl_chains_with_ecdsa_and_rsa_verify() {
    if !openssl_present() {
        return;
    }
    let p = Pki::new();
    p.root("p256", "P-256 Root", "ec:P-256", "sha256", 3650, "ca");
    p.issue("ek1", "EK one", "rsa:2048", "p256", "sha256", 3650, "ek");
    let got = p.verify("ek1", &["p256"], now()).unwrap();
    assert_eq!(got.rsa_modulus, p.rsa_modulus("ek1"));
    assert_eq!(got.rsa_exponent, 65537);
    assert_eq!(got.manufacturer.as_deref(), Some("id:00001014"));
    assert_eq!(got.model.as_deref(), Some("testtpm"));
    assert_eq!(got.version.as_deref(), Some("id:20240101"));
    assert_eq!(got.chain, ["CN=EK one", "CN=P-256 Root"]);
    assert!(openssl_verify(
        p.dir.path(),
        &p.path("p256.pem"),
        None,
        &p.path("ek1.pem"),
        None
    ));

    p.root("p384", "P-384 Root", "ec:P-384", "sha384", 3650, "ca");
    p.issue(
        "inter",
        "RSA Intermediate",
        "rsa:3072",
        "p384",
        "sha384",
        3650,
        "ca",
    );
    p.issue("ek2", "EK two", "rsa:2048", "inter", "sha512", 3650, "ek");
    let got = p.verify("ek2", &["p384", "inter"], now()).unwrap();
    assert_eq!(
        got.chain,
        ["CN=EK two", "CN=RSA Intermediate", "CN=P-384 Root"]
    );
    // The order of the CA file does not matter; extra anchors do no harm.
    let got = p.verify("ek2", &["p256", "inter", "p384"], now()).unwrap();
    assert_eq!(got.chain.len(), 3);
    // The intermediate alone is a trust anchor too.
    let got = p.verify("ek2", &["inter"], now()).unwrap();
    assert_eq!(got.chain, ["CN=EK two", "CN=RSA Intermediate"]);
    assert!(openssl_verify(
        p.dir.path(),
        &p.path("p384.pem"),
        Some(&p.path("inter.pem")),
        &p.path("ek2.pem"),
        None
    ));

    // An EK certificate without extendedKeyUsage is accepted.
    p.issue(
        "ek3",
        "EK three",
        "rsa:2048",
        "p256",
        "sha384",
        3650,
        "ek_no_eku",
    );
    let got = p.verify("ek3", &["p256"], now()).unwrap();
    assert_eq!(got.manufacturer, None);
}

/// What a CA may not be, and what an EK certificate may not be; each error names the
/// certificate. openssl refuses the same broken chains.
#[test]
fn openssl_chains_with_faults_are_refused() {
    if !openssl_present() {
        return;
    }
    let p = Pki::new();
    p.root("root", "Root", "rsa:2048", "sha256", 3650, "ca");

    // Not a CA.
    p.issue(
        "notca", "Not A CA", "rsa:2048", "root", "sha256", 3650, "ca_false",
    );
    p.issue("ek", "EK", "rsa:2048", "notca", "sha256", 3650, "ek");
    let e = p.verify("ek", &["root", "notca"], now()).unwrap_err();
    assert!(
        matches!(&e, EkCertError::NotCa { issuer, .. } if issuer.contains("CN=Not A CA")),
        "{e}"
    );
    assert!(e.to_string().contains("cA=TRUE"), "{e}");
    assert!(!openssl_verify(
        p.dir.path(),
        &p.path("root.pem"),
        Some(&p.path("notca.pem")),
        &p.path("ek.pem"),
        None
    ));

    // A CA without keyCertSign.
    p.issue(
        "nosign",
        "No Cert Sign",
        "rsa:2048",
        "root",
        "sha256",
        3650,
        "ca_no_certsign",
    );
    p.issue("ek", "EK", "rsa:2048", "nosign", "sha256", 3650, "ek");
    let e = p.verify("ek", &["root", "nosign"], now()).unwrap_err();
    assert!(e.to_string().contains("keyCertSign"), "{e}");
    assert!(e.to_string().contains("CN=No Cert Sign"), "{e}");

    // pathLenConstraint 0 on the root, one intermediate below it.
    p.root(
        "short",
        "Short Root",
        "ec:P-256",
        "sha256",
        3650,
        "ca_pathlen0",
    );
    p.issue("inter", "Inter", "rsa:2048", "short", "sha256", 3650, "ca");
    p.issue("ek", "EK", "rsa:2048", "inter", "sha256", 3650, "ek");
    let e = p.verify("ek", &["short", "inter"], now()).unwrap_err();
    assert!(
        matches!(&e, EkCertError::NotCa { issuer, reason, .. }
            if issuer.contains("CN=Short Root") && reason.contains("pathLenConstraint 0")),
        "{e}"
    );
    assert!(!openssl_verify(
        p.dir.path(),
        &p.path("short.pem"),
        Some(&p.path("inter.pem")),
        &p.path("ek.pem"),
        None
    ));
    // The intermediate alone is an anchor: the root's constraint is then not in the chain.
    p.verify("ek", &["inter"], now()).unwrap();

    // A CA with a critical extension we do not enforce.
    p.issue(
        "nc",
        "Constrained",
        "rsa:2048",
        "root",
        "sha256",
        3650,
        "ca_name_constraints",
    );
    p.issue("ek", "EK", "rsa:2048", "nc", "sha256", 3650, "ek");
    let e = p.verify("ek", &["root", "nc"], now()).unwrap_err();
    assert_eq!(
        e,
        EkCertError::UnknownCriticalExtension {
            cert: "CA certificate #2 \"CN=Constrained\"".into(),
            oid: "2.5.29.30".into(),
            name: "nameConstraints",
        }
    );

    // EK certificates: an unknown critical extension, the wrong purpose, a CA.
    p.issue(
        "ek",
        "EK",
        "rsa:2048",
        "root",
        "sha256",
        3650,
        "ek_unknown_critical",
    );
    let e = p.verify("ek", &["root"], now()).unwrap_err();
    assert!(
        matches!(&e, EkCertError::UnknownCriticalExtension { oid, .. } if oid == "1.3.6.1.4.1.99999.1"),
        "{e}"
    );
    p.issue(
        "ek",
        "EK",
        "rsa:2048",
        "root",
        "sha256",
        3650,
        "ek_server_auth",
    );
    let e = p.verify("ek", &["root"], now()).unwrap_err();
    assert!(
        matches!(&e, EkCertError::NotEkCertificate { found, .. } if found.contains("serverAuth")),
        "{e}"
    );
    p.issue("ek", "EK", "rsa:2048", "root", "sha256", 3650, "ek_is_ca");
    let e = p.verify("ek", &["root"], now()).unwrap_err();
    assert!(matches!(e, EkCertError::EkIsCa { .. }), "{e}");
    // An ECDSA EK certificate.
    p.issue("ek", "EK", "ec:P-256", "root", "sha256", 3650, "ek");
    let e = p.verify("ek", &["root"], now()).unwrap_err();
    assert!(matches!(e, EkCertError::NotRsa { .. }), "{e}");

    // SHA-1 is refused by name.
    p.issue("ek", "EK", "rsa:2048", "root", "sha1", 3650, "ek");
    let e = p.verify("ek", &["root"], now()).unwrap_err();
    assert_eq!(
        e,
        EkCertError::UnsupportedSignatureAlgorithm {
            cert: "EK certificate \"CN=EK\"".into(),
            oid: "1.2.840.113549.1.1.5".into(),
            name: "sha1WithRSAEncryption (SHA-1)",
        }
    );
}

/// A CA that expires before the EK certificate: after its notAfter the error names the
/// CA and the field; before the EK's notBefore, the EK certificate. openssl agrees.
#[test]
fn openssl_chain_with_expired_ca_names_the_ca() {
    if !openssl_present() {
        return;
    }
    let p = Pki::new();
    p.root("root", "Short Lived Root", "ec:P-256", "sha256", 1, "ca");
    p.issue("ek", "EK", "rsa:2048", "root", "sha256", 3650, "ek");
    let t = now();
    p.verify("ek", &["root"], t).unwrap();
    let later = t + 3 * 86400;
    let e = p.verify("ek", &["root"], later).unwrap_err();
    match &e {
        EkCertError::Expired {
            cert, not_after, ..
        } => {
            assert_eq!(cert, "CA certificate #1 \"CN=Short Lived Root\"");
            assert!(not_after.ends_with("UTC"), "{not_after}");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("notAfter"), "{e}");
    assert!(!openssl_verify(
        p.dir.path(),
        &p.path("root.pem"),
        None,
        &p.path("ek.pem"),
        Some(later)
    ));
    let e = p.verify("ek", &["root"], t - 86400).unwrap_err();
    assert!(
        matches!(&e, EkCertError::NotYetValid { cert, .. } if cert == "EK certificate \"CN=EK\""),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// swtpm manufactured with certificates

/// What the manufactured swtpm gave: its certificates, its CA, its EK.
struct Lab {
    ek_cert: Vec<u8>,
    ecc_ek_cert: Vec<u8>,
    platform_cert: Vec<u8>,
    root_pem: Vec<u8>,
    issuer_pem: Vec<u8>,
    /// The RSA EK's modulus, from `tpm2_createek -G rsa -u ek.pub` (TPM2B_PUBLIC).
    ek_modulus: Vec<u8>,
}

/// Manufactures one swtpm for this test binary (about a second), or `None` with a SKIP.
fn lab() -> Option<&'static Lab> {
    static LAB: OnceLock<Option<Lab>> = OnceLock::new();
    LAB.get_or_init(|| {
        for (tool, package) in [
            ("swtpm", "swtpm"),
            ("swtpm_setup", "swtpm-tools"),
            ("swtpm_localca", "swtpm-tools"),
            ("tpm2_nvread", "tpm2-tools"),
            ("tpm2_createek", "tpm2-tools"),
            ("openssl", "openssl"),
        ] {
            if !have(tool, "--version") {
                eprintln!("SKIP: {tool} not found (apt-get install -y {package}); the swtpm EK certificate tests do not run");
                return None;
            }
        }
        Some(manufacture())
    })
    .as_ref()
}

fn manufacture() -> Lab {
    let w = tempfile::tempdir().unwrap();
    let d = w.path();
    std::fs::create_dir(d.join("state")).unwrap();
    std::fs::create_dir(d.join("ca")).unwrap();
    std::fs::write(
        d.join("localca.conf"),
        format!(
            "statedir = {0}/ca\nsigningkey = {0}/ca/signkey.pem\nissuercert = {0}/ca/issuercert.pem\ncertserial = {0}/ca/certserial\n",
            d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("localca.options"),
        "--platform-manufacturer Lab\n--platform-version 2.1\n--platform-model QEMU\n",
    )
    .unwrap();
    let localca = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v swtpm_localca"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        d.join("setup.conf"),
        format!(
            "create_certs_tool= {}\ncreate_certs_tool_config = {1}/localca.conf\ncreate_certs_tool_options = {1}/localca.options\nactive_pcr_banks = sha256\n",
            localca.trim(),
            d.display()
        ),
    )
    .unwrap();
    let state = d.join("state");
    let setup_conf = d.join("setup.conf");
    ok(
        d,
        &[
            "swtpm_setup",
            "--tpm2",
            "--tpm-state",
            state.to_str().unwrap(),
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
            "--config",
            setup_conf.to_str().unwrap(),
            "--overwrite",
        ],
        &[],
    );

    let swtpm = start_swtpm(&state);
    let tcti = [(
        "TPM2TOOLS_TCTI",
        format!("swtpm:host=127.0.0.1,port={}", swtpm.port),
    )];
    for (index, file) in [
        ("0x1c00002", "ekcert.der"),
        ("0x1c00016", "ekecc.der"),
        ("0x1c08000", "platform.der"),
    ] {
        ok(d, &["tpm2_nvread", index, "-o", file], &tcti);
    }
    ok(
        d,
        &["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
        &tcti,
    );
    run(d, &["tpm2_flushcontext", "-t"], &tcti);
    drop(swtpm);

    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let ek_pub = read("ek.pub");
    // TPM2B_PUBLIC of an RSA-2048 key: the unique field (u16 256 + modulus) ends it.
    let (head, modulus) = ek_pub.split_at(ek_pub.len() - 256);
    assert_eq!(&head[head.len() - 2..], &[0x01, 0x00], "RSA unique size");
    Lab {
        ek_cert: read("ekcert.der"),
        ecc_ek_cert: read("ekecc.der"),
        platform_cert: read("platform.der"),
        root_pem: read("ca/swtpm-localca-rootca-cert.pem"),
        issuer_pem: read("ca/issuercert.pem"),
        ek_modulus: modulus.to_vec(),
    }
}

/// A swtpm on two loopback TCP ports; killed on drop.
struct Swtpm {
    child: std::process::Child,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port_pair() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// swtpm on `state`. Starts are serialised in this process, and the probe must reach
/// our own, still running swtpm (another listener on the port makes ours exit: retry).
fn start_swtpm(state: &Path) -> Swtpm {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    for _attempt in 0..5 {
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn swtpm");
        let mut s = Swtpm { child, port };
        for _ in 0..100 {
            if let Ok(Some(_)) = s.child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if let Ok(None) = s.child.try_wait() {
                    return s;
                }
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    panic!("swtpm did not start after 5 attempts");
}

fn bundle(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parse_pem_bundle(&parts.concat()).unwrap()
}

/// The swtpm's EK certificate verifies with root + intermediate as the CA file, its key
/// is the EK's, the TCG attributes are swtpm's; openssl agrees on the chain.
#[test]
fn swtpm_ek_certificate_verifies_with_its_local_ca() {
    let Some(lab) = lab() else { return };
    let cas = bundle(&[&lab.root_pem, &lab.issuer_pem]);
    assert_eq!(cas.len(), 2);
    let got = verify_ek_certificate(&lab.ek_cert, &cas, now()).unwrap();
    assert_eq!(got.rsa_modulus, lab.ek_modulus, "EK certificate key == EK");
    assert_eq!(got.rsa_exponent, 65537);
    assert_eq!(got.manufacturer.as_deref(), Some("id:00001014"));
    assert_eq!(got.model.as_deref(), Some("swtpm"));
    assert_eq!(got.version.as_deref(), Some("id:20191023"));
    assert_eq!(
        got.chain,
        ["CN=unknown", "CN=swtpm-localca", "CN=swtpm-localca-rootca"]
    );

    // And the credential module takes that key.
    attest::credential::make_credential(
        &got.rsa_modulus,
        got.rsa_exponent,
        &[&[0x00, 0x0b][..], &[1; 32]].concat(),
        b"secret",
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("root.pem"), &lab.root_pem).unwrap();
    std::fs::write(d.join("issuer.pem"), &lab.issuer_pem).unwrap();
    std::fs::write(d.join("ekcert.der"), &lab.ek_cert).unwrap();
    ok(
        d,
        &[
            "openssl",
            "x509",
            "-inform",
            "der",
            "-in",
            "ekcert.der",
            "-out",
            "ekcert.pem",
        ],
        &[],
    );
    assert!(openssl_verify(
        d,
        &d.join("root.pem"),
        Some(&d.join("issuer.pem")),
        &d.join("ekcert.pem"),
        None
    ));
    // openssl reads the same modulus from the certificate.
    let m = ok(
        d,
        &["openssl", "x509", "-in", "ekcert.pem", "-noout", "-modulus"],
        &[],
    );
    assert_eq!(
        hex::decode(m.trim().strip_prefix("Modulus=").unwrap()).unwrap(),
        got.rsa_modulus
    );
}

/// Without the swtpm's CA: a CA file with another CA names the missing issuer; a
/// CA with the issuer's name but another key fails the signature.
#[test]
fn swtpm_ek_certificate_is_refused_without_its_ca() {
    let Some(lab) = lab() else { return };
    let p = Pki::new();
    p.root(
        "other",
        "Other TPM Vendor Root",
        "ec:P-256",
        "sha256",
        3650,
        "ca",
    );
    let e = verify_ek_certificate(&lab.ek_cert, &[p.der("other")], now()).unwrap_err();
    assert_eq!(
        e,
        EkCertError::MissingIssuer {
            cert: "EK certificate \"CN=unknown\"".into(),
            issuer: "CN=swtpm-localca".into(),
        }
    );
    assert!(e.to_string().contains("\"CN=swtpm-localca\""), "{e}");

    // The root alone: the intermediate is missing.
    let e = verify_ek_certificate(&lab.ek_cert, &bundle(&[&lab.root_pem]), now()).unwrap_err();
    assert!(matches!(e, EkCertError::MissingIssuer { .. }), "{e}");

    // An impostor with the intermediate's name.
    p.root(
        "impostor",
        "swtpm-localca",
        "rsa:2048",
        "sha256",
        3650,
        "ca",
    );
    let e = verify_ek_certificate(&lab.ek_cert, &[p.der("impostor")], now()).unwrap_err();
    assert_eq!(
        e,
        EkCertError::BadSignature {
            cert: "EK certificate \"CN=unknown\"".into(),
            issuer: "CA certificate #1 \"CN=swtpm-localca\"".into(),
        }
    );
    // With the real one beside it, the right one is found.
    let mut cas = vec![p.der("impostor")];
    cas.extend(bundle(&[&lab.issuer_pem, &lab.root_pem]));
    let got = verify_ek_certificate(&lab.ek_cert, &cas, now()).unwrap();
    assert_eq!(got.chain.len(), 3);
}

/// One flipped byte in the signature, or in the signed part, fails the signature check.
#[test]
fn swtpm_ek_certificate_tampered_is_refused() {
    let Some(lab) = lab() else { return };
    let cas = bundle(&[&lab.root_pem, &lab.issuer_pem]);
    let mut bad = lab.ek_cert.clone();
    let n = bad.len();
    bad[n - 10] ^= 0x01; // inside the 256-byte RSA signature at the end
    let e = verify_ek_certificate(&bad, &cas, now()).unwrap_err();
    assert!(
        matches!(&e, EkCertError::BadSignature { cert, issuer }
            if cert.contains("CN=unknown") && issuer.contains("CN=swtpm-localca")),
        "{e}"
    );
    // A modulus byte of the EK key (signed data): someone else's EK.
    let at = lab
        .ek_cert
        .windows(16)
        .position(|w| w == &lab.ek_modulus[..16])
        .unwrap();
    let mut bad = lab.ek_cert.clone();
    bad[at + 100] ^= 0x40;
    let e = verify_ek_certificate(&bad, &cas, now()).unwrap_err();
    assert!(matches!(e, EkCertError::BadSignature { .. }), "{e}");
}

/// The platform certificate (NV 0x01c08000) is issued by the same CA but is not an EK
/// certificate; the ECC EK certificate is not RSA.
#[test]
fn swtpm_platform_and_ecc_certificates_are_refused() {
    let Some(lab) = lab() else { return };
    let cas = bundle(&[&lab.root_pem, &lab.issuer_pem]);
    let e = verify_ek_certificate(&lab.platform_cert, &cas, now()).unwrap_err();
    assert!(
        matches!(&e, EkCertError::NotEkCertificate { found, .. } if found.contains("2.23.133.8.2")),
        "{e}"
    );
    let e = verify_ek_certificate(&lab.ecc_ek_cert, &cas, now()).unwrap_err();
    assert!(
        matches!(&e, EkCertError::NotRsa { algorithm, .. } if algorithm == "EC P-384"),
        "{e}"
    );
}

/// swtpm's certificates all end 9999-12-31 23:59:59 (GeneralizedTime): one second later
/// the EK certificate has expired; before manufacturing, none is valid yet.
#[test]
fn swtpm_ek_certificate_validity_is_checked() {
    let Some(lab) = lab() else { return };
    let cas = bundle(&[&lab.root_pem, &lab.issuer_pem]);
    verify_ek_certificate(&lab.ek_cert, &cas, 253_402_300_799).unwrap();
    let e = verify_ek_certificate(&lab.ek_cert, &cas, 253_402_300_800).unwrap_err();
    assert_eq!(
        e,
        EkCertError::Expired {
            cert: "EK certificate \"CN=unknown\"".into(),
            not_after: "9999-12-31 23:59:59 UTC".into(),
            now: "10000-01-01 00:00:00 UTC".into(),
        }
    );
    let e = verify_ek_certificate(&lab.ek_cert, &cas, 1_000_000_000).unwrap_err();
    assert!(matches!(e, EkCertError::NotYetValid { .. }), "{e}");
}
