// Pure helpers of the UI, unit-tested with node --test (tests/unit).

/** Bytes as a short human figure: 512 MiB, 7.8 GiB. */
export function formatBytes(bytes) {
  if (bytes == null || Number.isNaN(bytes)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** Memory of an instance type for a select: "t2.micro — 1 vCPU, 1 GiB, 8 GiB disk". */
export function describeType(t) {
  const memory = t.memory_mib >= 1024 ? `${t.memory_mib / 1024} GiB` : `${t.memory_mib} MiB`;
  return `${t.name} — ${t.vcpus} vCPU, ${memory} RAM, ${t.disk_gib} GiB disk`;
}

/**
 * Which actions a state allows, as the API does (409 otherwise). While ec2local works on
 * the instance (`task`), only terminate is taken, and not twice.
 */
export function allowedActions(state, task = null) {
  const idle = !task;
  return {
    start: idle && state === "stopped",
    stop: idle && state === "running",
    reboot: idle && state === "running",
    terminate: state !== "terminated" && task !== "terminating",
    connect: state === "running" && task !== "terminating",
  };
}

/**
 * Whether the host can take a new instance of `type` given /api/host, and why not.
 * Mirrors the service's own check (REQ-LIM-001/002).
 */
export function launchBlockers(host, type) {
  const reasons = [];
  if (!host) return reasons;
  const mib = 1024 * 1024;
  const gib = 1024 * mib;
  if (host.memory_available_bytes / mib < host.min_available_memory_mib) {
    reasons.push(`only ${formatBytes(host.memory_available_bytes)} of memory available; ${host.min_available_memory_mib} MiB needed`);
  }
  if (type) {
    const needed = (type.disk_gib + host.disk_headroom_gib) * gib;
    if (host.disk_available_bytes <= needed) {
      reasons.push(`only ${formatBytes(host.disk_available_bytes)} of disk free; more than ${type.disk_gib + host.disk_headroom_gib} GiB needed`);
    }
  }
  return reasons;
}

/** A control message from the terminal WebSocket, or null when it is not one. */
export function parseControl(text) {
  try {
    const msg = JSON.parse(text);
    return msg && typeof msg.type === "string" ? msg : null;
  } catch {
    return null;
  }
}

/** The message a closed terminal shows. */
export function closeMessage(code, reason) {
  if (code === 1000) return "Session ended.";
  if (code === 1006) return "Connection lost.";
  return reason ? `Session closed: ${reason}` : `Session closed (code ${code}).`;
}

/** Percentage of a pull, or null when the size is unknown. */
export function pullPercent(pull) {
  if (!pull || !pull.bytes_total) return null;
  return Math.min(100, Math.round((100 * pull.bytes_done) / pull.bytes_total));
}

/**
 * What is wrong with a private key pasted or picked in the terminal's key dialog, said so
 * a person can fix it, or null when it looks like one. The service reads it for real.
 */
export function privateKeyProblem(text) {
  const key = (text || "").trim();
  if (!key) return "Paste the private key, or pick its file.";
  if (/^(ssh-|ecdsa-|sk-)/.test(key) || key.includes("PUBLIC KEY")) {
    return "This is a public key. The terminal needs the private key: the file without .pub (for example ~/.ssh/id_ed25519).";
  }
  if (key.startsWith("PuTTY-User-Key-File")) return null;
  if (!/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]+-----END [A-Z0-9 ]*PRIVATE KEY-----/.test(key)) {
    return "Expected a private key file: -----BEGIN OPENSSH PRIVATE KEY----- … -----END OPENSSH PRIVATE KEY-----.";
  }
  return null;
}

/** An image name from a file name: `jammy-server-cloudimg-amd64.img` → `jammy-server-cloudimg-amd64`. */
export function imageNameFromFile(fileName) {
  const stem = (fileName || "").replace(/\.(qcow2|img|raw)$/i, "");
  return stem.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[.-]+/, "").slice(0, 64);
}

/** "12.5 MiB / 140 MiB (9%)" for an upload in progress. */
export function uploadProgress(loaded, total) {
  const percent = total ? Math.floor((100 * loaded) / total) : 0;
  return { percent, text: `${formatBytes(loaded)} / ${formatBytes(total)} (${percent}%)` };
}

/**
 * The URL a forward is reached at: its bind address and host port. A forward bound to
 * every address (0.0.0.0, ::) is reached on this machine through 127.0.0.1.
 */
export function forwardUrl(forward) {
  const address = forward.bind_address === "0.0.0.0" || forward.bind_address === "::" || !forward.bind_address
    ? "127.0.0.1" : forward.bind_address;
  const host = address.includes(":") ? `[${address}]` : address;
  return `http://${host}:${forward.host_port}/`;
}

/** A port typed in a form: a whole number from 1 to 65535, or null. */
function portValue(text) {
  const value = String(text ?? "").trim();
  if (!/^\d{1,5}$/.test(value)) return null;
  const port = Number(value);
  return port >= 1 && port <= 65535 ? port : null;
}

/**
 * The body of POST /api/instances/{id}/forwards from the Ports form, or the problem a
 * person can fix. The host port may be left empty: the service picks a free one.
 */
export function forwardRequest(instancePort, hostPort) {
  const instance = portValue(instancePort);
  if (instance === null) return { error: "Instance port: a number from 1 to 65535." };
  if (String(hostPort ?? "").trim() === "") return { body: { instance_port: instance } };
  const host = portValue(hostPort);
  if (host === null) return { error: "Host port: a number from 1 to 65535, or empty for a free one." };
  return { body: { host_port: host, instance_port: instance } };
}
