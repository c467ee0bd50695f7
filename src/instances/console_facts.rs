//! What a guest's serial console says for its status check (issue 16): how far
//! cloud-init got in the current boot, and the host keys cloud-init printed. libvirt
//! appends every boot to the same log, so cloud-init's progress is read only after the
//! last boot's start; the host keys are printed on the first boot only (and the disk keeps
//! them), so the last complete block anywhere in the log counts.

use super::status_check::CloudInit;
use crate::guest_ssh::HostKey;

const KEYS_BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
const KEYS_END: &str = "-----END SSH HOST KEY KEYS-----";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsoleFacts {
    pub cloud_init: CloudInit,
    /// The host keys of cloud-init's last complete `SSH HOST KEY KEYS` block.
    pub host_keys: Vec<HostKey>,
}

pub fn read(console: &str) -> ConsoleFacts {
    ConsoleFacts { cloud_init: cloud_init(current_boot(console)), host_keys: host_keys(console) }
}

/// The text from the start of the last boot: its kernel banner or cloud-init's first
/// stage, whichever came last (the kernel's may not reach the serial console).
fn current_boot(console: &str) -> &str {
    let mut start = 0;
    let mut at = 0;
    for line in console.split_inclusive('\n') {
        let text = without_timestamp(line);
        if text.starts_with("Linux version ") || line.contains(" running 'init-local' at ") {
            start = at;
        }
        at += line.len();
    }
    &console[start..]
}

/// A kernel line without its `[    0.000000] ` prefix.
fn without_timestamp(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
        Some((stamp, text)) if stamp.trim().parse::<f64>().is_ok() => text,
        _ => line,
    }
}

fn cloud_init(boot: &str) -> CloudInit {
    // `Cloud-init v. 22.4.2 finished at Thu, 26 Nov 2026 10:00:00 +0000. Datasource …`
    if boot.lines().any(|l| l.contains("Cloud-init v. ") && l.contains(" finished at ")) {
        CloudInit::Finished
    } else if boot.to_ascii_lowercase().contains("cloud-init") {
        CloudInit::Running
    } else {
        CloudInit::Absent
    }
}

fn host_keys(console: &str) -> Vec<HostKey> {
    let Some(begin) = console.rfind(KEYS_BEGIN) else { return Vec::new() };
    let block = &console[begin + KEYS_BEGIN.len()..];
    let Some(end) = block.find(KEYS_END) else { return Vec::new() };
    block[..end].lines().filter_map(key_in_line).collect()
}

/// The key in a console line, whatever prefix the console put before it.
fn key_in_line(line: &str) -> Option<HostKey> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).find_map(|pair| HostKey::parse(&pair.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST_BOOT: &str = include_str!("../../tests/fixtures/console/debian12-first-boot.log");

    const SECOND_BOOT_STARTING: &str = "\r\nSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n\
        [    0.000000] Linux version 6.1.0-26-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\r\n\
        [    2.110000] systemd[1]: Detected virtualization qemu.\r\n";

    const SECOND_BOOT_CLOUD_INIT: &str = "[    4.498000] cloud-init[243]: Cloud-init v. 22.4.2 running 'init-local' at \
        Thu, 26 Nov 2026 11:00:20 +0000. Up 4.39 seconds.\r\n";

    const SECOND_BOOT_FINISHED: &str = "[   21.003000] cloud-init[440]: Cloud-init v. 22.4.2 finished at \
        Thu, 26 Nov 2026 11:00:40 +0000. Datasource DataSourceNoCloud [seed=/dev/sr0][dsmode=net].  Up 20.90 seconds\r\n";

    #[test]
    fn a_finished_first_boot_shows_cloud_init_done_and_its_three_host_keys() {
        let facts = read(FIRST_BOOT);
        assert_eq!(facts.cloud_init, CloudInit::Finished);
        let keys: Vec<&str> = facts.host_keys.iter().map(|k| k.openssh.split(' ').next().unwrap()).collect();
        assert_eq!(keys, ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]);
        // The same fingerprints cloud-init printed (and `ssh-keygen -l` gives), comments dropped.
        assert_eq!(facts.host_keys[1].fingerprint, "SHA256:1HGR1WWJauoEou0mcKRvl7kU0e+ZSBXDDKaN74X3fto");
        assert!(facts.host_keys.iter().all(|k| !k.openssh.contains("root@")));
    }

    #[test]
    fn a_first_boot_cut_short_shows_cloud_init_running_and_no_keys_yet() {
        let before_keys = &FIRST_BOOT[..FIRST_BOOT.find(KEYS_BEGIN).unwrap()];
        assert_eq!(read(before_keys), ConsoleFacts { cloud_init: CloudInit::Running, host_keys: vec![] });
        // A block still being written is not a block.
        let half_block = &FIRST_BOOT[..FIRST_BOOT.find(KEYS_END).unwrap()];
        assert_eq!(read(half_block).host_keys, []);
    }

    #[test]
    fn only_the_current_boot_counts_for_cloud_init_while_the_keys_stay() {
        let rebooting = format!("{FIRST_BOOT}{SECOND_BOOT_STARTING}");
        let facts = read(&rebooting);
        assert_eq!(facts.cloud_init, CloudInit::Absent, "the last boot has not reached cloud-init yet");
        assert_eq!(facts.host_keys.len(), 3, "printed on the first boot, still the guest's");
        let started = format!("{rebooting}{SECOND_BOOT_CLOUD_INIT}");
        assert_eq!(read(&started).cloud_init, CloudInit::Running);
        assert_eq!(read(&format!("{started}{SECOND_BOOT_FINISHED}")).cloud_init, CloudInit::Finished);
        // Without the kernel's banner on the console, cloud-init's first stage marks the boot.
        let quiet = format!("{FIRST_BOOT}\r\n{SECOND_BOOT_CLOUD_INIT}");
        assert_eq!(read(&quiet).cloud_init, CloudInit::Running);
    }

    #[test]
    fn a_console_without_cloud_init_shows_none() {
        assert_eq!(read(""), ConsoleFacts::default());
        assert_eq!(read(SECOND_BOOT_STARTING).cloud_init, CloudInit::Absent);
        assert_eq!(read("Debian GNU/Linux 12 web ttyS0\r\n\r\nweb login: ").cloud_init, CloudInit::Absent);
    }

    #[test]
    fn keys_are_found_behind_prefixes_and_junk_is_skipped() {
        let ed25519 = FIRST_BOOT.lines().find(|l| l.starts_with("ssh-ed25519 ")).unwrap();
        let block =
            format!("{KEYS_BEGIN}\n[   30.1] cloud-init[600]: {ed25519}\nssh-ed25519 garbage root@x\n\n{KEYS_END}\n");
        let keys = read(&block).host_keys;
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].fingerprint, "SHA256:1HGR1WWJauoEou0mcKRvl7kU0e+ZSBXDDKaN74X3fto");
        // The last complete block wins: a later boot that regenerated keys printed them again.
        let twice = format!("{FIRST_BOOT}\n{block}");
        assert_eq!(read(&twice).host_keys, keys);
    }

    #[test]
    fn kernel_timestamps_are_only_stripped_when_they_are_timestamps() {
        assert_eq!(without_timestamp("[    0.000000] Linux version 6.1"), "Linux version 6.1");
        assert_eq!(without_timestamp("[  OK  ] Linux version in a unit name"), "[  OK  ] Linux version in a unit name");
        assert_eq!(without_timestamp("Linux version 6.1"), "Linux version 6.1");
    }
}
