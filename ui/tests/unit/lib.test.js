// Unit tests of the UI's pure helpers (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { allowedActions, closeMessage, connectBlocker, describeType, formatBytes, formatDuration, forwardRequest, forwardUrl, imageChoice, imageNameFromFile, imageStatus, launchBlockers, parseControl, privateKeyProblem, pullPercent, pullProgressText, statusBadge, uploadProgress } from "../../src/lib.js";

test("formatBytes gives short human figures", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(512 * 1024 * 1024), "512 MiB");
  assert.equal(formatBytes(1.5 * 1024 ** 3), "1.5 GiB");
  assert.equal(formatBytes(null), "–");
});

test("instance types are described with vCPU, RAM and disk", () => {
  assert.equal(describeType({ name: "t2.nano", vcpus: 1, memory_mib: 512, disk_gib: 8 }), "t2.nano — 1 vCPU, 512 MiB RAM, 8 GiB disk");
  assert.equal(describeType({ name: "t2.large", vcpus: 2, memory_mib: 8192, disk_gib: 30 }), "t2.large — 2 vCPU, 8 GiB RAM, 30 GiB disk");
});

test("actions follow the API's state rules", () => {
  assert.deepEqual(allowedActions("running"), { start: false, stop: true, reboot: true, terminate: true });
  assert.deepEqual(allowedActions("stopped"), { start: true, stop: false, reboot: false, terminate: true });
  assert.deepEqual(allowedActions("pending"), { start: false, stop: false, reboot: false, terminate: true });
  assert.equal(allowedActions("terminated").terminate, false);
  // Work in flight: only terminate, and not twice.
  assert.deepEqual(allowedActions("running", "rebooting"), { start: false, stop: false, reboot: false, terminate: true });
  assert.deepEqual(allowedActions("error", "cleaning-up"), { start: false, stop: false, reboot: false, terminate: true });
  assert.equal(allowedActions("running", "terminating").terminate, false);
});

// issue 16: status checks
test("the status badge shows the check with its reason, and nothing when it does not apply", () => {
  assert.deepEqual(statusBadge({ status: "initializing", status_reason: "waiting for SSH" }), { label: "initializing", title: "waiting for SSH" });
  assert.deepEqual(statusBadge({ status: "impaired", status_reason: "SSH stopped answering" }), { label: "impaired", title: "SSH stopped answering" });
  assert.deepEqual(statusBadge({ status: "ok", status_reason: null }), { label: "ok", title: "SSH answers and cloud-init has finished" });
  assert.equal(statusBadge({ status: "not-applicable", status_reason: null }), null);
  assert.equal(statusBadge({ state: "running" }), null, "a service without status checks");
});

test("the terminal opens only once the status check is ok, and says why not", () => {
  const running = { state: "running", task: null };
  assert.equal(connectBlocker({ ...running, status: "ok" }), null);
  assert.equal(connectBlocker({ ...running, status: "initializing", status_reason: "waiting for cloud-init to finish" }),
    "The instance is not ready yet: waiting for cloud-init to finish.");
  assert.equal(connectBlocker({ ...running, status: "impaired", status_reason: "SSH did not answer within 300 s" }),
    "The instance is not reachable: SSH did not answer within 300 s.");
  assert.equal(connectBlocker({ state: "stopped", task: null, status: "not-applicable" }), "The terminal needs the instance running; it is stopped.");
  assert.equal(connectBlocker({ state: "running", task: "terminating", status: "not-applicable" }), "The terminal needs the instance running; it is terminating.");
  assert.equal(connectBlocker({ state: "running", task: "rebooting", status: "initializing", status_reason: "waiting for SSH" }),
    "The instance is not ready yet: waiting for SSH.");
});

test("launch blockers mirror the service's limits (REQ-LIM-001, REQ-LIM-002)", () => {
  const gib = 1024 ** 3;
  const host = { memory_available_bytes: 8 * gib, disk_available_bytes: 100 * gib, min_available_memory_mib: 4096, disk_headroom_gib: 5 };
  const nano = { name: "t2.nano", disk_gib: 8 };
  assert.deepEqual(launchBlockers(host, nano), []);
  assert.equal(launchBlockers({ ...host, memory_available_bytes: 2 * gib }, nano).length, 1);
  assert.match(launchBlockers({ ...host, disk_available_bytes: 13 * gib }, nano)[0], /disk/);
  assert.deepEqual(launchBlockers(null, nano), []);
});

test("terminal control messages are recognised, bytes are not", () => {
  assert.deepEqual(parseControl('{"type":"exit","status":0}'), { type: "exit", status: 0 });
  assert.equal(parseControl("plain text"), null);
  assert.equal(parseControl('{"no":"type"}'), null);
  assert.equal(closeMessage(1000, ""), "Session ended.");
  assert.equal(closeMessage(4409, "instance i-1 is stopped"), "Session closed: instance i-1 is stopped");
});

test("pull progress is a percentage when the size is known", () => {
  assert.equal(pullPercent({ bytes_done: 50, bytes_total: 200 }), 25);
  assert.equal(pullPercent({ bytes_done: 50 }), null);
  assert.equal(pullPercent(null), null);
});

test("the key dialog tells a public key, an empty field and a non-key apart from a private key", () => {
  const pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACA=\n-----END OPENSSH PRIVATE KEY-----\n";
  assert.equal(privateKeyProblem(pem), null);
  assert.equal(privateKeyProblem("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"), null);
  assert.match(privateKeyProblem(""), /Paste the private key/);
  assert.match(privateKeyProblem("ssh-ed25519 AAAAC3Nza you@host"), /public key/);
  assert.match(privateKeyProblem("hello"), /BEGIN OPENSSH PRIVATE KEY/);
});

test("an uploaded file's name becomes a valid image name", () => {
  assert.equal(imageNameFromFile("jammy-server-cloudimg-amd64.img"), "jammy-server-cloudimg-amd64");
  assert.equal(imageNameFromFile("My Disk (copy).qcow2"), "My-Disk-copy-");
  assert.equal(imageNameFromFile(".hidden.raw"), "hidden");
  assert.equal(imageNameFromFile("x".repeat(80) + ".qcow2").length, 64);
});

test("upload progress is shown in bytes and percent", () => {
  assert.deepEqual(uploadProgress(512 * 1024 * 1024, 1024 * 1024 * 1024), { percent: 50, text: "512 MiB / 1.0 GiB (50%)" });
  assert.equal(uploadProgress(0, 0).percent, 0);
});

test("durations are short: seconds, minutes, hours", () => {
  assert.equal(formatDuration(44.6), "45 s");
  assert.equal(formatDuration(185), "3 min");
  assert.equal(formatDuration(3900), "1 h 5 min");
  assert.equal(formatDuration(7200), "2 h");
  assert.equal(formatDuration(null), "–");
  assert.equal(formatDuration(Infinity), "–");
});

test("a pull in progress shows bytes, rate and time left", () => {
  const mib = 1024 * 1024;
  const pull = { state: "downloading", bytes_done: 312 * mib, bytes_total: 640 * mib, bytes_per_second: 12.3 * mib, eta_seconds: 27 };
  assert.equal(pullProgressText(pull), "downloading 312 MiB / 640 MiB · 12.3 MiB/s · 27 s left");
  assert.equal(pullProgressText({ state: "downloading", bytes_done: 0, bytes_per_second: 0 }), "downloading 0 B");
  assert.equal(pullProgressText({ ...pull, state: "verifying" }), "verifying the checksum");
});

const catalogImage = { name: "ubuntu-22.04", in_catalog: true, available: false };

test("a catalog image never pulled is not downloaded, with a Pull button, not an error", () => {
  const status = imageStatus({ ...catalogImage, availability: "not-downloaded", unavailable_reason: "image ubuntu-22.04 is not downloaded: run `ec2local images pull ubuntu-22.04`" });
  assert.deepEqual(status, { kind: "not-downloaded", text: "not downloaded", canPull: true, percent: null });
  assert.deepEqual(imageChoice({ ...catalogImage, availability: "not-downloaded" }), { label: "ubuntu-22.04 (not downloaded: pull it on the Images page)", disabled: true });
});

test("a pull in progress shows its progress and cannot be started twice", () => {
  const pull = { state: "downloading", bytes_done: 50, bytes_total: 200, bytes_per_second: 0 };
  const status = imageStatus({ ...catalogImage, availability: "downloading", pull });
  assert.equal(status.kind, "downloading");
  assert.equal(status.percent, 25);
  assert.equal(status.canPull, false);
  assert.match(status.text, /^downloading 50 B \/ 200 B$/);
  assert.equal(imageChoice({ ...catalogImage, availability: "downloading", pull }).label, "ubuntu-22.04 (downloading 25%)");
});

test("real problems are errors; a failed pull can be tried again, a lost file cannot", () => {
  const failed = imageStatus({ ...catalogImage, availability: "pull-failed", pull: { state: "failed", error: "checksum mismatch" } });
  assert.deepEqual(failed, { kind: "error", text: "pull failed: checksum mismatch", canPull: true, percent: null });
  const lost = imageStatus({ name: "mine", in_catalog: false, available: false, availability: "missing-file", unavailable_reason: "the file of image mine is missing: /x" });
  assert.deepEqual(lost, { kind: "error", text: "the file of image mine is missing: /x", canPull: false, percent: null });
  assert.equal(imageChoice({ name: "mine", availability: "missing-file", unavailable_reason: "gone" }).label, "mine (unavailable: gone)");
});

test("an available image can be launched from and is not pulled again", () => {
  assert.deepEqual(imageStatus({ name: "debian", available: true, availability: "available" }), { kind: "available", text: "available", canPull: false, percent: null });
  assert.deepEqual(imageChoice({ name: "debian", available: true, availability: "available" }), { label: "debian", disabled: false });
});

// issue 16: port forwarding
test("a forward is linked at its bind address and host port", () => {
  assert.equal(forwardUrl({ bind_address: "127.0.0.1", host_port: 8080 }), "http://127.0.0.1:8080/");
  assert.equal(forwardUrl({ bind_address: "0.0.0.0", host_port: 8080 }), "http://127.0.0.1:8080/");
  assert.equal(forwardUrl({ bind_address: "::1", host_port: 9000 }), "http://[::1]:9000/");
  assert.equal(forwardUrl({ bind_address: "192.168.1.5", host_port: 80 }), "http://192.168.1.5:80/");
});

test("the Ports form gives a request body or a problem to fix", () => {
  assert.deepEqual(forwardRequest("80", ""), { body: { instance_port: 80 } });
  assert.deepEqual(forwardRequest(" 80 ", "8080"), { body: { host_port: 8080, instance_port: 80 } });
  assert.deepEqual(forwardRequest("65535", null), { body: { instance_port: 65535 } });
  for (const bad of ["", "0", "65536", "80.5", "http", "-1"]) {
    assert.match(forwardRequest(bad, "").error, /^Instance port/, bad);
  }
  for (const bad of ["0", "70000", "x"]) {
    assert.match(forwardRequest("80", bad).error, /^Host port/, bad);
  }
});
