//! TLS and mTLS with the real binary: certificates made by openssl for 127.0.0.1; the CLI
//! and grpcurl reach a TLS server with the CA, a plaintext client does not; with a client
//! CA the server refuses a client without a certificate and takes one with it.

mod common;

use std::path::Path;
use std::process::Command;

use common::process::Process;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=spindle test CA",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, subject) in [
        ("server", "/CN=127.0.0.1"),
        ("client", "/CN=tls test client"),
    ] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", subject],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn spindle(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(args)
        .output()
        .expect("run spindle");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn have(tool: &str, version_flag: &str) -> bool {
    Command::new(tool)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn tls_and_mtls_with_the_cli_and_grpcurl() {
    if !common::outside_tool(
        have("openssl", "version"),
        "tls_and_mtls_with_the_cli_and_grpcurl",
        "openssl (to make certificates)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let path = |name: &str| certs.join(name).display().to_string();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));

    let server = Process::start(
        &dir.path().join("tls"),
        &["serve", "--tls-cert", &cert, "--tls-key", &key],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let https = format!("https://127.0.0.1:{port}");
    let (code, out, err) = spindle(&["--server", &https, "--ca", &ca, "kinds"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("demo.sleep"), "{out}");
    let plain = format!("http://127.0.0.1:{port}");
    let (code, _, err) = spindle(&["--server", &plain, "kinds"]);
    assert_ne!(code, 0, "a plaintext client must not get through: {err}");
    if common::outside_tool(have("grpcurl", "-version"), "tls grpcurl check", "grpcurl") {
        let addr = format!("127.0.0.1:{port}");
        let out = Command::new("grpcurl")
            .args(["-cacert", &ca, &addr, "list"])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed.contains("spindle.v1.ScheduleService"),
            "{listed} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(server);

    let server = Process::start(
        &dir.path().join("mtls"),
        &[
            "serve",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let https = format!("https://127.0.0.1:{port}");
    let (code, _, err) = spindle(&["--server", &https, "--ca", &ca, "kinds"]);
    assert_ne!(
        code, 0,
        "a client without a certificate must be refused: {err}"
    );
    let (client_cert, client_key) = (path("client.pem"), path("client.key"));
    let (code, out, err) = spindle(&[
        "--server",
        &https,
        "--ca",
        &ca,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "kinds",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("demo.sleep"), "{out}");
}

#[test]
fn a_missing_or_bad_certificate_stops_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    let bad = dir.path().join("bad.pem").display().to_string();
    let (code, _, err) = spindle(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        &bad,
        "--tls-key",
        &bad,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--tls-cert") && err.contains("not a PEM file"),
        "{err}"
    );
    let (code, _, err) = spindle(&["serve", "--addr", "127.0.0.1:0", "--tls-cert", &bad]);
    assert_eq!(code, 64, "--tls-cert needs --tls-key: {err}");
}
