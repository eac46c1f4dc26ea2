//! `attest::credential::make_credential` against a TPM we did not write: swtpm, driven by
//! tpm2-tools. The EK and AK are made in the TPM, the credential on the host, and
//! `tpm2_activatecredential` must give back our secret — and must refuse a credential
//! bound to another name or encrypted to another EK.
//!
//! Skips, loudly (`SKIP:` on stderr), only when swtpm, tpm2-tools or openssl are missing
//! (`apt-get install -y swtpm swtpm-tools tpm2-tools openssl`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use attest::credential::{make_credential, Credential};

/// A swtpm on two loopback TCP ports; killed on drop.
struct Swtpm {
    child: std::process::Child,
    port: u16,
    _state: tempfile::TempDir,
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

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The tools this test needs, or a loud skip.
fn tools_present() -> bool {
    for (tool, package) in [
        ("swtpm", "swtpm"),
        ("tpm2_createek", "tpm2-tools"),
        ("tpm2_activatecredential", "tpm2-tools"),
        ("openssl", "openssl"),
    ] {
        if !have(tool) {
            eprintln!("SKIP: {tool} not found (apt-get install -y {package}); credential activation not tested against a TPM");
            return false;
        }
    }
    true
}

/// Starts a fresh swtpm (a new TPM, new EK seed). Port pairs are chosen and bound one
/// start at a time in this process, and the probe must reach our own, still running
/// swtpm (another program's listener on the port makes ours exit: we retry).
fn start_swtpm() -> Swtpm {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    for _attempt in 0..5 {
        let state = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.path().display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn swtpm");
        let mut s = Swtpm {
            child,
            port,
            _state: state,
        };
        for _ in 0..100 {
            if let Ok(Some(_)) = s.child.try_wait() {
                break; // port taken or similar: retry with another
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

/// A tpm2-tools session on one swtpm, working in one directory.
struct Tpm {
    swtpm: Swtpm,
    dir: tempfile::TempDir,
}

impl Tpm {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.swtpm.port),
            )
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
    }

    /// Runs a tool that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Raw swtpm has no resource manager: flush transient objects and sessions.
    fn flush(&self) {
        self.run(&["tpm2_flushcontext", "-t"]);
        self.run(&["tpm2_flushcontext", "-s"]);
    }

    /// `tpm2_activatecredential` of `blob` with the EK's policy session; the secret or
    /// the tool's complaint.
    fn activate(&self, blob: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::write(self.path("cred.blob"), blob).unwrap();
        let _ = std::fs::remove_file(self.path("got.bin"));
        self.ok(&["tpm2_startauthsession", "--policy-session", "-S", "s.ctx"]);
        self.ok(&["tpm2_policysecret", "-S", "s.ctx", "-c", "e"]);
        let out = self.run(&[
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            "cred.blob",
            "-o",
            "got.bin",
            "-P",
            "session:s.ctx",
        ]);
        self.run(&["tpm2_flushcontext", "s.ctx"]);
        self.flush();
        if out.status.success() {
            Ok(std::fs::read(self.path("got.bin")).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// (modulus, exponent) of an RSA key's TPM2B_PUBLIC (tpm2-tools `-f tss` / `-u` output).
fn rsa_public(tpm2b_public: &[u8]) -> (Vec<u8>, u32) {
    struct R<'a>(&'a [u8]);
    impl R<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            a
        }
        fn u16(&mut self) -> u16 {
            u16::from_be_bytes(self.take(2).try_into().unwrap())
        }
        fn u32(&mut self) -> u32 {
            u32::from_be_bytes(self.take(4).try_into().unwrap())
        }
        fn tpm2b(&mut self) -> Vec<u8> {
            let n = self.u16() as usize;
            self.take(n).to_vec()
        }
    }
    let mut r = R(tpm2b_public);
    let size = r.u16() as usize;
    assert_eq!(size, r.0.len(), "TPM2B_PUBLIC size");
    assert_eq!(r.u16(), 0x0001, "type TPM_ALG_RSA");
    assert_eq!(r.u16(), 0x000b, "nameAlg SHA-256");
    r.u32(); // objectAttributes
    r.tpm2b(); // authPolicy
    if r.u16() != 0x0010 {
        r.u16(); // keyBits
        r.u16(); // mode
    }
    if r.u16() != 0x0010 {
        r.u16(); // scheme hash
    }
    assert_eq!(r.u16(), 2048, "keyBits");
    let exponent = r.u32();
    let modulus = r.tpm2b();
    assert!(r.0.is_empty(), "trailing bytes after unique");
    (modulus, exponent)
}

/// A modulus of an RSA-2048 key that is in no TPM (openssl genrsa).
fn foreign_modulus(dir: &Path) -> Vec<u8> {
    let key = dir.join("other.key");
    let out = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    hex::decode(text.trim().strip_prefix("Modulus=").unwrap()).unwrap()
}

/// A TPM with the default RSA EK (`tpm2_createek -G rsa`) and an RSA AK under it.
fn tpm_with_ek_and_ak() -> Option<Tpm> {
    if !tools_present() {
        return None;
    }
    let tpm = Tpm {
        swtpm: start_swtpm(),
        dir: tempfile::tempdir().unwrap(),
    };
    tpm.ok(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    tpm.flush();
    tpm.ok(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        "rsa",
        "-g",
        "sha256",
        "-s",
        "rsassa",
        "-u",
        "ak.pub",
        "-f",
        "tss",
        "-n",
        "ak.name",
    ]);
    tpm.flush();
    Some(tpm)
}

fn read(tpm: &Tpm, name: &str) -> Vec<u8> {
    std::fs::read(tpm.path(name)).unwrap()
}

/// Our credential activates in the TPM and returns our secret (32 bytes and a short
/// one); the blob has the structure of `tpm2_makecredential -T none`'s.
#[test]
fn tpm2_activatecredential_returns_our_secret() {
    let Some(tpm) = tpm_with_ek_and_ak() else {
        return;
    };
    let (modulus, exponent) = rsa_public(&read(&tpm, "ek.pub"));
    assert_eq!(exponent, 0, "the default EK template says 0 (65537)");
    let ak_name = read(&tpm, "ak.name");
    assert_eq!(ak_name.len(), 34);

    for secret in [
        (0u8..32)
            .map(|i| i.wrapping_mul(37) ^ 0xa5)
            .collect::<Vec<u8>>(),
        b"hello".to_vec(),
    ] {
        let cred = make_credential(&modulus, exponent, &ak_name, &secret).unwrap();
        let got = tpm
            .activate(&cred.to_tpm2_tools_blob())
            .unwrap_or_else(|e| panic!("activation of our credential failed: {e}"));
        assert_eq!(got, secret);
    }

    // The same layout as tpm2-tools' own software MakeCredential.
    std::fs::write(tpm.path("secret.bin"), [7u8; 32]).unwrap();
    tpm.ok(&[
        "tpm2_makecredential",
        "-T",
        "none",
        "-u",
        "ek.pub",
        "-s",
        "secret.bin",
        "-n",
        &hex::encode(&ak_name),
        "-o",
        "theirs.blob",
    ]);
    let theirs = read(&tpm, "theirs.blob");
    let ours = make_credential(&modulus, exponent, &ak_name, &[7u8; 32])
        .unwrap()
        .to_tpm2_tools_blob();
    assert_eq!(ours.len(), theirs.len());
    // magic, version, TPM2B_ID_OBJECT size, integrityHMAC size; the rest is random.
    assert_eq!(ours[..12], theirs[..12]);
    assert_eq!(ours[78..80], theirs[78..80], "TPM2B_ENCRYPTED_SECRET size");
    assert_eq!(tpm.activate(&theirs).unwrap(), [7u8; 32]);
}

/// A credential bound to another name (one bit flipped) fails the TPM's integrity
/// check; one encrypted to another RSA-2048 key fails to decrypt.
#[test]
fn tpm2_activatecredential_refuses_another_name_or_another_ek() {
    let Some(tpm) = tpm_with_ek_and_ak() else {
        return;
    };
    let (modulus, exponent) = rsa_public(&read(&tpm, "ek.pub"));
    let ak_name = read(&tpm, "ak.name");
    let secret = [0x42u8; 32];

    let mut other_name = ak_name.clone();
    other_name[20] ^= 0x01;
    let cred = make_credential(&modulus, exponent, &other_name, &secret).unwrap();
    let err = tpm
        .activate(&cred.to_tpm2_tools_blob())
        .expect_err("a credential for another name activated");
    // TPM_RC_INTEGRITY on parameter 1 (credentialBlob): the HMAC covers the name.
    assert!(err.contains("0x1DF"), "another name: {err}");

    let other_ek = foreign_modulus(tpm.dir.path());
    let cred = make_credential(&other_ek, 65537, &ak_name, &secret).unwrap();
    // OAEP decryption of the seed fails (swtpm 0.7 answers TPM_RC_FAILURE, 0x101, and
    // stays usable; hardware TPMs answer TPM_RC_VALUE).
    tpm.activate(&cred.to_tpm2_tools_blob())
        .expect_err("a credential for another EK activated");

    // Each part tampered with: the integrity HMAC, encIdentity, the encrypted seed.
    let good = make_credential(&modulus, exponent, &ak_name, &secret).unwrap();
    for (part, at) in [
        ("integrityHMAC", 10usize),
        ("encIdentity", 40),
        ("seed", 200),
    ] {
        let mut c: Credential = good.clone();
        if part == "seed" {
            c.encrypted_secret[at] ^= 0x80;
        } else {
            c.id_object[at] ^= 0x80;
        }
        let err = tpm
            .activate(&c.to_tpm2_tools_blob())
            .expect_err("a tampered credential activated");
        if part != "seed" {
            assert!(err.contains("0x1DF"), "tampered {part}: {err}");
        }
    }
    // The untouched credential still works (the failures above left the TPM usable).
    assert_eq!(tpm.activate(&good.to_tpm2_tools_blob()).unwrap(), secret);
}
