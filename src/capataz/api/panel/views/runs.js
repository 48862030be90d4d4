// Runs: the history (newest first, paged, filter by status) and one run with its steps,
// decisions, violations, file changes, diff and a log that streams while it runs.

import { api } from "../api.js";
import { badge, diffPane, emptyState, fill, h, live, showError, table, time } from "../dom.js";

// A run's status in the runbook's words (docs/runbook.md); "finished" is every ending.
const RUN_STATUSES = ["running", "succeeded", "failed", "escalated", "cancelled", "lost", "released", "finished"];
const PAGE = 25;

function seconds(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(1)} s`;
}

/** What the agent reported it used, as `capataz run show` prints it; null when it reported nothing. */
export function usageText(run) {
  if ((run.tokens_in === null || run.tokens_in === undefined) && (run.tokens_out === null || run.tokens_out === undefined)) {
    return null;
  }
  const count = (n) => Number(n || 0).toLocaleString("en-US");
  const parts = [`${count(run.tokens_in)} tokens in`, `${count(run.tokens_out)} out`];
  if (run.cost_usd !== null && run.cost_usd !== undefined) parts.push(`$${Number(run.cost_usd).toFixed(4)}`);
  if (run.model) parts.push(`model ${run.model}`);
  if (run.turns !== null && run.turns !== undefined) parts.push(`${run.turns} turn${run.turns === 1 ? "" : "s"}`);
  return parts.join(", ");
}

function runLink(id) {
  return h("a", { href: `#/runs/${encodeURIComponent(id)}`, class: "mono", text: id });
}

export function renderList(root) {
  const state = { status: "", offset: 0 };
  const select = h(
    "select",
    { "aria-label": "Run status", name: "status" },
    h("option", { value: "", text: "all statuses" }),
    RUN_STATUSES.map((s) => h("option", { value: s, text: s })),
  );
  const body = h("div", { "data-view": "runs" });
  const pager = h("div", { class: "pager" });
  select.addEventListener("change", () => {
    state.status = select.value;
    state.offset = 0;
    refresh();
  });
  fill(root, h("h1", { text: "Runs" }), h("div", { class: "toolbar" }, h("label", { text: "Status " }, select)), body, pager);

  let shown = null;
  let calls = 0; // only the newest call's answer is shown
  async function refresh() {
    const call = ++calls;
    let found;
    try {
      found = await api("/runs", { params: { status: state.status, limit: PAGE, offset: state.offset } });
    } catch (error) {
      if (call === calls) showError(error);
      return;
    }
    if (call !== calls) return; // a newer refresh was started meanwhile
    const rows = found.data;
    const key = JSON.stringify([state, found]);
    if (key === shown) return;
    shown = key;
    fill(
      body,
      table(
        [
          ["Run", (r) => runLink(r.id)],
          ["Task", (r) => [h("div", { text: r.task_title }), h("div", { class: "sub mono", text: r.task_id })], "wrap"],
          ["Status", (r) => badge(r.status)],
          ["Outcome", (r) => (r.outcome ? badge(r.outcome) : "–")],
          ["Decision", (r) => (r.decision ? badge(r.decision) : "–")],
          ["Attempt", (r) => r.attempt, "num"],
          ["Runner", (r) => h("span", { class: "mono", text: r.runner_id })],
          ["Started", (r) => time(r.started_at)],
          ["Wall", (r) => seconds(r.wall_seconds), "num"],
        ],
        rows,
        { empty: state.status ? `No ${state.status} runs.` : "No runs yet.", rowAttrs: (r) => ({ "data-run": r.id }) },
      ),
    );
    const last = found.total !== null ? state.offset + rows.length < found.total : rows.length === PAGE;
    const label = found.total !== null ? `${state.offset + (rows.length ? 1 : 0)}–${state.offset + rows.length} of ${found.total}` : "";
    fill(
      pager,
      h("button", { type: "button", text: "← Newer", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); } }),
      h("button", { type: "button", text: "Older →", disabled: !last, onclick: () => { state.offset += PAGE; refresh(); } }),
      h("span", { class: "muted", text: label }),
    );
  }

  refresh();
  return live({ types: "run.started,run.step,run.finished" }, refresh);
}

function facts(run) {
  const pairs = [
    ["Task", h("span", {}, run.task_title, " ", h("span", { class: "muted mono", text: run.task_id }))],
    ["Attempt", String(run.attempt)],
    ["Runner", h("span", { class: "mono", text: run.runner_id })],
    ["Started", time(run.started_at)],
    ["Ended", time(run.ended_at)],
    ["Outcome", run.outcome ? badge(run.outcome) : "–"],
    ["Result", run.result || "–"],
    ["Decision", run.decision ? badge(run.decision) : "–"],
    ["Reason", run.reason || "–"],
    ["Exit code", run.exit_code === null || run.exit_code === undefined ? "–" : String(run.exit_code)],
    ["Wall / CPU", `${seconds(run.wall_seconds)} / ${seconds(run.cpu_seconds)}`],
    ["Agent", h("span", { class: "mono", text: run.agent || "–" })],
    ["Usage", h("span", { "data-field": "usage", text: usageText(run) || "–" })],
    ["Result commit", h("span", { class: "mono", text: run.result_commit || "–" })],
    ["Landed commit", h("span", { class: "mono", text: run.landed_commit || "–" })],
  ];
  return h("dl", { class: "facts card" }, pairs.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v))));
}

/** Violations as a table: shared with the escalations view. */
export function violationsTable(violations) {
  return table(
    [
      ["Type", (v) => h("span", { class: "mono", text: v.type })],
      ["Severity", (v) => badge(v.severity)],
      ["Where", (v) => (v.file ? `${v.file}${v.line ? `:${v.line}` : ""}` : "–"), "wrap"],
      ["Details", (v) => [h("div", { text: v.details || "" }), v.suggestion ? h("div", { class: "sub", text: v.suggestion }) : null], "wrap"],
      ["Gate / phase", (v) => [v.gate || "", v.phase ? ` ${v.phase}` : ""].join("").trim() || "–"],
    ],
    violations || [],
    { empty: "No violations." },
  );
}

/** File changes as a table: shared with the escalations view. */
export function changesTable(changes) {
  return table(
    [
      ["Path", (c) => h("span", { class: "mono", text: c.path }), "wrap"],
      ["Kind", (c) => c.kind || "–"],
      ["+", (c) => (c.binary ? "bin" : c.lines_added ?? "–"), "num"],
      ["−", (c) => (c.binary ? "bin" : c.lines_removed ?? "–"), "num"],
    ],
    changes || [],
    { empty: "No file changes." },
  );
}

export function diffSection(diff) {
  return diff ? diffPane(diff) : emptyState("No diff recorded for this run.");
}

function details(run) {
  const steps = table(
    [
      ["Step", (s) => h("span", { class: "mono", text: s.phase })],
      ["Status", (s) => badge(s.ended_at ? "finished" : "running")],
      ["Outcome", (s) => (s.outcome ? badge(s.outcome) : "–")],
      ["Started", (s) => time(s.started_at)],
      ["Ended", (s) => time(s.ended_at)],
    ],
    run.steps || [],
    { empty: "No steps yet.", rowAttrs: (s) => ({ "data-step": s.phase }) },
  );
  const decisions = table(
    [
      ["Phase", (d) => d.phase],
      ["Decision", (d) => badge(d.decision)],
      ["Reason", (d) => d.reason || "–", "wrap"],
      ["At", (d) => time(d.timestamp)],
    ],
    run.decisions || [],
    { empty: "No decisions yet." },
  );
  const escalations = (run.escalations || []).length
    ? [
        h("h2", { text: "Escalations" }),
        table(
          [
            ["Reason", (e) => e.reason, "wrap"],
            ["Opened", (e) => time(e.opened_at)],
            ["Answer", (e) => (e.decision ? badge(e.decision) : badge("waiting"))],
            ["By", (e) => e.decided_by || "–"],
            ["Note", (e) => e.note || "–", "wrap"],
          ],
          run.escalations,
        ),
      ]
    : [];
  return [
    h("div", { class: "columns" }, h("div", {}, h("h2", { text: "Steps" }), steps), h("div", {}, h("h2", { text: "Decisions" }), decisions)),
    escalations,
    h("h2", { text: "Violations" }),
    violationsTable(run.violations),
    h("h2", { text: "File changes" }),
    changesTable(run.file_changes),
    h("h2", { text: "Diff" }),
    diffSection(run.diff),
  ];
}

export function renderRun(root, runId) {
  const title = h("div", { class: "header-row" }, h("h1", { text: `Run ${runId}` }));
  const status = h("span", { "data-field": "run-status" });
  const summary = h("div");
  const info = h("div");
  const log = h("pre", { class: "pane", "data-pane": "log" });
  fill(
    root,
    h("div", { class: "toolbar" }, h("a", { href: "#/runs", text: "← Runs" })),
    h("div", { class: "header-row" }, title, status),
    summary,
    h("h2", { text: "Log" }),
    log,
    info,
  );

  function scrolledDown() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function setLog(text) {
    if (log.textContent === text) return;
    const follow = scrolledDown();
    log.textContent = text;
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function appendLog(text) {
    const follow = scrolledDown();
    log.append(document.createTextNode(text));
    if (follow) log.scrollTop = log.scrollHeight;
  }

  // The log is gap-free: the stored tail is fetched only after the stream is connected
  // (the stream starts at the newest event when it connects), and the run.log texts
  // that arrive meanwhile are appended unless the tail already holds them.
  let streaming = false; // connected, or reconnecting with Last-Event-ID
  let anchored = false; // the pane holds a tail fetched while streaming
  let pending = []; // run.log texts received before that tail arrived

  function merge(tail, texts) {
    for (let k = texts.length; k > 0; k -= 1) {
      if (tail.endsWith(texts.slice(0, k).join(""))) return tail + texts.slice(k).join("");
    }
    return tail + texts.join("");
  }

  let calls = 0; // only the newest call's answer is shown
  async function refresh() {
    const call = ++calls;
    const whileStreaming = streaming;
    let run;
    try {
      ({ data: run } = await api(`/runs/${encodeURIComponent(runId)}`));
    } catch (error) {
      if (call === calls) showError(error);
      return;
    }
    if (call !== calls) return; // a newer refresh was started meanwhile
    fill(status, badge(run.status));
    fill(summary, facts(run));
    fill(info, details(run));
    if (anchored) return; // the stream appends from here on
    if (whileStreaming) {
      setLog(merge(run.log_tail || "", pending));
      pending = [];
      anchored = true;
    } else {
      setLog(run.log_tail || ""); // before the stream connects, or polling without one
    }
  }

  refresh();
  return live({ run_id: runId }, refresh, {
    pollSeconds: 1.5,
    onState: (state, detail) => {
      if (state === "live") {
        streaming = true;
        if (!detail || !detail.resumed) {
          // a fresh stream (not resumed after an event id): fetch the tail again
          anchored = false;
          pending = [];
        }
      } else if (state !== "reconnecting") {
        streaming = false;
        anchored = false;
      }
    },
    onEvent: (event) => {
      if (event.run_id && event.run_id !== runId) return false;
      if (event.type === "run.log") {
        const text = event.data && event.data.text ? event.data.text : "";
        if (anchored) appendLog(text);
        else pending.push(text);
        return false;
      }
      return true;
    },
  });
}
