//! The container images deploy/images/build made (`make test` builds them first and sets
//! TRITON_IMAGES_DIR): each OCI layout is read blob by blob (digests checked), its one layer
//! unpacked, and its binary run; user, entrypoint, labels and contents are the ones promised (a
//! static binary on an empty base, non-root, no shell).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const IMAGES: [&str; 3] = ["triton-controller", "triton-webhook", "triton-agent"];

fn images_dir() -> PathBuf {
    PathBuf::from(std::env::var("TRITON_IMAGES_DIR").expect(
        "TRITON_IMAGES_DIR is not set: build the images with deploy/images/build (it prints the \
         directory) or run `make test`, which does",
    ))
}

/// A blob of the layout, after checking that its content has its digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    let out = Command::new("sha256sum").arg(&path).output().expect("sha256sum");
    let sum = String::from_utf8_lossy(&out.stdout);
    assert_eq!(sum.split_whitespace().next(), Some(hex), "{} has its digest", path.display());
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[test]
#[ignore = "needs the images of deploy/images/build in TRITON_IMAGES_DIR; make test runs it"]
fn each_image_is_one_static_binary_run_as_non_root_with_its_labels() {
    let dir = images_dir();
    let version = env!("CARGO_PKG_VERSION");
    for name in IMAGES {
        let layout = dir.join(format!("{name}.oci"));
        let tarball = dir.join(format!("{name}.oci.tar"));
        // The tarball is the layout, packed.
        let listed = Command::new("tar").arg("-tf").arg(&tarball).output().expect("tar -tf");
        assert!(listed.status.success(), "{} is a tar archive", tarball.display());
        let entries = String::from_utf8_lossy(&listed.stdout);
        assert!(entries.lines().any(|l| l.trim_start_matches("./") == "index.json"), "{entries}");
        assert!(entries.lines().any(|l| l.trim_start_matches("./") == "oci-layout"), "{entries}");

        let index = json(&std::fs::read(layout.join("index.json")).expect("index.json"));
        let manifests = index["manifests"].as_array().expect("manifests");
        assert_eq!(manifests.len(), 1, "{name}: one image: {index}");
        let manifest = json(&blob(&layout, manifests[0]["digest"].as_str().unwrap()));
        let config = json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        let c = &config["config"];
        assert_eq!(c["User"], "65532:65532", "{name}: non-root: {c}");
        assert_eq!(c["Entrypoint"], serde_json::json!([format!("/usr/local/bin/{name}")]), "{c}");
        assert!(c["Cmd"].is_null(), "{name}: no shell command: {c}");
        let labels = &c["Labels"];
        assert_eq!(labels["org.opencontainers.image.title"], name, "{labels}");
        assert_eq!(labels["org.opencontainers.image.version"], version, "{labels}");
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0", "{labels}");
        for key in ["description", "source", "revision", "created"] {
            let v = labels[format!("org.opencontainers.image.{key}")].as_str().unwrap_or("");
            assert!(!v.is_empty(), "{name}: label org.opencontainers.image.{key}: {labels}");
        }

        // One layer: the binary, nothing else (no shell, no libc).
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "{name}: {manifest}");
        let root = tempdir(name);
        let layer = root.join("layer.tar.gz");
        std::fs::write(&layer, blob(&layout, layers[0]["digest"].as_str().unwrap())).unwrap();
        let fs = root.join("fs");
        std::fs::create_dir_all(&fs).unwrap();
        let untar = Command::new("tar")
            .arg("-xzf")
            .arg(&layer)
            .arg("-C")
            .arg(&fs)
            .status()
            .expect("tar -xzf");
        assert!(untar.success(), "{name}: the layer unpacks");
        // Everything but directories (a symlink such as /bin/sh would show here).
        let files = Command::new("find").args([".", "!", "-type", "d"]).current_dir(&fs).output().unwrap();
        let files: Vec<String> = String::from_utf8_lossy(&files.stdout).lines().map(String::from).collect();
        assert_eq!(files, [format!("./usr/local/bin/{name}")], "{name}: only its binary");
        // Owned by root, readable and (the binary, the directories) executable by anyone: the
        // non-root user of the image can run it whatever the builder's umask was.
        let listing = Command::new("tar").arg("-tvzf").arg(&layer).output().expect("tar -tvzf");
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            let mut cols = line.split_whitespace();
            let (mode, owner) = (cols.next().unwrap(), cols.next().unwrap());
            assert_eq!(owner, "0/0", "{name}: {line}");
            assert!(mode == "drwxr-xr-x" || mode == "-rwxr-xr-x", "{name}: mode of {line}");
        }
        let binary = fs.join(format!("usr/local/bin/{name}"));
        let interp = Command::new("readelf").arg("-l").arg(&binary).output().expect("readelf");
        assert!(
            !String::from_utf8_lossy(&interp.stdout).contains("program interpreter"),
            "{name}: statically linked"
        );
        // Run as the image's user.
        make_traversable(&root);
        let out = Command::new("setpriv")
            .args(["--reuid=65532", "--regid=65532", "--clear-groups"])
            .arg(&binary)
            .arg("--version")
            .output()
            .expect("run the binary with setpriv");
        assert!(out.status.success(), "{name} --version: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{name} {version}"),
            "{name} --version"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// The test's temporary directories, searchable by the image's user.
fn make_traversable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755));
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("triton-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
