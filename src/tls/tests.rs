//! Loading the TLS files: each way a file can be unusable is an error at its key; good
//! files load, whatever the system store holds.

use std::fs;
use std::path::{Path, PathBuf};

use sega_testsrv::tls::Ca;

use super::*;
use crate::config::{ClientIdentity, Tls};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("sega-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn err(files: &Tls) -> LoadError {
    ClientTls::load(files).expect_err("should be refused")
}

#[test]
fn good_files_load() {
    let d = Dir::new("good");
    let ca = Ca::new("Load CA");
    let client = ca.client_cert("uploader-1");
    let files = Tls {
        ca_file: Some(d.file("ca.pem", &format!("# our CA\n{}", ca.pem))),
        client: Some(ClientIdentity {
            cert: d.file("client.pem", &client.cert_pem),
            key: d.file("client.key", &client.key_pem),
        }),
    };
    let tls = ClientTls::load(&files).unwrap();
    assert_eq!(tls.extra_roots, 1);
    assert_eq!(tls.client.as_ref().unwrap().subject, "CN=uploader-1");
    assert!(tls.client.as_ref().unwrap().issuer.ends_with("CN=Load CA"));
    // Nothing configured: the system store alone (possibly empty on a bare build host).
    let plain = ClientTls::load(&Tls::default()).unwrap();
    assert_eq!((plain.extra_roots, plain.client.is_none()), (0, true));
    assert!(!format!("{plain:?}").is_empty());
}

#[test]
fn each_bad_file_is_named_by_its_key() {
    let d = Dir::new("bad");
    let ca = Ca::new("Load CA");
    let client = ca.client_cert("uploader-1");
    let other = ca.client_cert("uploader-2");
    let missing = d.0.join("missing.pem");
    let cert = d.file("client.pem", &client.cert_pem);
    let key = d.file("client.key", &client.key_pem);
    let id = |cert: &Path, key: &Path| {
        Some(ClientIdentity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    };
    #[rustfmt::skip]
    let cases: Vec<(Tls, &str, &str)> = vec![
        (Tls { ca_file: Some(missing.clone()), client: None },
         "upload.tls.ca_file", "cannot read: no such file or directory"),
        (Tls { ca_file: Some(d.file("empty.pem", "nothing here\n")), client: None },
         "upload.tls.ca_file", "holds no PEM certificate"),
        (Tls { ca_file: Some(d.file("key-as-ca.pem", &client.key_pem)), client: None },
         "upload.tls.ca_file", "holds no PEM certificate"),
        (Tls { ca_file: Some(d.file("broken.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")), client: None },
         "upload.tls.ca_file", "not valid PEM"),
        (Tls { ca_file: Some(d.file("junk-der.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), client: None },
         "upload.tls.ca_file", "certificate 1 is not usable as a CA certificate"),
        (Tls { ca_file: None, client: id(&missing, &key) },
         "upload.tls.client_cert", "cannot read"),
        (Tls { ca_file: None, client: id(&cert, &missing) },
         "upload.tls.client_key", "cannot read"),
        (Tls { ca_file: None, client: id(&cert, &cert) },
         "upload.tls.client_key", "holds no PEM private key"),
        (Tls { ca_file: None, client: id(&cert, &d.file("enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")) },
         "upload.tls.client_key", "encrypted private key"),
        (Tls { ca_file: None, client: id(&cert, &d.file("other.key", &other.key_pem)) },
         "upload.tls.client_key", "does not belong to the certificate in upload.tls.client_cert"),
    ];
    for (files, key, words) in cases {
        let e = err(&files);
        assert_eq!(e.key, key, "{e}");
        assert!(e.why.contains(words), "{key}: {e}");
        // As a configuration error: the config file, the key, the file and why.
        let shown = e.in_config(Path::new("/etc/sega/config.json")).to_string();
        assert!(
            shown.starts_with(&format!("/etc/sega/config.json: {key}: /")),
            "{shown}"
        );
    }
}

#[test]
fn the_system_store_follows_openssl_variables() {
    // A child process, so that this test's environment changes reach no other test.
    if std::env::var_os("SEGA_TLS_STORE_CHILD").is_some() {
        let store = system_store();
        println!("roots={} from={:?}", store.certs.len(), store.from);
        return;
    }
    let d = Dir::new("store");
    let ca = Ca::new("Env CA");
    let ca2 = Ca::new("Env CA 2");
    let file = d.file("bundle.pem", &format!("{}{}", ca.pem, ca2.pem));
    let certs = d.0.join("certs");
    fs::create_dir_all(&certs).unwrap();
    fs::write(certs.join("one.pem"), &ca.pem).unwrap();
    let run = |vars: &[(&str, &Path)]| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "tls::tests::the_system_store_follows_openssl_variables",
            "--nocapture",
        ])
        .env("SEGA_TLS_STORE_CHILD", "1")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = String::from_utf8(c.output().unwrap().stdout).unwrap();
        out.lines()
            .find(|l| l.starts_with("roots="))
            .unwrap_or_else(|| panic!("no output: {out}"))
            .to_string()
    };
    let empty = d.0.join("empty");
    fs::create_dir_all(&empty).unwrap();
    // Each variable replaces its own default: here the bundle and an empty directory.
    let only_file = run(&[("SSL_CERT_FILE", &file), ("SSL_CERT_DIR", &empty)]);
    assert!(only_file.starts_with("roots=2 "), "{only_file}");
    // Both variables: exactly what they name (the directory's copy counted once).
    let both = run(&[("SSL_CERT_FILE", &file), ("SSL_CERT_DIR", &certs)]);
    assert!(both.starts_with("roots=2 "), "{both}");
    let dir_only = run(&[
        ("SSL_CERT_FILE", &d.0.join("missing.pem")),
        ("SSL_CERT_DIR", &certs),
    ]);
    assert!(dir_only.starts_with("roots=1 "), "{dir_only}");
}
