//! The EC2 Query API driven by the real AWS clients: boto3 and the aws CLI (installed by
//! scripts/ec2-clients) run tests/ec2/test_ec2.py against a service on the bench, with
//! real guests. Every response they get is also checked against botocore's model.

mod common;

use std::process::Command;

use common::{Bench, Service, import_test_image};

const URI: &str = "qemu:///system";

// REQ-INST-001, REQ-INST-003, REQ-INST-004, REQ-INST-009, REQ-INST-010, REQ-INST-011, REQ-INST-012, REQ-SSH-001, REQ-SSH-006, REQ-IMG-004
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn boto3_and_the_aws_cli_drive_real_guests() {
    let bench = Bench::from_env();
    let clients = std::env::var("EC2LOCAL_AWS_CLIENTS").expect("EC2LOCAL_AWS_CLIENTS: run through scripts/test");
    let tmp = bench.data_dir.with_file_name("ec2-api");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let mut env = vec![
        ("EC2LOCAL_LIBVIRT_URI".to_string(), URI.to_string()),
        ("EC2LOCAL_POOL_NAME".to_string(), "ec2-bench-ec2api".to_string()),
        ("EC2LOCAL_MONITOR_INTERVAL_SECS".to_string(), "2".to_string()),
    ];
    env.extend(common::own_network("ec2api", 86));
    // Three addresses: a run of five gets three (tests/ec2/test_ec2.py, test_10).
    env.push(("EC2LOCAL_DHCP_RANGE".to_string(), "10.86.0.10-10.86.0.12".to_string()));
    // A reboot asked while the guest still boots is reset after this, not a minute.
    env.push(("EC2LOCAL_STOP_TIMEOUT_SECS".to_string(), "20".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let service = Service::start(&tmp.join("data"), &env);
    let image = import_test_image(&service, &bench).await;

    let suite = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ec2/test_ec2.py");
    let output = Command::new(format!("{clients}/bin/python"))
        .args(["-m", "unittest", "-v", "--failfast"])
        .arg(suite)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ec2"))
        .env("EC2LOCAL_ENDPOINT", &service.url)
        .env("EC2LOCAL_IMAGE_ID", &image)
        .env("EC2LOCAL_TMP", &tmp)
        .env("EC2LOCAL_AWS_CLI", format!("{clients}/bin/aws"))
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("the clients' Python");
    let report = format!(
        "{}\n{}\n--- service log ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        service.stderr()
    );
    assert!(output.status.success(), "the EC2 client tests failed:\n{report}");
    println!("{report}");
    common::assert_nothing_orphaned(&service, "ec2-bench-ec2api").await;
}
