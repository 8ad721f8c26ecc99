// The review page's keys, and marking without a page load (the event list and the event page).
//
// Progressive: every button is a form that works without this script (a POST, then back to the
// same list or event). With it, a mark is the same POST made by fetch() with the page's CSRF token
// and "Accept: application/json", so the server stores it exactly as the form would (the same
// endpoint, source "page", the same path to retrain), and the page changes in place.
//
// List:  ArrowDown/j, ArrowUp/k move the selection; r = raccoon, n = not a raccoon (the selection
//        then moves to the next event); u clears; Enter/o opens the selected event.
// Event: r, n, u mark; ArrowLeft/k = newer, ArrowRight/j = older (within the list's filter).
"use strict";

(() => {
  const NAMES = { raccoon: "raccoon", not_raccoon: "not a raccoon", none: "no verdict" };
  const status = document.getElementById("status");
  let queue = Promise.resolve(); // marks are sent one after another, in the order they were made

  const say = (...parts) => {
    if (!status) return;
    status.replaceChildren(...parts);
  };

  // typing into a field: keys are its own
  const typing = (e) => {
    const t = e.target;
    return Boolean(t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName)));
  };

  const link = (href, text) => {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  };

  // POST label to the form's action with its hidden fields (csrf, back); resolves to the JSON answer
  const send = (form, label) => {
    const body = new URLSearchParams(new FormData(form));
    body.set("label", label);
    const job = queue.then(async () => {
      const resp = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin", redirect: "error",
        headers: { Accept: "application/json" },
      });
      if (resp.status === 403) throw new Error("not saved: the page is too old (its CSRF token is stale): reload it");
      if (resp.status === 401) throw new Error("not saved: log in again");
      if (!resp.ok) throw new Error(`not saved: the server answered ${resp.status}`);
      return resp.json();
    });
    queue = job.catch(() => undefined);
    return job;
  };

  const keyName = (e) => (e.key.length === 1 ? e.key.toLowerCase() : e.key);

  // --- the event list ---------------------------------------------------------------------------
  function eventList(table) {
    const rows = [...table.querySelectorAll("tr.event")];
    if (!rows.length) return;
    const unreviewedOnly = (document.getElementById("verdict-filter") || {}).value === "unreviewed";
    let sel = Math.max(0, rows.findIndex((r) => r.dataset.feedback === "none"));

    const select = (i, scroll = true) => {
      const next = Math.min(Math.max(i, 0), rows.length - 1);
      rows[sel].classList.remove("selected");
      rows[sel].removeAttribute("aria-selected");
      sel = next;
      rows[sel].classList.add("selected");
      rows[sel].setAttribute("aria-selected", "true");
      if (scroll) rows[sel].scrollIntoView({ block: "nearest" });
    };

    const show = (row, feedback) => {
      row.dataset.feedback = feedback;
      const span = row.querySelector(".feedback");
      span.className = `feedback ${feedback}`;
      span.textContent = NAMES[feedback];
    };

    const mark = async (row, label) => {
      const before = row.dataset.feedback;
      show(row, label); // at once; put back if the server says no
      row.dataset.saving = "1";
      row.classList.remove("failed");
      try {
        const got = await send(row.querySelector("form.mark"), label);
        show(row, got.feedback || "none");
        say(`${row.querySelector("a.open").textContent}: ${got.verdict}`);
      } catch (err) {
        show(row, before);
        row.classList.add("failed");
        say(String(err.message || err));
      } finally {
        delete row.dataset.saving;
      }
      if (rows.every((r) => r.dataset.feedback !== "none") && !rows.some((r) => r.dataset.saving)) pageDone();
    };

    const pageDone = () => {
      const older = document.querySelector('.pager a[rel="next"]');
      if (unreviewedOnly) {
        // the marked ones have left the filter: this same page now holds the next unreviewed
        if (older) older.href = window.location.href;
        say("All on this page are marked. ", link(window.location.href, "Next unreviewed →"));
      } else if (older) {
        say("All on this page are marked. ", link(older.href, "Older →"));
      }
    };

    select(sel, false);
    table.addEventListener("click", (e) => {
      const row = e.target.closest("tr.event");
      if (row && !e.target.closest("a, button")) select(rows.indexOf(row), false);
    });
    table.addEventListener("submit", (e) => {
      const row = e.target.closest("tr.event");
      const label = e.submitter && e.submitter.value;
      if (!row || !label) return; // no submitter (an old browser): the plain form post
      e.preventDefault();
      select(rows.indexOf(row), false);
      mark(row, label);
    });
    document.addEventListener("keydown", (e) => {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
      const key = keyName(e);
      if (key === "ArrowDown" || key === "j") select(sel + 1);
      else if (key === "ArrowUp" || key === "k") select(sel - 1);
      else if (key === "r" || key === "n") {
        mark(rows[sel], key === "r" ? "raccoon" : "not_raccoon");
        select(sel + 1);
      } else if (key === "u") mark(rows[sel], "none");
      else if ((key === "Enter" && !e.target.closest("a, button")) || key === "o") {
        window.location.href = rows[sel].querySelector("a.open").href;
      } else return;
      e.preventDefault();
    });
  }

  // --- one event --------------------------------------------------------------------------------
  function eventPage(form) {
    const update = (got) => {
      const feedback = got.feedback || "none";
      document.getElementById("title-text").textContent = got.title;
      document.getElementById("title").className = `verdict-title ${feedback}`;
      document.title = `${got.title} · raccoon_watch`;
      const dd = document.getElementById("feedback");
      dd.className = `feedback ${feedback}`;
      dd.textContent = got.verdict;
      if (got.feedback) {
        const small = document.createElement("small");
        small.textContent = "(page)";
        dd.append(" ", small);
      }
      document.getElementById("btn-raccoon").setAttribute("aria-pressed", String(feedback === "raccoon"));
      document.getElementById("btn-not-raccoon").setAttribute("aria-pressed", String(feedback === "not_raccoon"));
      document.getElementById("btn-clear").hidden = !got.feedback;
    };

    const mark = async (label) => {
      form.dataset.saving = "1";
      try {
        const got = await send(form, label);
        update(got);
        say(`Marked ${got.verdict}.`);
      } catch (err) {
        say(String(err.message || err));
      } finally {
        delete form.dataset.saving;
      }
    };

    const go = (id) => {
      const a = document.getElementById(id);
      if (a) window.location.href = a.href;
    };

    form.addEventListener("submit", (e) => {
      const label = e.submitter && e.submitter.value;
      if (!label) return;
      e.preventDefault();
      mark(label);
    });
    document.addEventListener("keydown", (e) => {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
      const key = keyName(e);
      const media = /^(VIDEO|AUDIO)$/.test(e.target.tagName); // arrows seek a focused clip
      if (key === "r") mark("raccoon");
      else if (key === "n") mark("not_raccoon");
      else if (key === "u") mark("none");
      else if ((key === "ArrowLeft" && !media) || key === "k") go("newer");
      else if ((key === "ArrowRight" && !media) || key === "j") go("older");
      else return;
      e.preventDefault();
    });
  }

  const table = document.getElementById("events");
  if (table) eventList(table);
  const form = document.getElementById("verdict-form");
  if (form) eventPage(form);
})();
