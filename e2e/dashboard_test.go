package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/conveyorhq/conveyor/internal/dashboard/browser"
	"github.com/conveyorhq/conveyor/internal/job"
)

// browserTimeout bounds each wait on the page; like the other bounds, it
// is a failure bound, never a delay.
const browserTimeout = 60 * time.Second

// dashboardURL is the dashboard address `conveyor up` wrote to run.json.
func dashboardURL(t *testing.T, up *upProc) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(up.DataDir, "run.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ri struct {
		Dashboard string `json:"dashboard"`
	}
	if err := json.Unmarshal(b, &ri); err != nil || ri.Dashboard == "" {
		t.Fatalf("run.json has no dashboard address (%v):\n%s", err, b)
	}
	return strings.TrimSuffix(ri.Dashboard, "/")
}

// startBrowser starts headless Chromium for the test, or skips the test
// when there is none.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := browser.Path(); err != nil {
		t.Skipf("skipping the browser test: %v", err)
	}
	ctx, cancel, err := browser.Start(context.Background(), t.TempDir(), 1280, 900)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return ctx
}

// do runs browser steps with a failure bound.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, pageState(ctx))
	}
}

// pageState describes the page for a failure message.
func pageState(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 3000)`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return "page " + s
}

// waitJS waits until the JavaScript expression is truthy and returns its
// value as T.
func waitJS[T any](t *testing.T, ctx context.Context, what, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[T](expr, chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		t.Fatalf("page never showed %s (%s): %v\n%s", what, expr, err, pageState(ctx))
	}
	return v
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// rowState is a JS expression: the state shown in the list for job id.
func rowState(id string) string {
	return fmt.Sprintf(`(document.querySelector('tr[data-id="%s"] .state') || {}).textContent`, id)
}

// TestDashboardInBrowser drives the dashboard of a real `conveyor up` in
// headless Chromium: upload through the page, watch the job succeed live,
// read its log, download its output; a failing job shows its error and is
// retried with the button; a key with HTML in it stays text.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := startBrowser(t)
	dir := t.TempDir()
	mark := filepath.Join(dir, "let-it-pass")
	script := writeScript(t, dir, "proc.sh", fmt.Sprintf(`case "$CONVEYOR_INPUT_KEY" in
*will-fail*)
  if [ ! -e %q ]; then echo "boom: cannot digest $CONVEYOR_INPUT_KEY" >&2; exit 1; fi ;;
esac
echo "processing $(wc -c < "$CONVEYOR_INPUT") bytes"
cp "$CONVEYOR_INPUT" "$CONVEYOR_OUTPUT_DIR/copy.bin"
`, mark))
	up := startUp(t, upOptions{Config: fmt.Sprintf(`processor:
  command: [%q]
retry:
  max_attempts: 1
dashboard:
  addr: 127.0.0.1:%d
`, script, freePort(t))})
	base := dashboardURL(t, up)

	// ---- upload through the page; the job appears and succeeds live ----
	body := make([]byte, 9<<20+12345) // more than one 8 MiB part: multipart
	rand.Read(body)
	name := fmt.Sprintf("upload-%d.bin", time.Now().UnixNano())
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "open the dashboard",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#drop")),
	)
	waitJS[bool](t, ctx, "the live indicator", `document.getElementById("live").textContent === "live"`)
	// A marker that a reload would wipe out.
	evalJS[bool](t, ctx, `window.__sameDocument = true`)
	do(t, ctx, "choose the file", chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{file}))
	waitJS[bool](t, ctx, "the upload finished", `[...document.querySelectorAll("#uploads li.done .name")].some(e => e.textContent === `+jsString(name)+`)`)
	id := headJobID(t, up.S3, name)
	waitJS[bool](t, ctx, "the uploaded job succeeded in the list", rowState(id)+` === "succeeded"`)
	if !evalJS[bool](t, ctx, `window.__sameDocument === true`) {
		t.Fatal("the page reloaded: the list must update live")
	}
	if got := evalJS[string](t, ctx, fmt.Sprintf(`document.querySelector('tr[data-id="%s"] td.key').textContent`, id)); got != name {
		t.Errorf("list shows key %q, want %q", got, name)
	}
	rec := waitState(t, up.S3, id, job.Succeeded, jobTimeout)
	if rec.Size != int64(len(body)) {
		t.Errorf("record size %d, want %d", rec.Size, len(body))
	}

	// ---- its page: log and output download ----
	do(t, ctx, "open the job page",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"] td.key a`, id))),
		chromedp.WaitVisible(chromedp.CSS("#job-state")),
	)
	waitJS[bool](t, ctx, "the log", `document.getElementById("log").textContent.includes("attempt 1 succeeded")`)
	if log := evalJS[string](t, ctx, `document.getElementById("log").textContent`); !strings.Contains(log, fmt.Sprintf("processing %d bytes", len(body))) {
		t.Errorf("log on the page lacks the processor's output:\n%s", log)
	}
	// Download the output as the page links it, and hash it in the page.
	got := evalJS[map[string]any](t, ctx, `(async () => {
		const a = document.querySelector('#output-list a[download]');
		const r = await fetch(a.href);
		const b = await r.arrayBuffer();
		const h = await crypto.subtle.digest("SHA-256", b);
		return {name: a.textContent, status: r.status, size: b.byteLength, disp: r.headers.get("Content-Disposition"),
			sha256: [...new Uint8Array(h)].map(x => x.toString(16).padStart(2, "0")).join("")};
	})()`)
	if got["name"] != "copy.bin" || got["status"] != float64(200) || got["size"] != float64(len(body)) || got["sha256"] != sha256Hex(body) {
		t.Errorf("downloaded output: %v; want copy.bin, 200, %d bytes, sha256 %s", got, len(body), sha256Hex(body))
	}
	if d, _ := got["disp"].(string); !strings.HasPrefix(d, "attachment") {
		t.Errorf("output served with Content-Disposition %q, want an attachment", d)
	}

	// ---- a failing job: its error shows, the button retries it ----
	failKey := "will-fail.txt"
	failID := put(t, up.S3, failKey, []byte("not digestible\n"))
	// The record is created just after the upload's response: open the
	// page once it exists (the page does not poll for a job it cannot find).
	waitRecord(t, up.S3, failID, jobTimeout, "the failing job's record", func(*job.Record) bool { return true })
	do(t, ctx, "open the failing job's page", chromedp.Navigate(base+"/jobs/"+failID), chromedp.WaitVisible(chromedp.CSS("#job-state")))
	waitJS[bool](t, ctx, "the job dead", `document.getElementById("job-state").textContent === "dead"`)
	errText := waitJS[string](t, ctx, "the error", `!document.getElementById("job-error").hidden && document.getElementById("job-error").textContent`)
	if !strings.Contains(errText, "exit") {
		t.Errorf("error shown %q, want the processor's exit", errText)
	}
	waitJS[bool](t, ctx, "the log of the failure", `document.getElementById("log").textContent.includes("boom: cannot digest")`)
	if err := os.WriteFile(mark, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "press retry",
		chromedp.WaitVisible(chromedp.CSS("#retry")),
		chromedp.Click(chromedp.CSS("#retry")),
		chromedp.WaitVisible(chromedp.CSS("#retried")),
	)
	waitJS[bool](t, ctx, "the retried job succeeded", `document.getElementById("job-state").textContent === "succeeded"`)
	if a := evalJS[string](t, ctx, `document.querySelector('[data-f="attempts"]').textContent`); a != "2/2" {
		t.Errorf("attempts after retry %q, want 2/2", a)
	}
	r := waitState(t, up.S3, failID, job.Succeeded, jobTimeout)
	if len(r.Attempts) != 2 || r.Attempts[0].Error == "" {
		t.Errorf("after retry: %d attempts, first error %q; want 2, the first failed", len(r.Attempts), r.Attempts[0].Error)
	}

	// ---- a key with HTML in it is text, in the live list and on its page ----
	do(t, ctx, "open the list", chromedp.Navigate(base+"/?q=onerror"), chromedp.WaitVisible(chromedp.CSS("#jobs")))
	waitJS[bool](t, ctx, "the live indicator", `document.getElementById("live").textContent === "live"`)
	hostile := `<img src=x onerror="window.__xss=1">.txt`
	hid := put(t, up.S3, hostile, []byte("hello\n"))
	waitJS[bool](t, ctx, "the hostile key's job, live", rowState(hid)+` === "succeeded"`)
	checkText := func(where, sel string) {
		t.Helper()
		if got := evalJS[string](t, ctx, `document.querySelector(`+jsString(sel)+`).textContent`); got != hostile {
			t.Errorf("%s shows %q, want the key as text %q", where, got, hostile)
		}
		if n := evalJS[int](t, ctx, `document.querySelectorAll("img:not(.brand img)").length + (window.__xss ? 1000 : 0)`); n != 0 {
			t.Errorf("%s: the key was injected as HTML (%d img elements or a handler ran)", where, n)
		}
	}
	checkText("the live list", fmt.Sprintf(`tr[data-id="%s"] td.key a`, hid))
	do(t, ctx, "reload the list", chromedp.Navigate(base+"/?q=onerror"), chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"]`, hid))))
	checkText("the server-rendered list", fmt.Sprintf(`tr[data-id="%s"] td.key a`, hid))
	do(t, ctx, "open its page", chromedp.Navigate(base+"/jobs/"+hid), chromedp.WaitVisible(chromedp.CSS("#job-key")))
	checkText("the job page", "#job-key")
}

// TestDashboardSecurity checks, over HTTP, what a browser test cannot
// see well: CSRF rejection and the token on a non-loopback address.
func TestDashboardSecurity(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{Config: fmt.Sprintf("dashboard:\n  addr: 0.0.0.0:%d\n", freePort(t))})
	base := dashboardURL(t, up)
	if !strings.Contains(base, "?token=") {
		t.Fatalf("a dashboard on 0.0.0.0 must print a URL with a token, got %s", base)
	}
	if !strings.Contains(up.stderr.String(), "dashboard listens on 0.0.0.0") {
		t.Errorf("no warning about the reachable dashboard on stderr:\n%s", up.stderr)
	}
	if !strings.Contains(up.stdout.String(), "token required") {
		t.Errorf("the banner does not say a token is required:\n%s", up.stdout)
	}
	root, token, _ := strings.Cut(base, "?token=")
	root = strings.TrimSuffix(root, "/")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(root + "/api/jobs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the token: %s, want 401", resp.Status)
	}
	req, _ := http.NewRequest("GET", root+"/api/jobs", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("with the token: %s, want 200", resp.Status)
	}
	req, _ = http.NewRequest("POST", root+"/api/upload?key=x.txt", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("upload without a CSRF token: %s, want 403", resp.Status)
	}
	if keys := listKeys(t, up.S3, inputBucket, ""); len(keys) != 0 {
		t.Errorf("a rejected upload stored %v", keys)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
