#!/usr/bin/env python3
"""The console in a real browser (Debian's headless Chromium, driven by
Playwright): every page opens without a browser-console error and shows
what the database holds; a failed execution is re-run from the console and
succeeds; a trigger paused from the console stops firing; markup stored in
the database renders as text. A screenshot of each page goes to
target/console-screenshots/. Run by scripts/test.sh.

Environment: CONSOLE_URL (http://127.0.0.1:port), PSQL (a psql command line
for the test database, as a superuser), CHROMIUM (the browser), SHOTS (the
screenshot directory)."""

import json
import os
import re
import subprocess
import sys
import time

from playwright.sync_api import sync_playwright

URL = os.environ["CONSOLE_URL"].rstrip("/")
PSQL = os.environ["PSQL"].split()
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("SHOTS", "target/console-screenshots")


def sql(query):
    out = subprocess.run(PSQL + ["-X", "-A", "-t", "-q", "-c", query], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {query}\n{out.stderr}")
    return out.stdout.strip()


def wait_sql(query, what, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        if sql(query) == "t":
            return
        time.sleep(0.3)
    raise SystemExit(f"timed out: {what}")


failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", flush=True)
    else:
        print(f"ok: {what}", flush=True)


def main():
    os.makedirs(SHOTS, exist_ok=True)
    # the fixture's executions reach their states
    wait_sql("SELECT count(*) = 3 FROM automation_workflows.workflow_executions WHERE workflow_name = 'ok-flow' AND status = 'success'",
             "the ok-flow executions succeed")
    wait_sql("SELECT count(*) = 1 FROM automation_workflows.workflow_executions WHERE workflow_name = 'fail-flow' AND status = 'error'",
             "fail-flow fails")
    wait_sql("SELECT count(*) = 1 FROM automation_workflows.step_runs WHERE step = 'sleep' AND status = 'running'",
             "slow-flow runs")
    wait_sql("SELECT count(*) >= 1 FROM automation_workflows.workflow_executions WHERE workflow_name LIKE '<script>%' AND status = 'success'",
             "the markup workflow succeeds")
    wait_sql("SELECT count(*) >= 2 FROM automation.job_run_details WHERE status = 'succeeded'", "the job runs")
    failed_id = sql("SELECT id FROM automation_workflows.workflow_executions WHERE workflow_name = 'fail-flow'")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console_errors = []
        page.on("console", lambda m: console_errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
        dialogs = []

        def on_dialog(d):
            dialogs.append(d.message)
            d.accept()

        page.on("dialog", on_dialog)

        def visit(path, name):
            response = page.goto(URL + path)
            check(response is not None and response.status == 200, f"{path} answers 200")
            page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)
            return page.content()

        # the fixture's failing job has failed once (it fires every second)
        for _ in range(100):
            if sql("SELECT last_status FROM automation.job WHERE jobname = 'console-failing-job'") == "failed":
                break
            time.sleep(0.1)
        html = visit("/", "overview")
        check("Executions, last 24 hours" in html and "Scheduler" in html, "the overview shows its sections")
        check("launcher" in html, "the overview shows the scheduler's launcher")
        failing = page.locator("section", has_text="Failing jobs").inner_text()
        check("console-failing-job" in failing and "division by zero" in failing,
              "the overview lists the failing job, with why its last run failed")
        html = visit("/workflows", "workflows")
        for name in ["ok-flow", "fail-flow", "wait-flow", "slow-flow"]:
            check(name in html, f"the workflows page lists {name}")
        # markup stored as a workflow name is text, not markup
        check("&lt;script&gt;alert" in html and "<script>alert" not in html, "a workflow name with <script> renders as text")
        # (0.10.0) a workflow whose history keeps only its errors: the page
        # says so, and shows the counted executions instead of a success
        # rate made of failures only; the overview says its successes are
        # not in the chart
        check(sql("SELECT automation.set_queue_history('fail-flow', 'errors')") == "full", "fail-flow: history errors")
        visit("/workflows", "workflows-history")
        row = page.locator("table.list tbody tr", has_text="fail-flow").inner_text()
        check("errors" in row and "successes not kept" in row, f"the workflows page shows fail-flow's history mode ({row!r})")
        counted = sql("SELECT coalesce(sum(finished), 0) FROM automation.execution_stats WHERE workflow_name = 'ok-flow'")
        cells = page.locator("table.list tbody tr", has_text="ok-flow").locator("td")
        shown = (cells.nth(5).inner_text().strip(), cells.nth(8).inner_text().strip())
        check(counted != "0" and shown == ("full", counted), f"ok-flow: history full, {counted} counted executions ({shown!r})")
        visit("/", "overview-history")
        note = page.locator("p.not-kept").inner_text()
        check("fail-flow" in note and "errors" in note, f"the overview says whose successes the chart cannot show ({note!r})")
        visit("/queue", "queue-history")
        row = page.locator("tr", has_text="fail-flow").filter(has_text="successes are counted only").inner_text()
        check("errors" in row and "postgres" in row, f"the queue page lists fail-flow's history mode and who set it ({row!r})")
        sql("SELECT automation.set_queue_history('fail-flow', 'full')")
        visit("/queue", "queue-history-full")
        check(page.locator("tr", has_text="every workflow keeps its whole history").count() == 1,
              "back to full: the queue page says every workflow keeps its whole history")
        html = visit("/workflows/ok-flow", "workflow")
        check(page.locator("svg.dag g.node").count() == 3, "the DAG of ok-flow has its 3 steps")
        check(page.locator("svg.dag path.edge").count() == 2, "and its 2 edges")
        # (the trigger keeps starting executions: count before and after)
        before = int(sql("SELECT count(*) FROM automation_workflows.workflow_executions"))
        html = visit("/executions", "executions")
        after = int(sql("SELECT count(*) FROM automation_workflows.workflow_executions"))
        rows = page.locator("table.list tbody tr").count()
        check(min(before, 50) <= rows <= min(after, 50), f"the executions page shows every execution ({rows} of {before}..{after})")
        html = visit("/executions?status=failed", "executions-failed")
        check(failed_id in html and page.locator("table.list tbody tr").count() == 1, "the failed filter shows the failed execution only")
        row = page.locator("table.list tbody tr").first.inner_text()
        check("division by zero" in row and "22012" in row, f"the executions list shows the failure's message and SQLSTATE ({row!r})")
        html = visit(f"/executions/{failed_id}", "execution-failed")
        check(page.locator("svg.dag g.node.failed").count() == 1, "the failed step is coloured as failed")
        check("division by zero" in html and "22012" in html, "the attempt shows its error and SQLSTATE")
        check(page.locator(".gantt .bar").count() >= 2, "the timeline has the step runs")
        markup_id = sql("SELECT id FROM automation_workflows.workflow_executions WHERE workflow_name LIKE '<script>%' LIMIT 1")
        html = visit(f"/executions/{markup_id}", "execution-markup")
        page.locator("details summary").first.click()
        check("&lt;img src=x onerror=alert(1)&gt;" in page.content(), "a step output with markup renders as text")
        html = visit("/jobs", "jobs")
        jobid = sql("SELECT jobid FROM automation.job WHERE jobname = 'console-job'")
        check("console-job" in html, "the jobs page lists the job")
        check(page.locator("tr.error", has_text="console-failing-job").count() == 1
              and "division by zero" in page.locator("tr.error").first.inner_text(),
              "a job whose last run failed stands out, with the reason")
        html = visit(f"/jobs/{jobid}", "job")
        check(page.locator(".runs .run").count() >= 2, "the job's runs are on its timeline")
        html = visit("/triggers", "triggers")
        check("wait-flow" in html, "the triggers page lists the schedule trigger")
        html = visit("/errors", "errors")
        check("fail-flow" in html and "step_failed" in html, "the errors page shows the open error")
        html = visit("/queue", "queue")
        check("console-queue" in html and "console-outside" in html, "the queue page shows the queue and the step queue")

        # re-run the failed execution from the console, once the cause is fixed
        sql("UPDATE console_flag SET ok = true")
        page.goto(f"{URL}/executions/{failed_id}")
        page.get_by_role("button", name="Re-run from the failed step").click()
        page.wait_for_load_state()
        m = re.search(r"/executions/([0-9a-f-]{36})", page.url)
        check(m is not None and m.group(1) != failed_id, f"the re-run opens the new execution ({page.url})")
        check(any("Run this execution again" in d for d in dialogs), "the re-run asked for confirmation")
        if m:
            new_id = m.group(1)
            wait_sql(f"SELECT status = 'success' FROM automation_workflows.workflow_executions WHERE id = '{new_id}'",
                     "the re-run succeeds")
            check(sql(f"SELECT count(*) FROM automation_workflows.step_runs WHERE execution_id = '{new_id}' AND step = 'prepare' AND status = 'success'") == "1",
                  "the re-run carried over the step that had succeeded")
            # the page refreshes itself: it shows success without a reload
            try:
                # (polled from here: the console's Content-Security-Policy
                # forbids the eval that wait_for_function would need)
                deadline = time.time() + 20
                while page.locator("#live").get_attribute("data-refreshed") is None and time.time() < deadline:
                    page.wait_for_timeout(200)
                if page.locator("#live").get_attribute("data-refreshed") is None:
                    raise TimeoutError("no live refresh in 20 s")
                page.wait_for_selector("svg.dag g.node.done >> nth=2", timeout=20000)
            except Exception as e:  # say what the page was doing
                state = page.evaluate("""async () => {
                    const r = await fetch(window.location.href, {headers: {'X-Fragment': '1'}});
                    return {url: window.location.href, refresh: document.getElementById('live').getAttribute('data-refresh'),
                            refreshed: document.getElementById('live').getAttribute('data-refreshed'),
                            active: document.activeElement && document.activeElement.tagName, hidden: document.hidden,
                            open: !!document.querySelector('#live details[open]'), fetch: r.status};
                }""")
                print(f"the page did not refresh: {state} ({e})", flush=True)
                raise
            page.screenshot(path=os.path.join(SHOTS, "execution-rerun.png"), full_page=True)
            check(page.locator("svg.dag g.node.done").count() == 3, "the re-run's page shows every step done (live refresh)")
            check(sql(f"SELECT resolved_at IS NOT NULL FROM automation.errors WHERE execution_id = '{failed_id}'") == "t",
                  "the failed execution's error is resolved")

        # pause the trigger from the console: it stops firing
        trig = sql("SELECT id FROM automation_triggers.registry WHERE trigger_type = 'schedule'")
        wait_sql(f"SELECT count(*) >= 1 FROM automation_workflows.workflow_runs WHERE trigger_id = {trig}", "the trigger fires")
        page.goto(f"{URL}/triggers")
        page.locator(f"tr[data-trigger='{trig}'] button", has_text="Pause").click()
        page.wait_for_load_state()
        check("paused" in page.content(), "the triggers page says it is paused")
        check(sql(f"SELECT enabled FROM automation_triggers.registry WHERE id = {trig}") == "f", "the trigger is paused in the database")
        before = sql(f"SELECT count(*) FROM automation_workflows.workflow_runs WHERE trigger_id = {trig}")
        time.sleep(5)
        after = sql(f"SELECT count(*) FROM automation_workflows.workflow_runs WHERE trigger_id = {trig}")
        check(before == after, f"no fire while paused ({before} then {after})")
        page.screenshot(path=os.path.join(SHOTS, "triggers-paused.png"), full_page=True)

        check(not [d for d in dialogs if "alert" in d.lower() and "again" not in d], f"no script from the data ran ({dialogs})")
        check(not console_errors, f"the browser console has no errors ({console_errors})")

        # a forged POST (no CSRF cookie and token) is refused (the browser
        # logs the 403: after the console check above)
        status = page.evaluate(
            """async (url) => (await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'csrf=forged&value=true', credentials: 'omit'})).status""",
            f"{URL}/triggers/{trig}/enabled")
        check(status == 403, f"a POST without the console's token is refused ({status})")
        check(sql(f"SELECT enabled FROM automation_triggers.registry WHERE id = {trig}") == "f", "and changed nothing")

        browser.close()
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("console browser test passed; screenshots in " + SHOTS)


if __name__ == "__main__":
    main()
