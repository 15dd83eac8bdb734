// certgraph console: a plain ES module, no build step. It is also the worked example of the
// GraphQL API: paging through `certificates`, typed errors on mutations (`__typename`), and live
// status through `certificateStatusChanged` over graphql-transport-ws (implemented by hand below).

const ENDPOINT = "/graphql";
const TOKEN_KEY = "certgraph.token";
const POLL_MS = 5000;
const SEARCH_DELAY_MS = 300;
const MAX_RECONNECT_MS = 30000;

const STATUS_LABELS = {
  PENDING_APPLICATION: "Pending application",
  PENDING_DOMAIN_VERIFICATION: "Pending domain name verification",
  PENDING_ORGANIZATION_VERIFICATION: "Pending organization verification",
  CA_VERIFYING_DOMAIN_ADDITION: "CA verifying (domain name addition)",
  CA_VERIFYING_WITHDRAWAL: "CA verifying (application withdrawal)",
  ISSUED: "Issued",
  REJECTED: "Verification failed",
  CA_VERIFYING_REVOCATION: "CA verifying (revocation)",
  REVOKED: "Revoked",
  CA_VERIFYING_DELETION: "CA verifying (deletion)",
  DELETED: "Deleted",
  EXPIRED: "Expired",
};

const ACTIONS = [
  ["APPLY", "Apply"],
  ["VERIFY_DOMAIN", "Verify domain"],
  ["ADD_DOMAINS", "Add domains"],
  ["WITHDRAW_APPLICATION", "Withdraw Application"],
  ["REVOKE", "Revoke"],
  ["DELETE", "Delete"],
];

// What the simulated CA can decide on, by status (SPEC section 6, "Sandbox decisions").
const UNDER_APPLICATION = [
  "PENDING_DOMAIN_VERIFICATION",
  "PENDING_ORGANIZATION_VERIFICATION",
  "CA_VERIFYING_DOMAIN_ADDITION",
];
const CA_PENDING = [
  ...UNDER_APPLICATION,
  "CA_VERIFYING_WITHDRAWAL",
  "CA_VERIFYING_REVOCATION",
  "CA_VERIFYING_DELETION",
];
const SANDBOX_DECISIONS = [
  ["APPROVE", CA_PENDING],
  ["REJECT", CA_PENDING],
  ["ISSUE", [...UNDER_APPLICATION, "CA_VERIFYING_WITHDRAWAL"]],
];

// ---- GraphQL documents

const ROW = `
fragment Row on Certificate {
  id name type domainType brand domain additionalDomains
  status statusLabel availableActions version updatedAt
  lastWithdrawal { id status failureReason requestedAt resolvedAt }
}`;

const ERROR_PARTS = {
  CertificateNotFoundError: "... on CertificateNotFoundError { certificateId }",
  InvalidCertificateStateError:
    "... on InvalidCertificateStateError { currentStatus allowedStatuses certificate { ...Row } }",
  WithdrawalNotAllowedError: "... on WithdrawalNotAllowedError { reason certificate { ...Row } }",
  CaAlreadyApprovedError:
    "... on CaAlreadyApprovedError { certificate { ...Row } withdrawal { id status failureReason } }",
  CaUnavailableError: "... on CaUnavailableError { retryAfterSeconds }",
  ValidationError: "... on ValidationError { field }",
};

function result(success, errorTypes, extra = "") {
  const errors = errorTypes.map((type) => ERROR_PARTS[type]).join("\n    ");
  return `__typename
    ... on Error { message code }
    ... on ${success} { certificate { ...Row } ${extra} }
    ${errors}`;
}

const CHANGE_ERRORS = [
  "CertificateNotFoundError",
  "InvalidCertificateStateError",
  "ValidationError",
  "CaUnavailableError",
];

const QUERIES = {
  page: `query Certificates($first: Int!, $after: String, $filter: CertificateFilter) {
  viewer { tenant { name } }
  certificates(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { ...Row }
  }
}${ROW}`,
  withdraw: `mutation Withdraw($input: WithdrawApplicationInput!) {
  withdrawApplication(input: $input) {
    ${result("WithdrawApplicationSuccess", [...CHANGE_ERRORS, "WithdrawalNotAllowedError", "CaAlreadyApprovedError"], "message withdrawal { id status }")}
  }
}${ROW}`,
  apply: `mutation Apply($input: ApplyForCertificateInput!) {
  applyForCertificate(input: $input) { ${result("ApplyForCertificateSuccess", CHANGE_ERRORS)} }
}${ROW}`,
  verifyDomain: `mutation VerifyDomain($input: CertificateIdInput!) {
  verifyDomain(input: $input) { ${result("CertificateChangeSuccess", CHANGE_ERRORS)} }
}${ROW}`,
  addDomains: `mutation AddDomains($input: AddDomainsInput!) {
  addDomains(input: $input) { ${result("CertificateChangeSuccess", CHANGE_ERRORS)} }
}${ROW}`,
  revoke: `mutation Revoke($input: RevokeCertificateInput!) {
  revokeCertificate(input: $input) { ${result("CertificateChangeSuccess", CHANGE_ERRORS)} }
}${ROW}`,
  delete: `mutation Delete($input: CertificateIdInput!) {
  deleteCertificate(input: $input) { ${result("CertificateChangeSuccess", CHANGE_ERRORS)} }
}${ROW}`,
  sandboxDecide: `mutation SandboxDecide($input: SandboxCaDecideInput!) {
  sandboxCaDecide(input: $input) {
    ${result("SandboxCaDecideSuccess", ["CertificateNotFoundError", "InvalidCertificateStateError"])}
  }
}${ROW}`,
  // A malformed id: with the sandbox on this answers CertificateNotFoundError and changes
  // nothing; without it the server refuses the field, and the sandbox column stays hidden.
  sandboxProbe: `mutation SandboxProbe {
  sandboxCaDecide(input: { certificateId: "console-probe", decision: APPROVE }) { __typename }
}`,
  statusChanges: `subscription StatusChanges {
  certificateStatusChanged { status previousStatus changedAt certificate { ...Row } }
}${ROW}`,
};

// ---- state

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || null,
  authRequired: false,
  status: "",
  search: "",
  pageSize: 20,
  cursors: [null], // the `after` of each page visited; the last one is the current page
  certs: [],
  totalCount: 0,
  hasNextPage: false,
  loadSeq: 0,
  sandbox: "unknown", // "on" | "off" | "unknown"
};

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const label = (status) => STATUS_LABELS[status] || status;

// ---- the GraphQL client (fetch) with the token prompt

class RequestError extends Error {
  constructor(message, errors = []) {
    super(message);
    this.errors = errors;
  }
}

async function gql(query, variables = {}) {
  for (;;) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let response;
    try {
      response = await fetch(ENDPOINT, {
        method: "POST",
        headers,
        body: JSON.stringify({ query, variables }),
      });
    } catch {
      throw new RequestError("The server cannot be reached. Check the connection and try again.");
    }
    if (response.status === 401) {
      state.authRequired = true;
      await askForToken(state.token ? "The server refused that token; enter another one." : "");
      continue;
    }
    let body;
    try {
      body = await response.json();
    } catch {
      throw new RequestError(`The server answered HTTP ${response.status} without a GraphQL body.`);
    }
    if (body.errors && body.errors.length) {
      const first = body.errors[0].message || "The request failed.";
      throw new RequestError(first, body.errors);
    }
    return body.data;
  }
}

function sandboxMissing(error) {
  return (
    error instanceof RequestError &&
    error.errors.some(
      (e) => /sandboxCaDecide/.test(e.message || "") && /cannot query field|unknown|not exist/i.test(e.message || ""),
    )
  );
}

let tokenPrompt = null;

function askForToken(problem) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dialog = $("#token-dialog");
    showTokenDialog(problem, true, (token) => {
      tokenPrompt = null;
      resolve(token);
    });
    dialog.dataset.required = "true";
  });
  return tokenPrompt;
}

function setToken(token) {
  state.token = token || null;
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  $("#token-button").hidden = !(state.token || state.authRequired);
}

function showTokenDialog(problem, required, done) {
  const dialog = $("#token-dialog");
  const form = $("form", dialog);
  const input = $("#token-input");
  input.value = "";
  showDialogError(dialog, problem);
  dialog.dataset.required = required ? "true" : "false";
  form.onsubmit = (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      showDialogError(dialog, "Enter a token.");
      input.focus();
      return;
    }
    setToken(token);
    dialog.close();
    live.restart();
    done?.(token);
  };
  $("#token-clear").onclick = () => {
    setToken(null);
    input.value = "";
    if (dialog.dataset.required !== "true") dialog.close();
    else showDialogError(dialog, "The token is forgotten. This server needs one to continue.");
  };
  if (!dialog.open) dialog.showModal();
  input.focus();
}

// ---- toasts and announcements

function toast(message, kind = "success") {
  const box = el(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    el("p", {}, message),
  );
  const close = el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×");
  close.addEventListener("click", () => box.remove());
  box.append(close);
  $("#toasts").append(box);
  setTimeout(() => box.remove(), kind === "error" ? 15000 : 8000);
}

let announcer;
function announce(message) {
  announcer.textContent = message;
}

// ---- the list

function filterVariables() {
  const filter = {};
  if (state.status) filter.status = [state.status];
  if (state.search) filter.search = state.search;
  return Object.keys(filter).length ? filter : null;
}

async function loadPage({ quiet = false } = {}) {
  const seq = ++state.loadSeq;
  const table = $("#certificates");
  if (!quiet) table.setAttribute("aria-busy", "true");
  try {
    const data = await gql(QUERIES.page, {
      first: state.pageSize,
      after: state.cursors[state.cursors.length - 1],
      filter: filterVariables(),
    });
    if (seq !== state.loadSeq) return;
    const tenant = $("#tenant");
    tenant.textContent = `Tenant: ${data.viewer.tenant.name}`;
    tenant.hidden = false;
    const page = data.certificates;
    state.totalCount = page.totalCount;
    state.hasNextPage = page.pageInfo.hasNextPage;
    state.endCursor = page.pageInfo.endCursor;
    applyPage(page.nodes);
  } catch (error) {
    if (seq !== state.loadSeq) return;
    if (!quiet) toast(`The certificates could not be loaded: ${error.message}`, "error");
  } finally {
    if (seq === state.loadSeq) table.removeAttribute("aria-busy");
  }
}

function applyPage(nodes) {
  const sameRows =
    nodes.length === state.certs.length && nodes.every((c, i) => c.id === state.certs[i].id);
  if (sameRows) {
    for (const cert of nodes) updateRow(cert);
  } else {
    const focused = focusKey();
    state.certs = nodes;
    $("#rows").replaceChildren(...nodes.map(buildRow));
    restoreFocus(focused);
  }
  $("#empty").hidden = nodes.length > 0;
  renderPager();
}

function renderPager() {
  const pageIndex = state.cursors.length - 1;
  const start = pageIndex * state.pageSize;
  const shown = state.certs.length;
  const text = shown
    ? `Showing ${start + 1}–${start + shown} of ${state.totalCount} certificates`
    : `0 of ${state.totalCount} certificates`;
  if ($("#summary").textContent !== text) $("#summary").textContent = text;
  $("#page-label").textContent = `Page ${pageIndex + 1} of ${Math.max(1, Math.ceil(state.totalCount / state.pageSize))}`;
  $("#prev-page").disabled = pageIndex === 0;
  $("#next-page").disabled = !state.hasNextPage;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

function timeElement(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return el("time", { datetime: iso }, iso);
  return el(
    "time",
    { datetime: iso, title: iso },
    el("span", {}, dateFormat.format(when)),
    " ",
    el("span", {}, timeFormat.format(when)),
  );
}

function withdrawalText(withdrawal) {
  if (!withdrawal) return null;
  if (withdrawal.status === "PENDING") return ["pending", "Withdrawal requested; the CA is deciding"];
  if (withdrawal.status === "SUCCEEDED") return ["succeeded", "Withdrawn"];
  if (withdrawal.failureReason === "CA_ALREADY_APPROVED")
    return ["failed", "Withdrawal failed: the CA had already approved it"];
  if (withdrawal.failureReason === "CA_REJECTED")
    return ["failed", "Withdrawal failed: the CA refused it"];
  return ["failed", "Withdrawal failed"];
}

function cell(heading, ...children) {
  return el("td", { dataset: { label: heading } }, ...children);
}

function buildRow(cert) {
  const row = el("tr", { dataset: { id: cert.id, status: cert.status } });

  row.append(el("th", { scope: "row", tabindex: "-1", class: "name", dataset: { key: "name" } }, cert.name));

  const domains = [cert.domain, ...(cert.additionalDomains || [])].filter(Boolean);
  row.append(
    cell(
      "Domains",
      domains.length
        ? el("ul", { class: "domains" }, ...domains.map((d) => el("li", {}, d)))
        : el("span", { class: "muted" }, "Not applied yet"),
    ),
  );
  row.append(cell("Type", el("span", { class: "type" }, cert.type)));
  row.append(cell("Brand", cert.brand));
  row.append(
    cell(
      "Status",
      el("span", { class: `badge badge-${cert.status.toLowerCase().replaceAll("_", "-")}`, dataset: { role: "status-label" } }, cert.statusLabel),
    ),
  );
  row.append(cell("Updated", timeElement(cert.updatedAt)));
  const withdrawal = withdrawalText(cert.lastWithdrawal);
  row.append(
    cell(
      "Withdrawal",
      withdrawal
        ? el("span", { class: `withdrawal withdrawal-${withdrawal[0]}`, dataset: { role: "withdrawal" } }, withdrawal[1])
        : el("span", { class: "muted" }, "—"),
    ),
  );

  const operations = el("div", { class: "buttons" });
  for (const [action, text] of ACTIONS) {
    if (!cert.availableActions.includes(action)) continue;
    operations.append(
      el(
        "button",
        {
          type: "button",
          class: action === "DELETE" || action === "REVOKE" ? "op op-danger" : "op",
          dataset: { action, key: `action-${action}` },
          "aria-label": `${text}: ${cert.name}`,
        },
        text,
      ),
    );
  }
  if (!operations.childElementCount) operations.append(el("span", { class: "muted" }, "No actions now"));
  row.append(cell("Operation", operations));

  const sandbox = el("div", { class: "buttons" });
  for (const [decision, statuses] of SANDBOX_DECISIONS) {
    if (!statuses.includes(cert.status)) continue;
    sandbox.append(
      el(
        "button",
        {
          type: "button",
          class: "op op-sandbox",
          dataset: { decision, key: `sandbox-${decision}` },
          title: `The simulated CA decides ${decision} on what it is reviewing`,
          "aria-label": `${decision}: ${cert.name} (CA sandbox)`,
        },
        decision,
      ),
    );
  }
  if (!sandbox.childElementCount) sandbox.append(el("span", { class: "muted" }, "—"));
  const sandboxCell = cell("CA sandbox", sandbox);
  sandboxCell.classList.add("sandbox-col");
  row.append(sandboxCell);
  return row;
}

function rowFor(id) {
  return $(`tr[data-id="${CSS.escape(id)}"]`, $("#rows"));
}

function focusKey() {
  const active = document.activeElement;
  const row = active?.closest?.("#rows tr");
  return row ? { id: row.dataset.id, key: active.dataset.key } : null;
}

function restoreFocus(focused) {
  if (!focused) return;
  const row = rowFor(focused.id);
  if (!row) return;
  // The same control if it is still there, else the row's first operation, else its name.
  const target =
    (focused.key && $(`[data-key="${focused.key}"]`, row)) || $("button[data-action]", row) || $("th", row);
  target.focus();
}

/** Replace a row in place when the certificate is on this page; returns whether it was. */
function updateRow(cert) {
  const index = state.certs.findIndex((c) => c.id === cert.id);
  if (index < 0) return false;
  const current = state.certs[index];
  if (cert.version < current.version) return true; // an older view arriving late
  if (cert.version === current.version && cert.status === current.status) return true;
  state.certs[index] = cert;
  const old = rowFor(cert.id);
  if (!old) return true;
  const focused = old.contains(document.activeElement) ? focusKey() : null;
  const fresh = buildRow(cert);
  old.replaceWith(fresh);
  restoreFocus(focused);
  if (current.status !== cert.status) {
    fresh.classList.add("changed");
    announce(`${cert.name} is now ${cert.statusLabel}.`);
  }
  return true;
}

// ---- dialogs

function showDialogError(dialog, message) {
  const box = $(".dialog-error", dialog);
  box.textContent = message || "";
  box.hidden = !message;
}

/**
 * Open `dialog` for `cert`; `submit` runs on the form's submit and returns true to close.
 * Focus goes back to the button that opened it (or to the row, if that button is gone).
 */
function openDialog(dialog, cert, opener, submit, initialFocus) {
  for (const name of dialog.querySelectorAll(".dialog-cert-name")) name.textContent = cert.name;
  showDialogError(dialog, "");
  const form = $("form", dialog);
  const buttons = [...form.querySelectorAll("button")];
  form.onsubmit = async (event) => {
    event.preventDefault();
    buttons.forEach((b) => (b.disabled = true));
    form.setAttribute("aria-busy", "true");
    try {
      if (await submit()) dialog.close();
    } catch (error) {
      showDialogError(dialog, error.message || String(error));
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      form.removeAttribute("aria-busy");
    }
  };
  form.oninput = () => showDialogError(dialog, "");
  dialog.onclose = () => {
    if (opener?.isConnected) opener.focus();
    else restoreFocus({ id: cert.id, key: opener?.dataset.key });
  };
  dialog.showModal();
  (initialFocus || dialog.querySelector("input:not([disabled]), select, button")).focus();
}

function describeError(error, what) {
  switch (error.__typename) {
    case "CaAlreadyApprovedError":
      return "The CA had already approved this certificate; the withdrawal failed.";
    case "CaUnavailableError":
      return `The CA cannot be reached right now, so nothing was changed. Try again in ${error.retryAfterSeconds} s.`;
    case "CertificateNotFoundError":
      return "This certificate no longer exists (or is not yours); the list has been refreshed.";
    case "InvalidCertificateStateError":
      return `${what} is not possible while the certificate is “${label(error.currentStatus)}”; the row shows its current status.`;
    case "WithdrawalNotAllowedError":
      return error.reason === "DELETION_REQUESTED"
        ? "A deletion was already requested for this certificate, so its application can no longer be withdrawn."
        : "A revocation was already requested for this certificate, so its application can no longer be withdrawn.";
    case "ValidationError":
      return `${fieldName(error.field)}: ${error.message}`;
    default:
      return error.message || `${what} failed.`;
  }
}

function fieldName(path) {
  const names = {
    "input.domain": "Domain",
    "input.additionalDomains": "Additional domains",
    "input.organization": "Organization",
    "input.organization.name": "Organization name",
    "input.organization.country": "Country",
    "input.domains": "Domains",
    "input.idempotencyKey": "Request key",
    "input.reason": "Reason",
  };
  return names[path] || path || "Input";
}

/** Handle a mutation result: update the row, and return null on success or an error text. */
function settle(outcome, what) {
  if (outcome.certificate) updateRow(outcome.certificate);
  if (!outcome.__typename.endsWith("Error")) return null;
  if (outcome.__typename === "CertificateNotFoundError") loadPage({ quiet: true });
  return describeError(outcome, what);
}

// ---- operations

function withdraw(cert, opener) {
  const dialog = $("#withdraw-dialog");
  // One key per dialog: a retry after a lost answer cannot withdraw twice.
  const idempotencyKey = crypto.randomUUID();
  openDialog(
    dialog,
    cert,
    opener,
    async () => {
      const data = await gql(QUERIES.withdraw, { input: { certificateId: cert.id, idempotencyKey } });
      const outcome = data.withdrawApplication;
      const problem = settle(outcome, "Withdrawing the application");
      if (problem) {
        toast(problem, "error");
        return true;
      }
      toast("Request for canceling the application submitted successfully");
      return true;
    },
    $("button[data-close]", dialog),
  );
}

function apply(cert, opener) {
  const dialog = $("#apply-dialog");
  const multiple = cert.domainType === "MULTIPLE";
  const organization = cert.type === "OV" || cert.type === "EV";
  for (const section of dialog.querySelectorAll("[data-only]")) {
    const shown = section.dataset.only === "MULTIPLE" ? multiple : organization;
    section.hidden = !shown;
    section.querySelectorAll("input").forEach((input) => (input.disabled = !shown));
  }
  $("#apply-org-name").required = organization;
  $("#apply-org-country").required = organization;
  $("#apply-domain").value = cert.domain || "";
  $("#apply-additional").value = (cert.additionalDomains || []).join(", ");
  $("#apply-org-name").value = "";
  $("#apply-org-country").value = "";
  openDialog(dialog, cert, opener, async () => {
    const domain = $("#apply-domain").value.trim();
    if (!domain) throw new Error("Enter the domain.");
    const input = {
      certificateId: cert.id,
      domain,
      validationMethod: $("#apply-method").value,
    };
    if (multiple) input.additionalDomains = splitList($("#apply-additional").value);
    if (organization) {
      const name = $("#apply-org-name").value.trim();
      const country = $("#apply-org-country").value.trim().toUpperCase();
      if (!name) throw new Error(`Enter the organization name: ${cert.type} certificates vouch for one.`);
      if (!/^[A-Z]{2}$/.test(country)) throw new Error("Enter the country as a 2-letter code, e.g. GB.");
      input.organization = { name, country };
    }
    const outcome = (await gql(QUERIES.apply, { input })).applyForCertificate;
    const problem = settle(outcome, "Applying");
    if (problem) {
      // Input problems and an unreachable CA can be fixed and retried in the form.
      if (outcome.__typename === "ValidationError" || outcome.__typename === "CaUnavailableError")
        throw new Error(problem);
      toast(problem, "error");
      return true;
    }
    toast(`Application submitted for ${cert.name}. Publish the validation records, then choose Verify domain.`);
    return true;
  });
}

function addDomains(cert, opener) {
  const dialog = $("#add-domains-dialog");
  $("#add-domains-input").value = "";
  openDialog(dialog, cert, opener, async () => {
    const domains = splitList($("#add-domains-input").value);
    if (!domains.length) throw new Error("Enter at least one domain.");
    const outcome = (await gql(QUERIES.addDomains, { input: { certificateId: cert.id, domains } })).addDomains;
    const problem = settle(outcome, "Adding domains");
    if (problem) {
      if (outcome.__typename === "ValidationError" || outcome.__typename === "CaUnavailableError")
        throw new Error(problem);
      toast(problem, "error");
      return true;
    }
    toast(`Domains submitted for ${cert.name}; the CA is verifying them.`);
    return true;
  });
}

function confirmThen(cert, opener, { title, body, button, reason, run, done }) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-body").textContent = body;
  $("#confirm-submit").textContent = button;
  const reasonField = $('[data-only="REASON"]', dialog);
  reasonField.hidden = !reason;
  $("#confirm-reason").disabled = !reason;
  $("#confirm-reason").value = "";
  openDialog(
    dialog,
    cert,
    opener,
    async () => {
      const outcome = await run($("#confirm-reason").value.trim() || null);
      const problem = settle(outcome, title);
      toast(problem || done, problem ? "error" : "success");
      return true;
    },
    $("button[data-close]", dialog),
  );
}

function revoke(cert, opener) {
  confirmThen(cert, opener, {
    title: "Revoke certificate",
    body: `The CA will be asked to revoke ${cert.name}. Once revoked, it can no longer be used.`,
    button: "Revoke",
    reason: true,
    run: async (reason) =>
      (await gql(QUERIES.revoke, { input: { certificateId: cert.id, reason } })).revokeCertificate,
    done: `Revocation of ${cert.name} requested; the CA is verifying it.`,
  });
}

function remove(cert, opener) {
  confirmThen(cert, opener, {
    title: "Delete certificate",
    body: `${cert.name} will be deleted. If the CA holds it, the CA is asked first. This cannot be undone.`,
    button: "Delete",
    reason: false,
    run: async () => (await gql(QUERIES.delete, { input: { certificateId: cert.id } })).deleteCertificate,
    done: `Deletion of ${cert.name} requested.`,
  });
}

async function verifyDomain(cert, button) {
  button.disabled = true;
  try {
    const outcome = (await gql(QUERIES.verifyDomain, { input: { certificateId: cert.id } })).verifyDomain;
    const problem = settle(outcome, "Verifying the domain");
    toast(problem || `The CA is checking the validation records of ${cert.name}.`, problem ? "error" : "success");
  } catch (error) {
    toast(error.message, "error");
  } finally {
    if (button.isConnected) button.disabled = false;
  }
}

async function sandboxDecide(cert, decision, button) {
  button.disabled = true;
  try {
    const outcome = (await gql(QUERIES.sandboxDecide, { input: { certificateId: cert.id, decision } }))
      .sandboxCaDecide;
    const problem = settle(outcome, `The sandbox decision ${decision}`);
    toast(
      problem || `Simulated CA: ${decision} on ${cert.name}. The status follows in a moment.`,
      problem ? "error" : "success",
    );
  } catch (error) {
    if (sandboxMissing(error)) {
      setSandbox("off");
      toast("The CA sandbox is not enabled on this server.", "error");
    } else {
      toast(error.message, "error");
    }
  } finally {
    if (button.isConnected) button.disabled = false;
  }
}

function splitList(text) {
  return text
    .split(/[\s,]+/)
    .map((part) => part.trim())
    .filter(Boolean);
}

function onRowClick(event) {
  const button = event.target.closest("button");
  if (!button || button.disabled) return;
  const row = button.closest("tr");
  const cert = state.certs.find((c) => c.id === row?.dataset.id);
  if (!cert) return;
  if (button.dataset.decision) {
    sandboxDecide(cert, button.dataset.decision, button);
    return;
  }
  switch (button.dataset.action) {
    case "APPLY":
      return apply(cert, button);
    case "VERIFY_DOMAIN":
      return verifyDomain(cert, button);
    case "ADD_DOMAINS":
      return addDomains(cert, button);
    case "WITHDRAW_APPLICATION":
      return withdraw(cert, button);
    case "REVOKE":
      return revoke(cert, button);
    case "DELETE":
      return remove(cert, button);
  }
}

// ---- sandbox detection

function setSandbox(value) {
  state.sandbox = value;
  $("#certificates").dataset.sandbox = value;
}

async function probeSandbox() {
  try {
    await gql(QUERIES.sandboxProbe);
    setSandbox("on");
  } catch (error) {
    setSandbox(sandboxMissing(error) ? "off" : "unknown");
  }
}

// ---- live updates: graphql-transport-ws by hand, polling while the socket is down

class LiveUpdates {
  constructor() {
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.pollTimer = null;
    this.up = false;
  }

  start() {
    if (this.started) return;
    this.started = true;
    this.connect();
  }

  restart() {
    if (!this.started) return;
    if (this.socket) {
      const old = this.socket;
      this.socket = null;
      old.close(1000, "new token");
    }
    clearTimeout(this.timer);
    this.connect();
  }

  connect() {
    const url = new URL(ENDPOINT, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(url, "graphql-transport-ws");
    } catch {
      this.down();
      this.reconnectLater();
      return;
    }
    this.socket = socket;
    const send = (message) => socket.send(JSON.stringify(message));
    socket.addEventListener("open", () => {
      send({
        type: "connection_init",
        payload: state.token ? { Authorization: `Bearer ${state.token}` } : {},
      });
    });
    socket.addEventListener("message", (event) => {
      if (this.socket !== socket) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      switch (message.type) {
        case "connection_ack":
          this.attempt = 0;
          send({ id: "status", type: "subscribe", payload: { query: QUERIES.statusChanges, variables: {} } });
          this.connected();
          break;
        case "next": {
          const change = message.payload?.data?.certificateStatusChanged;
          if (change) updateRow(change.certificate);
          break;
        }
        case "ping":
          send({ type: "pong" });
          break;
        case "error":
        case "complete":
          // The subscription ended: start over on a fresh socket.
          socket.close(1000, "resubscribe");
          break;
      }
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.down();
      if (event.code === 4401 || event.code === 4403) {
        state.authRequired = true;
        askForToken(event.code === 4403 ? "The server refused that token; enter another one." : "");
        return; // the token dialog restarts the socket
      }
      this.reconnectLater();
    });
  }

  reconnectLater() {
    clearTimeout(this.timer);
    const delay = Math.min(MAX_RECONNECT_MS, 1000 * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  connected() {
    const wasDown = !this.up;
    this.up = true;
    clearInterval(this.pollTimer);
    this.pollTimer = null;
    setLive("live", "Live updates on");
    // Catch up on whatever changed while the socket was down.
    if (wasDown) loadPage({ quiet: true });
  }

  down() {
    this.up = false;
    setLive("polling", "Live updates off: refreshing every 5 s");
    if (!this.pollTimer) this.pollTimer = setInterval(() => loadPage({ quiet: true }), POLL_MS);
  }
}

function setLive(mode, text) {
  const live = $("#live");
  live.dataset.state = mode;
  if (live.textContent !== text) live.textContent = text;
}

const live = new LiveUpdates();

// ---- start

function init() {
  announcer = el("div", { class: "visually-hidden", "aria-live": "polite" });
  document.body.append(announcer);

  const statusFilter = $("#status-filter");
  for (const [value, text] of Object.entries(STATUS_LABELS)) statusFilter.append(el("option", { value }, text));

  const reset = () => {
    state.cursors = [null];
    loadPage();
  };
  statusFilter.addEventListener("change", () => {
    state.status = statusFilter.value;
    reset();
  });
  let searchTimer;
  $("#search").addEventListener("input", (event) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.search = event.target.value.trim();
      reset();
    }, SEARCH_DELAY_MS);
  });
  $("#page-size").addEventListener("change", (event) => {
    state.pageSize = Number(event.target.value);
    reset();
  });
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    state.search = $("#search").value.trim();
    reset();
  });
  $("#prev-page").addEventListener("click", () => {
    if (state.cursors.length > 1) state.cursors.pop();
    loadPage();
  });
  $("#next-page").addEventListener("click", () => {
    if (!state.hasNextPage) return;
    state.cursors.push(state.endCursor);
    loadPage();
  });
  $("#rows").addEventListener("click", onRowClick);

  for (const dialog of document.querySelectorAll("dialog")) {
    for (const closer of dialog.querySelectorAll("[data-close]")) {
      closer.addEventListener("click", () => dialog.close());
    }
  }
  // The token prompt cannot be dismissed while the server insists on a token.
  $("#token-dialog").addEventListener("cancel", (event) => {
    if ($("#token-dialog").dataset.required === "true") event.preventDefault();
  });
  $("#token-button").addEventListener("click", () => showTokenDialog("", false));
  setToken(state.token);

  loadPage().then(() => {
    probeSandbox();
    live.start();
  });
}

init();
