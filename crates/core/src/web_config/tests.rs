use super::*;

#[test]
fn basic_auth_checks_bcrypt_and_caches() {
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let auth = BasicAuth::new([("alice".to_owned(), hash)].into());
    let header = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    assert!(auth.check(Some(&header("alice", "s3cret"))));
    assert!(auth.check(Some(&header("alice", "s3cret"))));
    assert!(!auth.check(Some(&header("alice", "wrong"))));
    assert!(!auth.check(Some(&header("bob", "s3cret"))));
    assert!(!auth.check(Some("Bearer x")));
    assert!(!auth.check(Some("Basic !!!")));
    assert!(!auth.check(None));
    // The scheme in any case, any run of spaces; empty credentials refused.
    let good = header("alice", "s3cret");
    let token = good.trim_start_matches("Basic ");
    assert!(auth.check(Some(&format!("bAsIc {token}"))));
    assert!(auth.check(Some(&format!("Basic   {token}"))));
    assert!(!auth.check(Some("Basic  ")));
    assert!(!auth.check(Some(&format!("Basic {token} x"))));
    // A repeated failure is refused without bcrypt; a reload keeps alice's login.
    assert!(matches!(
        auth.precheck(Some(&header("alice", "wrong"))),
        Precheck::Refused
    ));
    let reloaded = BasicAuth::new(auth.users.clone());
    reloaded.inherit(&auth);
    assert!(matches!(reloaded.precheck(Some(&good)), Precheck::Cached));
    let changed =
        BasicAuth::new([("alice".to_owned(), bcrypt::hash("other", 4).expect("hash"))].into());
    changed.inherit(&auth);
    assert!(matches!(changed.precheck(Some(&good)), Precheck::Verify(_)));
}

#[test]
fn pem_files_are_read_or_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("web-config-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("write");
    std::fs::write(&key, c.key_pair.serialize_pem()).expect("write");
    assert_eq!(read_certs(&cert).expect("certs").len(), 1);
    assert!(read_key(&key).is_ok());
    // Swapped files, a missing file and a broken PEM section are refused, naming the file.
    let no_key = read_key(&cert).expect_err("a certificate is not a key");
    assert!(no_key.ends_with("no private key found"), "{no_key}");
    let no_cert = read_certs(&key).expect_err("a key is not a certificate");
    assert!(no_cert.ends_with("no certificate found"), "{no_cert}");
    assert!(read_certs(&dir.join("absent.pem")).is_err());
    let broken = dir.join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("write");
    let err = read_certs(&broken).expect_err("broken PEM");
    assert!(err.starts_with(&broken.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_users_cost_a_bcrypt_too() {
    let hash = bcrypt::hash("s3cret", 6).expect("hash");
    let auth = BasicAuth::new([("alice".to_owned(), hash)].into());
    let header = |user: &str, attempt: u32| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:nope{attempt}"))
        )
    };
    // Distinct wrong passwords: a repeated failure is refused from memory.
    let time = |user: &str| {
        let t = std::time::Instant::now();
        for attempt in 0..3 {
            assert!(!auth.check(Some(&header(user, attempt))));
        }
        t.elapsed()
    };
    let (known, unknown) = (time("alice"), time("mallory"));
    // Same cost: within a factor, where a skipped bcrypt would be ~1000x faster.
    assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
}
