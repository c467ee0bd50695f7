// Unit tests of the UI's pure helpers (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { allowedActions, closeMessage, describeType, formatBytes, forwardRequest, forwardUrl, imageNameFromFile, launchBlockers, parseControl, privateKeyProblem, pullPercent, uploadProgress } from "../../src/lib.js";

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
  assert.deepEqual(allowedActions("running"), { start: false, stop: true, reboot: true, terminate: true, connect: true });
  assert.deepEqual(allowedActions("stopped"), { start: true, stop: false, reboot: false, terminate: true, connect: false });
  assert.deepEqual(allowedActions("pending"), { start: false, stop: false, reboot: false, terminate: true, connect: false });
  assert.equal(allowedActions("terminated").terminate, false);
  // Work in flight: only terminate, and not twice.
  assert.deepEqual(allowedActions("running", "rebooting"), { start: false, stop: false, reboot: false, terminate: true, connect: true });
  assert.deepEqual(allowedActions("error", "cleaning-up"), { start: false, stop: false, reboot: false, terminate: true, connect: false });
  assert.equal(allowedActions("running", "terminating").terminate, false);
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
