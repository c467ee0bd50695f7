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
  };
}

/**
 * The status check's badge (issue 16): its text and tooltip, or null when the instance
 * has no status check (it is not running).
 */
export function statusBadge(instance) {
  const { status, status_reason: reason } = instance;
  if (!status || status === "not-applicable") return null;
  return { label: status, title: reason || (status === "ok" ? "SSH answers and cloud-init has finished" : status) };
}

/**
 * Why the terminal cannot be opened, or null when it can: only once the instance runs
 * and its status check is ok (SSH answers).
 */
export function connectBlocker(instance) {
  const { state, task, status, status_reason: reason } = instance;
  if (state !== "running" || task === "terminating") return `The terminal needs the instance running; it is ${task || state}.`;
  if (status === "ok") return null;
  const why = reason ? `: ${reason}` : "";
  return status === "impaired" ? `The instance is not reachable${why}.` : `The instance is not ready yet${why}.`;
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

/** A short duration for an ETA: "45 s", "3 min", "1 h 5 min". */
export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const minutes = Math.round(s / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h${minutes % 60 ? ` ${minutes % 60} min` : ""}`;
}

/** "312 MiB / 640 MiB · 12.3 MiB/s · 27 s left" for a pull in progress. */
export function pullProgressText(pull) {
  if (pull.state === "verifying") return "verifying the checksum";
  const parts = [pull.bytes_total ? `${formatBytes(pull.bytes_done)} / ${formatBytes(pull.bytes_total)}` : formatBytes(pull.bytes_done)];
  if (pull.bytes_per_second > 0) parts.push(`${formatBytes(pull.bytes_per_second)}/s`);
  if (pull.eta_seconds != null) parts.push(`${formatDuration(pull.eta_seconds)} left`);
  return `downloading ${parts.join(" · ")}`;
}

/**
 * How the images table shows an image (`availability` from GET /api/images). A catalog
 * image nobody pulled yet is an ordinary state with a Pull button, not an error; a
 * failed pull is an error that a pull can fix; a lost file is an error only.
 */
export function imageStatus(image) {
  switch (image.availability) {
    case "available":
      return { kind: "available", text: "available", canPull: false, percent: null };
    case "not-downloaded":
      return { kind: "not-downloaded", text: "not downloaded", canPull: true, percent: null };
    case "downloading":
      return { kind: "downloading", text: image.pull ? pullProgressText(image.pull) : "downloading", canPull: false, percent: pullPercent(image.pull) };
    case "pull-failed":
      return { kind: "error", text: `pull failed: ${(image.pull && image.pull.error) || image.unavailable_reason}`, canPull: true, percent: null };
    default:
      return { kind: "error", text: image.unavailable_reason || image.availability, canPull: false, percent: null };
  }
}

/** The launch form's option for an image: only an available one can be picked. */
export function imageChoice(image) {
  const status = imageStatus(image);
  if (status.kind === "available") return { label: image.name, disabled: false };
  if (status.kind === "not-downloaded") return { label: `${image.name} (not downloaded: pull it on the Images page)`, disabled: true };
  if (status.kind === "downloading") return { label: `${image.name} (downloading${status.percent == null ? "" : ` ${status.percent}%`})`, disabled: true };
  return { label: `${image.name} (unavailable: ${status.text})`, disabled: true };
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
