//! Fault injection on the host side: the data dir's disk fills up in the middle of a
//! launch, libvirt's QEMU user cannot reach the data dir, and a pool or network of
//! ec2local's name is left by an earlier data dir. Runs inside the bench's network
//! namespace (scripts/test); see RELIABILITY.md.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    Bench, Failpoints, Service, assert_nothing_orphaned, client, delete, get_json, import_test_image, post_json,
    wait_for, wait_instance,
};
use ec2local::exec::virsh::Virsh;
use serde_json::json;

const URI: &str = "qemu:///system";
const SETTLE: Duration = Duration::from_secs(120);

fn virsh() -> Virsh {
    Virsh::new(URI, Duration::from_secs(60))
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bytes used on the file system holding `path`.
fn used_bytes(path: &Path) -> u64 {
    let out = run("df", &["--output=used", "-B1", &path.to_string_lossy()]);
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

fn resize_tmpfs(mount: &Path, size: &str) {
    run("mount", &["-o", &format!("remount,size={size}"), &mount.to_string_lossy()]);
}

// REQ-LIM-002, REQ-INST-007, REQ-REL-001
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn a_full_disk_during_a_launch_fails_it_cleanly_and_the_service_keeps_answering() {
    let bench = Bench::from_env();
    // A tmpfs that scripts/test mounted before libvirtd started, so libvirt sees it too.
    let mount = std::path::PathBuf::from(
        std::env::var("EC2LOCAL_DISKFULL_DIR").expect("EC2LOCAL_DISKFULL_DIR is set by scripts/test"),
    );
    resize_tmpfs(&mount, "20g");
    let data = mount.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let failpoints = Failpoints::new(&bench.data_dir.parent().unwrap().join("diskfull-failpoints"));
    let (fp_key, fp_dir) = failpoints.env();
    let mut env = vec![
        ("EC2LOCAL_LIBVIRT_URI".to_string(), URI.to_string()),
        ("EC2LOCAL_POOL_NAME".to_string(), "ec2-bench-diskfull".to_string()),
        (fp_key.to_string(), fp_dir),
    ];
    env.extend(common::own_network("df", 84));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let svc = Service::start(&data, &env);
    import_test_image(&svc, &bench).await;

    // Accepted while the disk has room; the disk fills before the overlay is written.
    failpoints.arm("launch.before-overlay");
    let (status, launched) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!(status, 202, "{launched}");
    let id = launched["id"].as_str().unwrap().to_string();
    failpoints.reached("launch.before-overlay", 1).await;
    let used = used_bytes(&mount);
    resize_tmpfs(&mount, &format!("{}", used + 8192));
    failpoints.release("launch.before-overlay");

    // While the disk is full the launch cannot even record its failure: it keeps trying,
    // and the service keeps answering and refuses new launches; nothing is stored.
    // (It removes its files first, which is how the test sees it got there.)
    let instance_dir = data.join("instances").join(&id);
    wait_for("the failed launch to remove its files", SETTLE, Duration::from_millis(200), || {
        let gone = !instance_dir.exists();
        async move { gone.then_some(()) }
    })
    .await;
    let (status, refused) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("InsufficientDisk")), "{refused}");
    let (status, list) = get_json(&svc.api("/instances?include_terminated=true")).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(get_json(&svc.api("/host")).await.0, 200);

    // Room again (the user frees space): the row ends with the real reason, nothing is
    // orphaned, and the database is intact.
    resize_tmpfs(&mount, "20g");
    let failed = wait_instance(&svc, &id, "error", SETTLE, |i| i["state"] == "error" && i["task"].is_null()).await;
    let reason = failed["state_reason"].as_str().unwrap();
    assert!(reason.starts_with("launch failed") && reason.contains("No space left on device"), "{reason}");
    let rows = assert_nothing_orphaned(&svc, "ec2-bench-df").await;
    assert_eq!(rows.len(), 1);
    let db =
        rusqlite::Connection::open_with_flags(data.join("ec2local.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    drop(db);

    // And launches are accepted again.
    let (status, again) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!(status, 202, "{again}");
    let again = again["id"].as_str().unwrap().to_string();
    assert_eq!(delete(&svc.api(&format!("/instances/{again}"))).await, 202);
    wait_instance(&svc, &again, "terminated", SETTLE, |i| i["state"] == "terminated" && i["task"].is_null()).await;
    assert_nothing_orphaned(&svc, "ec2-bench-df").await;

    // REQ-IMG-005: an upload with no stated length is counted as it streams; past what
    // the disk can take (twice the image, and a reserve) it is refused, and the bytes
    // it wrote are removed.
    let used = used_bytes(&mount);
    resize_tmpfs(&mount, &format!("{}", used + (256 << 20)));
    let chunks = futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![0u8; 8 << 20])));
    let response = client()
        .put(svc.api("/images/too-big/file"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("the service answers before the body ends");
    assert_eq!(response.status(), 413);
    let refused: serde_json::Value = response.json().await.unwrap();
    assert_eq!(refused["code"], "ImageTooLarge", "{refused}");
    let staged: Vec<_> = std::fs::read_dir(data.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(staged.is_empty(), "the refused upload left {staged:?}");
    assert!(used_bytes(&mount) < used + (16 << 20), "the refused upload's bytes were not freed");
    assert_eq!(get_json(&svc.api("/images/too-big")).await.0, 404);
    resize_tmpfs(&mount, "20g");
    drop(svc);
    let _ = std::fs::remove_dir_all(&data);
}

// REQ-REL-002, REQ-STOR-001
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn a_data_dir_qemu_cannot_reach_is_reported_and_launches_are_refused_until_it_is_fixed() {
    let bench = Bench::from_env();
    let tmp = tempfile::tempdir_in(bench.data_dir.parent().unwrap()).unwrap();
    let closed = tmp.path().join("closed");
    std::fs::create_dir_all(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut env = vec![
        ("EC2LOCAL_LIBVIRT_URI".to_string(), URI.to_string()),
        ("EC2LOCAL_POOL_NAME".to_string(), "ec2-bench-closed".to_string()),
    ];
    env.extend(common::own_network("dd", 85));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let svc = Service::start(&closed.join("data"), &env);
    import_test_image(&svc, &bench).await;

    let (status, health) = get_json(&svc.api("/health")).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["data_dir"]["reachable"], false, "{health}");
    let fix = health["data_dir"]["fix"].as_str().unwrap();
    assert!(fix.starts_with("setfacl -m u:libvirt-qemu:x ") && fix.contains(&*closed.to_string_lossy()), "{fix}");
    assert!(health["message"].as_str().unwrap().contains("setfacl"), "{health}");
    assert!(svc.stderr().contains("launches are refused until the data dir is reachable"));

    let (status, refused) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!((status, refused["code"].as_str()), (503, Some("DataDirUnreachable")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("setfacl"), "{refused}");
    let (_, list) = get_json(&svc.api("/instances?include_terminated=true")).await;
    assert!(list.as_array().unwrap().is_empty(), "a refused launch was recorded: {list}");

    // The fix the service printed, applied as printed, lets launches through.
    let command: Vec<&str> = fix.split("   (").next().unwrap().split_whitespace().collect();
    run(command[0], &command[1..]);
    wait_for("health 200 after the fix", SETTLE, Duration::from_millis(500), || {
        let url = svc.api("/health");
        async move { (get_json(&url).await.0 == 200).then_some(()) }
    })
    .await;
    let (status, launched) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!(status, 202, "{launched}");
    let id = launched["id"].as_str().unwrap();
    wait_instance(&svc, id, "running", SETTLE, |i| i["state"] == "running").await;
    assert_eq!(delete(&svc.api(&format!("/instances/{id}"))).await, 202);
    wait_instance(&svc, id, "terminated", SETTLE, |i| i["state"] == "terminated" && i["task"].is_null()).await;
}

// REQ-STOR-001, REQ-NET-001, REQ-REL-002
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn stale_pools_are_taken_back_and_live_conflicts_name_the_commands_that_resolve_them() {
    let bench = Bench::from_env();
    let tmp = tempfile::tempdir_in(bench.data_dir.parent().unwrap()).unwrap();
    let define_pool = |name: &str, target: &Path| {
        std::fs::create_dir_all(target).unwrap();
        let xml = tmp.path().join(format!("{name}.xml"));
        let body =
            format!("<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>", target.display());
        std::fs::write(&xml, body).unwrap();
        run("virsh", &["-c", URI, "pool-define", &xml.to_string_lossy()]);
        run("virsh", &["-c", URI, "pool-start", name]);
    };

    // A pool left by an earlier data dir that is gone: taken back, and the log says so.
    let old = tmp.path().join("old-data/storage");
    define_pool("ec2-bench-stale", &old);
    std::fs::remove_dir_all(tmp.path().join("old-data")).unwrap();
    let svc = Service::start(
        &tmp.path().join("data"),
        &[("EC2LOCAL_LIBVIRT_URI", URI), ("EC2LOCAL_POOL_NAME", "ec2-bench-stale")],
    );
    let (status, health) = get_json(&svc.api("/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["storage_pool"]["path"].as_str(), Some(&*svc.data_dir.join("storage").to_string_lossy()));
    assert!(svc.stderr().contains("took back the storage pool name"), "{}", svc.stderr());
    drop(svc);

    // A pool whose target still exists is someone's: left alone, with the exact commands.
    let held = tmp.path().join("held");
    define_pool("ec2-bench-held", &held);
    let svc = Service::start(
        &tmp.path().join("data2"),
        &[("EC2LOCAL_LIBVIRT_URI", URI), ("EC2LOCAL_POOL_NAME", "ec2-bench-held")],
    );
    let (status, health) = get_json(&svc.api("/health")).await;
    assert_eq!(status, 503, "{health}");
    let message = health["message"].as_str().unwrap();
    assert!(message.contains("virsh pool-destroy ec2-bench-held; virsh pool-undefine ec2-bench-held"), "{message}");
    let target = ec2local::storage::pool_target_path(&virsh().pool_dumpxml_inactive("ec2-bench-held").await.unwrap());
    assert_eq!(target.as_deref(), Some(&*held.to_string_lossy()), "the held pool was changed");
    drop(svc);
    // Resolved as the message says, the service takes the name without a restart of libvirt.
    run("virsh", &["-c", URI, "pool-destroy", "ec2-bench-held"]);
    run("virsh", &["-c", URI, "pool-undefine", "ec2-bench-held"]);
    let svc = Service::start(
        &tmp.path().join("data2"),
        &[("EC2LOCAL_LIBVIRT_URI", URI), ("EC2LOCAL_POOL_NAME", "ec2-bench-held")],
    );
    assert_eq!(get_json(&svc.api("/health")).await.0, 200);
    drop(svc);

    // A conflicting network is never changed; health names the commands.
    let net_xml = tmp.path().join("net.xml");
    std::fs::write(
        &net_xml,
        "<network><name>ec2-bench-netheld</name><forward mode='nat'/><bridge name='ec2brheld'/>\
         <ip address='10.77.0.1' netmask='255.255.255.0'/></network>",
    )
    .unwrap();
    run("virsh", &["-c", URI, "net-define", &net_xml.to_string_lossy()]);
    let svc = Service::start(
        &tmp.path().join("data3"),
        &[
            ("EC2LOCAL_LIBVIRT_URI", URI),
            ("EC2LOCAL_POOL_NAME", "ec2-bench-netheld"),
            ("EC2LOCAL_NETWORK_NAME", "ec2-bench-netheld"),
        ],
    );
    let (status, health) = get_json(&svc.api("/health")).await;
    drop(svc);
    run("virsh", &["-c", URI, "net-undefine", "ec2-bench-netheld"]);
    for pool in ["ec2-bench-stale", "ec2-bench-held", "ec2-bench-netheld"] {
        let _ = Command::new("virsh").args(["-c", URI, "pool-destroy", pool]).output();
        let _ = Command::new("virsh").args(["-c", URI, "pool-undefine", pool]).output();
    }
    assert_eq!(status, 503, "{health}");
    let message = health["message"].as_str().unwrap();
    assert!(message.contains("virsh net-destroy ec2-bench-netheld; virsh net-undefine ec2-bench-netheld"), "{message}");
}
