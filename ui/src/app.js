// The ec2local web UI: hash-routed pages over the JSON API. No framework; every piece of
// user data goes into the page as text (el()), never as HTML.
import { allowedActions, closeMessage, connectBlocker, describeType, formatBytes, forwardRequest, forwardUrl, imageChoice, imageNameFromFile, imageStatus, launchBlockers, parseControl, privateKeyProblem, statusBadge, uploadProgress } from "./lib.js";

const view = document.getElementById("view");
let refreshTimer = null;
let host = null;
let types = [];

// --- small DOM and API helpers --------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** What the user is asked before an action: every action changes a running guest. */
function confirmation(verb, i) {
  const what = `${i.id}${i.name ? ` (${i.name})` : ""}`;
  switch (verb) {
    case "terminate": return `Terminate ${what}? Its disk is deleted.`;
    case "stop": return `Stop ${what}? Its guest OS is shut down.`;
    case "reboot": return `Reboot ${what}? Its guest OS restarts.`;
    default: return `Start ${what}?`;
  }
}

function toast(message, kind = "ok") {
  const node = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  document.getElementById("toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 9000 : 4000);
}

async function api(method, path, body) {
  const response = await fetch(`/api${path}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error(data && data.message ? data.message : `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.code = data && data.code;
    throw error;
  }
  return data;
}

/** Runs an action with its button disabled, and says how it went. */
async function act(button, work, success) {
  if (button) button.disabled = true;
  try {
    const result = await work();
    if (success) toast(typeof success === "function" ? success(result) : success);
    return result;
  } catch (error) {
    toast(error.message, "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function every(ms, fn) {
  clearInterval(refreshTimer);
  fn();
  refreshTimer = setInterval(fn, ms);
}

// --- header: host resources and libvirt banner ----------------------------------------

async function refreshHost() {
  const hostNode = document.getElementById("host");
  try {
    host = await api("GET", "/host");
    const blockers = launchBlockers(host, types.find((t) => t.name === "t2.nano"));
    hostNode.replaceChildren(
      `RAM ${formatBytes(host.memory_used_bytes)} / ${formatBytes(host.memory_total_bytes)} used · `,
      `Disk ${formatBytes(host.disk_available_bytes)} free of ${formatBytes(host.disk_total_bytes)}`,
      blockers.length ? el("span", { class: "warn", title: blockers.join("; ") }, " · new instances would be refused") : "",
    );
  } catch {
    hostNode.textContent = "host resources unavailable";
  }
  const banner = document.getElementById("banner");
  try {
    const response = await fetch("/api/health");
    const health = await response.json();
    if (response.status === 503) {
      const what = health.status === "unavailable" ? "libvirt is unreachable" : "ec2local is not fully set up";
      banner.textContent = `${what}: ${health.message || "unavailable"}`;
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  } catch {
    banner.textContent = "ec2local is not answering.";
    banner.hidden = false;
  }
}

// --- instances ------------------------------------------------------------------------

async function instancesPage() {
  const [images, keys] = await Promise.all([api("GET", "/images"), api("GET", "/key-pairs")]);
  types = types.length ? types : await api("GET", "/instance-types");
  const typeSelect = el("select", { name: "instance_type", required: true },
    types.map((t) => el("option", { value: t.name, selected: t.name === "t2.micro" }, describeType(t))));
  const imageSelect = el("select", { name: "image_id", required: true },
    images.map((i) => { const choice = imageChoice(i); return el("option", { value: i.id, disabled: choice.disabled, title: i.unavailable_reason || i.description }, choice.label); }));
  const firstAvailable = images.find((i) => i.available);
  if (firstAvailable) imageSelect.value = firstAvailable.id;
  const keySelect = el("select", { name: "key_name" }, el("option", { value: "" }, "(none)"),
    keys.map((k) => el("option", { value: k.name }, k.name)));
  const launchButton = el("button", { class: "primary", type: "submit" }, "Launch instance");
  const form = el("form", { class: "grid", "aria-label": "Launch an instance" },
    el("label", {}, "Instance type", typeSelect),
    el("label", {}, "Image", imageSelect),
    el("label", {}, "Name", el("input", { name: "name", maxlength: "255", placeholder: "optional" })),
    el("label", {}, "Key pair", keySelect),
    el("label", { class: "wide" }, "User data (cloud-init)", el("textarea", { name: "user_data", placeholder: "#cloud-config or #!/bin/sh script, optional" })),
    el("div", {}, launchButton));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const body = { instance_type: data.instance_type, image_id: data.image_id };
    for (const key of ["name", "key_name", "user_data"]) if (data[key]) body[key] = data[key];
    const created = await act(launchButton, () => api("POST", "/instances", body), (i) => `Launching ${i.id}`);
    if (created) { form.reset(); refreshInstances(); }
  });

  const tbody = el("tbody");
  const table = el("table", { "aria-label": "Instances" },
    el("thead", {}, el("tr", {}, ["Name", "ID", "Type", "State", "IP address", "Key", "Image", "Launched", "Actions"].map((h) => el("th", {}, h)))),
    tbody);
  view.replaceChildren(el("h1", {}, "Instances"), el("section", { class: "card" }, el("h2", {}, "Launch"), form), table);

  async function refreshInstances() {
    let list;
    try { list = await api("GET", "/instances"); } catch (e) { return; }
    tbody.replaceChildren(...(list.length ? list.map(instanceRow) : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No instances yet."))]));
  }

  function instanceRow(i) {
    const [allowed, badge, blocker] = [allowedActions(i.state, i.task), statusBadge(i), connectBlocker(i)];
    const action = (label, verb, opts = {}) => el("button", {
      type: "button", class: opts.danger ? "danger" : "", disabled: !allowed[verb], "data-action": verb,
      onclick: async (event) => {
        if (!confirm(confirmation(verb, i))) return;
        const request = verb === "terminate" ? api("DELETE", `/instances/${i.id}`) : api("POST", `/instances/${i.id}/${verb}`);
        await act(event.currentTarget, () => request, `${label}: ${i.id}`);
        refreshInstances();
      },
    }, label);
    return el("tr", { "data-id": i.id },
      el("td", {}, el("a", { href: `#/instances/${i.id}` }, i.name || "(no name)")),
      el("td", { class: "mono" }, i.id),
      el("td", {}, i.instance_type),
      el("td", {}, el("span", { class: `state state-${i.state}`, "data-state": i.state }, i.task ? `${i.state} (${i.task})` : i.state), badge ? el("span", { class: `badge status-${badge.label}`, "data-status": badge.label, title: badge.title }, badge.label) : null, i.state_reason ? el("span", { class: "reason" }, i.state_reason) : null),
      el("td", { class: "mono" }, i.ip_address || "–"),
      el("td", {}, i.key_name || "–"),
      el("td", {}, i.image_name),
      el("td", {}, i.launched_at ? new Date(i.launched_at).toLocaleString() : "–"),
      el("td", {}, el("div", { class: "actions" },
        el("a", { href: `#/terminal/${i.id}`, class: "connect", "aria-disabled": String(!!blocker), title: blocker || "Open a terminal", onclick: (e) => { if (blocker) e.preventDefault(); } }, el("button", { type: "button", disabled: !!blocker, tabindex: "-1" }, "Connect")),
        action("Start", "start"), action("Stop", "stop"), action("Reboot", "reboot"), action("Terminate", "terminate", { danger: true }))));
  }

  every(2000, refreshInstances);
}

async function instanceDetailPage(id) {
  const fields = el("dl", { class: "fields" });
  const consoleOut = el("pre", { class: "console", "aria-label": "Console output" }, "…");
  const ports = portsSection(id);
  view.replaceChildren(el("h1", {}, `Instance ${id}`), el("p", {}, el("a", { href: "#/instances" }, "← all instances")),
    el("section", { class: "card" }, fields), ports.node, el("h2", {}, "Console output"), consoleOut);
  async function refresh() {
    ports.refresh();
    try {
      const i = await api("GET", `/instances/${id}`);
      const rows = [["ID", i.id], ["Name", i.name || "–"], ["Type", i.instance_type], ["vCPUs", i.vcpus], ["Memory", `${i.memory_mib} MiB`],
        ["Disk", `${i.disk_gib} GiB`], ["State", i.state], ["State reason", i.state_reason || "–"], ["IP address", i.ip_address || "–"],
        ["Status", i.status_reason ? `${i.status} (${i.status_reason})` : i.status], ["Reachable since", i.reachable_at || "–"], ["SSH host keys", i.host_keys.join("\n") || "–"],
        ["MAC address", i.mac_address], ["Key pair", i.key_name || "–"], ["Image", `${i.image_name} (${i.image_id})`], ["Login user", i.login_user],
        ["Created", i.created_at], ["Launched", i.launched_at || "–"], ["Terminated", i.terminated_at || "–"]];
      fields.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
      const out = await api("GET", `/instances/${id}/console-output`);
      consoleOut.textContent = out.output || "(no output yet)";
    } catch (e) { toast(e.message, "error"); clearInterval(refreshTimer); }
  }
  every(4000, refresh);
}

// --- ports (issue 16: port forwarding) --------------------------------------------------

/**
 * The Ports section of an instance's page: its forwarded ports, each linked at
 * http://127.0.0.1:PORT/ with a remove button, and a form to forward another.
 */
function portsSection(id) {
  const tbody = el("tbody");
  const problem = el("p", { class: "problem", role: "alert" });
  const instancePort = el("input", { name: "instance_port", inputmode: "numeric", required: true, placeholder: "80" });
  const hostPort = el("input", { name: "host_port", inputmode: "numeric", placeholder: "a free port" });
  const addButton = el("button", { class: "primary", type: "submit" }, "Forward");
  const form = el("form", { class: "grid", "aria-label": "Forward a port" },
    el("label", {}, "Instance port", instancePort),
    el("label", {}, "Host port (optional)", hostPort),
    el("div", {}, addButton));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = forwardRequest(instancePort.value, hostPort.value);
    problem.textContent = request.error || "";
    if (request.error) return;
    const created = await act(addButton, () => api("POST", `/instances/${id}/forwards`, request.body),
      (f) => `Forwarding ${forwardUrl(f)} to port ${f.instance_port}`);
    if (created) { form.reset(); refresh(); }
  });
  const node = el("section", { class: "card ports", "aria-label": "Ports" }, el("h2", {}, "Ports"),
    el("table", { "aria-label": "Forwarded ports" },
      el("thead", {}, el("tr", {}, ["Address", "Instance port", "State", "Connections", ""].map((h) => el("th", {}, h)))), tbody),
    el("h3", {}, "Forward a port"), form, problem);

  function row(f) {
    const url = forwardUrl(f);
    return el("tr", { "data-host-port": f.host_port },
      el("td", { class: "mono" }, el("a", { href: url, target: "_blank", rel: "noopener" }, url)),
      el("td", {}, f.instance_port),
      el("td", {}, el("span", { class: `state state-${f.state === "active" ? "running" : "stopped"}`, "data-state": f.state }, f.state),
        f.state_reason ? el("span", { class: "reason" }, f.state_reason) : null),
      el("td", {}, f.connections),
      el("td", {}, el("button", { type: "button", class: "danger", onclick: async (e) => {
        if (!confirm(`Stop forwarding ${url}? Its open connections are closed.`)) return;
        await act(e.currentTarget, () => api("DELETE", `/instances/${id}/forwards/${f.host_port}`), `Stopped forwarding ${url}`);
        refresh();
      } }, "Remove")));
  }

  async function refresh() {
    let forwards;
    try { forwards = await api("GET", `/instances/${id}/forwards`); } catch { return; }
    tbody.replaceChildren(...(forwards.length ? forwards.map(row)
      : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No ports forwarded."))]));
  }

  return { node, refresh };
}

// --- terminal -------------------------------------------------------------------------

let activeTerminal = null;

function terminalPage(id) {
  const status = el("p", { class: "term-status", role: "status" }, "Connecting…");
  const box = el("div", { id: "terminal" });
  view.replaceChildren(el("h1", {}, `Terminal: ${id}`), el("p", {}, el("a", { href: "#/instances" }, "← all instances")), status, box);
  const term = new window.Terminal({ cursorBlink: true, fontSize: 14, convertEol: false });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/instances/${id}/terminal?cols=${term.cols}&rows=${term.rows}`);
  socket.binaryType = "arraybuffer";
  let refused = false;
  socket.onopen = () => { status.textContent = "Connected."; term.focus(); };
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") { term.write(new Uint8Array(event.data)); return; }
    const msg = parseControl(event.data);
    if (!msg) return;
    if (msg.type === "error") { refused = true; status.textContent = msg.message; toast(msg.message, "error"); }
    else if (msg.type === "exit") { status.textContent = `Session ended (exit status ${msg.status}).`; }
    else if (msg.type === "auth_required") {
      status.textContent = "Waiting for the private key…";
      askForPrivateKey(msg).then((key) => {
        if (key && socket.readyState === WebSocket.OPEN) { status.textContent = "Logging in…"; socket.send(JSON.stringify({ type: "auth", private_key: key })); }
        else socket.close();
      });
    }
  };
  socket.onclose = (event) => {
    if (askForPrivateKey.abandon) askForPrivateKey.abandon();
    if (!refused && !status.textContent.startsWith("Session ended")) status.textContent = closeMessage(event.code, event.reason);
    status.dataset.closed = "true";
    term.options.disableStdin = true;
  };
  const encoder = new TextEncoder();
  term.onData((data) => { if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
  term.onResize(({ cols, rows }) => { if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resize", cols, rows })); });
  const onWindowResize = () => fit.fit();
  window.addEventListener("resize", onWindowResize);
  activeTerminal = () => {
    if (askForPrivateKey.abandon) askForPrivateKey.abandon();
    window.removeEventListener("resize", onWindowResize); socket.close(); term.dispose();
  };
}

/**
 * The key dialog: a multi-line field and a file picker for the private key of the
 * instance's key pair, and the choice to keep it in ec2local for that pair (only when
 * the pair has no key stored: a pair made again under the same name holds another).
 * Resolves to the key, or null when the user cancels.
 */
function askForPrivateKey(msg) {
  const keyName = msg.key_name || "";
  const field = el("textarea", { name: "private_key", rows: "10", spellcheck: "false", autocomplete: "off", class: "mono",
    placeholder: "-----BEGIN OPENSSH PRIVATE KEY-----\n…\n-----END OPENSSH PRIVATE KEY-----", "aria-label": "Private key" });
  const file = el("input", { type: "file", "aria-label": "Private key file" });
  const canKeep = msg.reason === "key_not_stored" && keyName;
  const keep = el("input", { type: "checkbox", name: "keep" });
  const problem = el("p", { class: "problem", role: "alert" });
  field.addEventListener("input", () => { problem.textContent = ""; });
  file.addEventListener("change", async () => { if (file.files[0]) { field.value = await file.files[0].text(); problem.textContent = ""; } });
  const connect = el("button", { class: "primary", type: "submit", value: "connect" }, "Connect");
  const cancel = el("button", { type: "button" }, "Cancel");
  const form = el("form", { method: "dialog" },
    el("h2", {}, keyName ? `Private key for key pair ${keyName}` : "Private key"),
    el("p", {}, msg.reason === "key_not_stored"
      ? "ec2local has only the public half of this key pair. Give the private key to log in; it goes to the service over this connection only."
      : msg.message.replace(/; send it as .*$/, ".")),
    el("label", { class: "wide" }, "Private key", field),
    el("label", {}, "Or pick the key file", file),
    canKeep ? el("label", { class: "check" }, keep, ` Keep this key in ec2local for key pair ${keyName}, so the terminal does not ask again`) : null,
    problem,
    el("div", { class: "actions" }, cancel, connect));
  const dialog = el("dialog", { class: "key-dialog", "aria-label": "Private key for the terminal" }, form);
  document.body.append(dialog);
  return new Promise((resolve) => {
    const finish = (key) => { if (dialog.isConnected) { dialog.close(); dialog.remove(); } resolve(key); };
    // The session it is for may end first (the service stops waiting, the page is left).
    askForPrivateKey.abandon = () => finish(null);
    cancel.addEventListener("click", () => finish(null));
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); finish(null); });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = field.value;
      const why = privateKeyProblem(key);
      if (why) { problem.textContent = why; field.focus(); return; }
      if (canKeep && keep.checked) {
        connect.disabled = true;
        try {
          await api("PUT", `/key-pairs/${encodeURIComponent(keyName)}/private-key`, { private_key: key });
          toast(`Kept the private key of ${keyName}`);
        } catch (e) { problem.textContent = e.message; connect.disabled = false; return; }
      }
      finish(key);
    });
    dialog.showModal();
    field.focus();
  });
}

// --- key pairs ------------------------------------------------------------------------

async function keyPairsPage() {
  const importButton = el("button", { class: "primary", type: "submit" }, "Import");
  const publicKey = el("textarea", { name: "public_key", required: true, placeholder: "ssh-ed25519 AAAA… you@host" });
  const file = el("input", { type: "file", accept: ".pub", "aria-label": "Public key file" });
  file.addEventListener("change", async () => { if (file.files[0]) publicKey.value = (await file.files[0].text()).trim(); });
  const importForm = el("form", { class: "grid", "aria-label": "Import a key pair" },
    el("label", {}, "Name", el("input", { name: "name", required: true, maxlength: "255" })),
    el("label", {}, "Or pick a .pub file", file),
    el("label", { class: "wide" }, "Public key", publicKey), el("div", {}, importButton));
  importForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(importForm));
    if (await act(importButton, () => api("POST", "/key-pairs", { name: data.name, public_key: data.public_key }), `Imported ${data.name}`)) {
      importForm.reset(); refresh();
    }
  });
  const createButton = el("button", { class: "primary", type: "submit" }, "Create");
  const secret = el("div");
  const createForm = el("form", { class: "grid", "aria-label": "Create a key pair" },
    el("label", {}, "Name", el("input", { name: "name", required: true, maxlength: "255" })), el("div", {}, createButton));
  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = new FormData(createForm).get("name");
    const created = await act(createButton, () => api("POST", "/key-pairs", { name }), `Created ${name}`);
    if (!created) return;
    createForm.reset();
    const blob = new Blob([created.private_key], { type: "application/x-pem-file" });
    secret.replaceChildren(el("div", { class: "secret", role: "alert" },
      el("strong", {}, "Save this private key now: it is not shown again. "),
      el("a", { href: URL.createObjectURL(blob), download: `${name}.pem` }, `Download ${name}.pem`),
      el("p", { class: "muted" }, `Then: chmod 600 ${name}.pem && ssh -i ${name}.pem ubuntu@<instance IP>`)));
    refresh();
  });
  const tbody = el("tbody");
  view.replaceChildren(el("h1", {}, "Key pairs"),
    el("section", { class: "card" }, el("h2", {}, "Import a public key"), importForm),
    el("section", { class: "card" }, el("h2", {}, "Create a new key pair"), createForm, secret),
    el("table", { "aria-label": "Key pairs" }, el("thead", {}, el("tr", {}, ["Name", "Type", "Fingerprint (MD5)", "SHA256", "Created", ""].map((h) => el("th", {}, h)))), tbody));
  async function refresh() {
    const keys = await api("GET", "/key-pairs");
    tbody.replaceChildren(...(keys.length ? keys.map((k) => el("tr", { "data-name": k.name },
      el("td", {}, k.name), el("td", {}, k.key_type), el("td", { class: "mono" }, k.fingerprint), el("td", { class: "mono" }, k.fingerprint_sha256),
      el("td", {}, new Date(k.created_at).toLocaleString()),
      el("td", {}, el("button", { type: "button", class: "danger", onclick: async (e) => {
        if (!confirm(`Delete key pair ${k.name}? Instances that use it keep working.`)) return;
        await act(e.currentTarget, () => api("DELETE", `/key-pairs/${encodeURIComponent(k.name)}`), `Deleted ${k.name}`);
        refresh();
      } }, "Delete")))) : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No key pairs yet."))]));
  }
  clearInterval(refreshTimer);
  await refresh();
}

// --- images ---------------------------------------------------------------------------

/**
 * Streams a file to PUT /api/images/{name}/file, reporting progress; resolves to the
 * new image. XMLHttpRequest, because fetch cannot report an upload's progress.
 */
function uploadImage(file, name, about, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const query = new URLSearchParams(Object.entries(about).filter(([, v]) => v)).toString();
    xhr.open("PUT", `/api/images/${encodeURIComponent(name)}/file${query ? `?${query}` : ""}`);
    xhr.setRequestHeader("content-type", "application/octet-stream");
    xhr.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : file.size, false, true);
    xhr.upload.onload = () => onProgress(file.size, file.size, true);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) resolve(data);
      else reject(new Error(data && data.message ? data.message : `${xhr.status} ${xhr.statusText}`));
    };
    xhr.onerror = () => reject(new Error("the upload was interrupted"));
    xhr.onabort = () => reject(new Error("the upload was cancelled"));
    xhr.send(file);
    uploadImage.cancel = () => xhr.abort();
  });
}

async function imagesPage() {
  // Upload: the browser sends the file itself; the service needs no path it can read.
  const uploadButton = el("button", { class: "primary", type: "submit" }, "Upload");
  const cancelButton = el("button", { type: "button", hidden: true, onclick: () => uploadImage.cancel && uploadImage.cancel() }, "Cancel");
  const fileInput = el("input", { type: "file", name: "file", required: true, accept: ".qcow2,.img,.raw", "aria-label": "Image file" });
  const nameInput = el("input", { name: "name", required: true, pattern: "[A-Za-z0-9._-]{1,64}" });
  fileInput.addEventListener("change", () => { if (fileInput.files[0] && !nameInput.value) nameInput.value = imageNameFromFile(fileInput.files[0].name); });
  const bar = el("progress", { max: "100", value: "0", "aria-label": "Upload progress", hidden: true });
  const barText = el("span", { class: "muted upload-status", role: "status" });
  const uploadForm = el("form", { class: "grid", "aria-label": "Upload an image" },
    el("label", {}, "Image file (qcow2 or raw)", fileInput),
    el("label", {}, "Name", nameInput),
    el("label", {}, "OS", el("input", { name: "os", placeholder: "ubuntu" })),
    el("label", {}, "OS version", el("input", { name: "os_version", placeholder: "24.04" })),
    el("label", {}, "Default user", el("input", { name: "default_user", placeholder: "ubuntu" })),
    el("div", { class: "actions" }, uploadButton, cancelButton),
    el("div", { class: "wide" }, bar, " ", barText));
  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = fileInput.files[0];
    const data = Object.fromEntries([...new FormData(uploadForm)].filter(([k, v]) => k !== "file" && v));
    uploadButton.disabled = true; cancelButton.hidden = false; bar.hidden = false;
    let highest = 0;
    try {
      let events = 0;
      const image = await uploadImage(file, data.name, { os: data.os, os_version: data.os_version, default_user: data.default_user }, (loaded, total, sent, fromBrowser) => {
        const progress = uploadProgress(loaded, total);
        highest = Math.max(highest, progress.percent);
        if (fromBrowser) bar.dataset.events = String(++events);
        bar.value = progress.percent;
        bar.dataset.highest = String(highest);
        barText.textContent = sent ? "Uploaded; checking and converting the image…" : `Uploading ${progress.text}`;
      });
      toast(`Uploaded ${image.name}`);
      uploadForm.reset(); barText.textContent = ""; bar.hidden = true; refresh();
    } catch (e) {
      barText.textContent = "";
      bar.hidden = true;
      toast(e.message, "error");
    } finally {
      uploadButton.disabled = false; cancelButton.hidden = true;
    }
  });
  // By path: for a file the service itself can read, without copying it through the browser.
  const importButton = el("button", { type: "submit" }, "Import");
  const form = el("form", { class: "grid", "aria-label": "Import an image" },
    el("label", {}, "Name", el("input", { name: "name", required: true, pattern: "[A-Za-z0-9._-]{1,64}" })),
    el("label", {}, "Absolute path on this machine", el("input", { name: "file_path", required: true, placeholder: "/path/to/image.qcow2" })),
    el("label", {}, "OS", el("input", { name: "os", placeholder: "ubuntu" })),
    el("label", {}, "OS version", el("input", { name: "os_version", placeholder: "24.04" })),
    el("label", {}, "Default user", el("input", { name: "default_user", placeholder: "ubuntu" })),
    el("div", {}, importButton));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries([...new FormData(form)].filter(([, v]) => v));
    if (await act(importButton, () => api("POST", "/images", data), `Imported ${data.name}`)) { form.reset(); refresh(); }
  });
  const tbody = el("tbody");
  view.replaceChildren(el("h1", {}, "Images"),
    el("table", { "aria-label": "Images" }, el("thead", {}, el("tr", {}, ["Name", "ID", "OS", "Arch", "Status", ""].map((h) => el("th", {}, h)))), tbody),
    el("section", { class: "card" }, el("h2", {}, "Upload an image"), uploadForm,
      el("details", {}, el("summary", {}, "Or import a file the service can read, by its path"), form)));
  async function refresh() {
    const images = await api("GET", "/images");
    tbody.replaceChildren(...images.map(imageRow));
  }
  // A catalog image not downloaded yet is a state like any other: its Pull button starts
  // the download, and the table's refresh shows its progress.
  function imageRow(i) {
    const status = imageStatus(i);
    const bar = status.kind === "downloading"
      ? el("div", { class: "progress", role: "progressbar", "aria-valuenow": status.percent ?? 0, "aria-valuemin": 0, "aria-valuemax": 100 }, el("div", { style: `width:${status.percent ?? 0}%` }))
      : null;
    const pull = async (e) => { await act(e.currentTarget, () => api("POST", `/images/${i.id}/pull`), `Pulling ${i.name}`); refresh(); };
    return el("tr", { "data-name": i.name },
      el("td", {}, i.name, el("span", { class: "reason" }, i.description)), el("td", { class: "mono" }, i.id),
      el("td", {}, `${i.os} ${i.os_version}`), el("td", {}, i.architecture),
      el("td", {}, bar, el("span", { class: `image-status image-${status.kind}`, "data-availability": i.availability, title: i.unavailable_reason }, status.text)),
      el("td", {}, el("div", { class: "actions" },
        status.canPull ? el("button", { type: "button", "data-action": "pull", onclick: pull }, "Pull") : null,
        i.available ? el("button", { type: "button", class: "danger", onclick: async (e) => {
          if (!confirm(`Delete image ${i.name}?`)) return;
          await act(e.currentTarget, () => api("DELETE", `/images/${i.id}`), `Deleted ${i.name}`); refresh();
        } }, "Delete") : null)));
  }
  every(2000, refresh);
}

// --- routing --------------------------------------------------------------------------

async function route() {
  clearInterval(refreshTimer);
  if (activeTerminal) { activeTerminal(); activeTerminal = null; }
  const hash = location.hash || "#/instances";
  const [, page, arg] = hash.split("/");
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === page || (page === "terminal" && link.dataset.nav === "instances"));
  try {
    if (page === "instances" && arg) await instanceDetailPage(arg);
    else if (page === "terminal" && arg) terminalPage(arg);
    else if (page === "key-pairs") await keyPairsPage();
    else if (page === "images") await imagesPage();
    else await instancesPage();
  } catch (error) {
    view.replaceChildren(el("p", { role: "alert" }, `Could not load this page: ${error.message}`));
  }
}

window.addEventListener("hashchange", route);
route();
refreshHost();
setInterval(refreshHost, 5000);
