// Runners (online or offline, what each works on) and escalations (what a human is
// asked to judge, and the four answers).

import { api } from "../api.js";
import { act, ago, badge, confirmButton, emptyState, fill, h, live, showError, showNotice, table, time } from "../dom.js";
import { changesTable, diffSection, violationsTable } from "./runs.js";

export function renderRunners(root) {
  const body = h("div", { "data-view": "runners" });
  fill(root, h("h1", { text: "Runners" }), body);

  let calls = 0; // only the newest call's answer is shown
  async function refresh() {
    const call = ++calls;
    let runners;
    try {
      ({ data: runners } = await api("/ops/runner/status"));
    } catch (error) {
      if (call === calls) showError(error);
      return;
    }
    if (call !== calls) return; // a newer refresh was started meanwhile
    const current = (r) => {
      const runs = r.current_runs || [];
      if (runs.length) {
        return runs.map((c) =>
          h(
            "div",
            {},
            c.run_id ? h("a", { href: `#/runs/${encodeURIComponent(c.run_id)}`, text: c.task_title || c.task_id }) : c.task_title || c.task_id,
            " ",
            badge(c.task_status),
          ),
        );
      }
      return (r.current_tasks || []).length ? h("span", { class: "mono", text: r.current_tasks.join(", ") }) : "–";
    };
    fill(
      body,
      table(
        [
          ["Runner", (r) => [h("div", { text: r.name }), h("div", { class: "sub mono", text: r.id })]],
          ["Status", (r) => badge(r.status)],
          ["Last seen", (r) => h("span", { title: r.last_seen_at, text: ago(r.last_seen_at) })],
          ["Working on", current, "wrap"],
          ["Host", (r) => `${r.hostname} (pid ${r.pid})`],
          ["Slots", (r) => r.concurrency, "num"],
          ["Labels", (r) => (r.labels || []).join(", ") || "–"],
          ["Started", (r) => time(r.started_at)],
        ],
        runners,
        { empty: "No runner has registered yet (`capataz runner start`).", rowAttrs: (r) => ({ "data-runner": r.id }) },
      ),
    );
  }

  refresh();
  const timer = setInterval(refresh, 15000); // "last seen" ages even without events
  const stop = live({ types: "runner.online,runner.offline,run.started,run.finished" }, refresh);
  return () => {
    clearInterval(timer);
    stop();
  };
}

const CHOICES = [
  ["approve", "Approve", "primary"],
  ["modify", "Modify", ""],
  ["reject", "Reject", "danger"],
];

async function judged(escalation) {
  // What the human judges: stored with the escalation, or else read from its run.
  if (escalation.details) return escalation.details;
  if (!escalation.run_id) return null;
  try {
    const { data } = await api(`/runs/${encodeURIComponent(escalation.run_id)}`);
    return { violations: data.violations, file_changes: data.file_changes, diff: data.diff };
  } catch {
    return null;
  }
}

function escalationCard(escalation, onAnswered) {
  const open = !escalation.closed_at;
  const note = h("textarea", { name: "note", placeholder: "Note for the record (optional)", "aria-label": "Note" });
  const evidence = h("div", {}, h("p", { class: "muted", text: "Loading what was changed…" }));
  const answer = (decision, button) =>
    act(button, async () => {
      await api(`/ops/escalations/${encodeURIComponent(escalation.task_id)}/decision`, {
        method: "POST",
        body: { decision, note: note.value },
      });
      showNotice(`Escalation of ${escalation.task_id} answered: ${decision}.`);
      onAnswered();
    });
  const buttons = CHOICES.map(([decision, label, cls]) => {
    const button = h("button", { type: "button", class: cls, "data-decision": decision, text: label });
    button.addEventListener("click", () => answer(decision, button));
    return button;
  });
  buttons.push(confirmButton("Abort", (button) => answer("abort", button), { "data-decision": "abort" }));

  judged(escalation).then((details) => {
    if (!details) {
      fill(evidence, emptyState("No violations, file changes or diff recorded for this escalation."));
      return;
    }
    fill(
      evidence,
      h("h2", { text: "Violations" }),
      violationsTable(details.violations),
      h("h2", { text: "File changes" }),
      changesTable(details.file_changes),
      h("h2", { text: "Diff" }),
      diffSection(details.diff),
    );
  });

  return h(
    "section",
    { class: "card", "data-escalation": escalation.task_id },
    h(
      "div",
      { class: "header-row" },
      h("h2", { text: escalation.task_title || escalation.task_id }),
      badge(escalation.task_status),
      escalation.decision ? badge(escalation.decision) : null,
    ),
    h(
      "dl",
      { class: "facts" },
      h("div", {}, h("dt", { text: "Task" }), h("dd", { class: "mono", text: escalation.task_id })),
      h(
        "div",
        {},
        h("dt", { text: "Run" }),
        h("dd", {}, escalation.run_id ? h("a", { href: `#/runs/${encodeURIComponent(escalation.run_id)}`, class: "mono", text: escalation.run_id }) : "–"),
      ),
      h("div", {}, h("dt", { text: "Opened" }), h("dd", {}, time(escalation.opened_at))),
      escalation.answered_at
        ? h("div", {}, h("dt", { text: "Answered" }), h("dd", {}, time(escalation.answered_at), ` by ${escalation.decided_by || "?"}`))
        : null,
    ),
    h("h2", { text: "Reason" }),
    h("p", { "data-field": "reason", text: escalation.reason }),
    escalation.note ? h("p", { class: "muted", text: `Note: ${escalation.note}` }) : null,
    evidence,
    open ? [h("h2", { text: "Answer" }), note, h("div", { class: "actions" }, buttons)] : null,
  );
}

export function renderEscalations(root) {
  const state = { all: false };
  const toggle = h("input", { type: "checkbox", id: "show-answered" });
  const body = h("div", { "data-view": "escalations", class: "stack" });
  toggle.addEventListener("change", () => {
    state.all = toggle.checked;
    refresh();
  });
  fill(
    root,
    h("h1", { text: "Escalations" }),
    h("div", { class: "toolbar" }, toggle, h("label", { for: "show-answered", text: "Show answered ones too" })),
    body,
  );

  let shown = null;
  let calls = 0; // only the newest call's answer is shown
  async function refresh() {
    const call = ++calls;
    let found;
    try {
      ({ data: found } = await api("/ops/escalations", { params: { open: state.all ? "false" : "true" } }));
    } catch (error) {
      if (call === calls) showError(error);
      return;
    }
    if (call !== calls) return; // a newer refresh was started meanwhile
    const key = JSON.stringify([state, found]);
    if (key === shown) return; // unchanged: keep typed notes and armed buttons
    shown = key;
    if (!found.length) {
      fill(body, emptyState(state.all ? "No escalation yet." : "No escalation is waiting for an answer."));
      return;
    }
    fill(body, found.map((e) => escalationCard(e, refresh)));
  }

  refresh();
  return live({ types: "escalation.opened,escalation.answered,task.state" }, refresh);
}
