package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/metrics/metricstest"
	"github.com/conveyorhq/conveyor/internal/notify"
)

// observeScript fails keys with "dead" for good (exit 65), fails the
// first attempt of keys with "flaky", waits for <mark>/go on keys with
// "hang", and copies the input otherwise.
func observeScript(t *testing.T, mark string) string {
	return writeScript(t, t.TempDir(), "proc.sh", fmt.Sprintf(`
mark=%q
case "$CONVEYOR_INPUT_KEY" in
  *dead*) echo "this input can never succeed" >&2; exit 65;;
  *flaky*) if [ ! -e "$mark/$CONVEYOR_JOB_ID" ]; then touch "$mark/$CONVEYOR_JOB_ID"; echo "first attempt fails" >&2; exit 1; fi;;
  *hang*) while [ ! -e "$mark/go" ]; do sleep 0.05; done;;
esac
cp "$CONVEYOR_INPUT" "$CONVEYOR_OUTPUT_DIR/copy"
`, mark))
}

// hookReceiver is a webhook receiver that checks every signature with
// the secret and records the changes it accepted, by key.
type hookReceiver struct {
	*httptest.Server
	secret []byte
	block  chan struct{} // when not nil, every request waits for it to close

	mu       sync.Mutex
	changes  map[string][]string // key -> states, in arrival order
	ids      map[string]bool     // event IDs seen
	bad      []string
	arrived  int
	answered int
}

func newHookReceiver(t *testing.T, secret string, block chan struct{}) *hookReceiver {
	h := &hookReceiver{secret: []byte(secret), block: block, changes: map[string][]string{}, ids: map[string]bool{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.arrived++
		h.mu.Unlock()
		if h.block != nil {
			<-h.block
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.answered++
		if err := notify.Verify(h.secret, r.Header.Get(notify.SignatureHeader), body, time.Now(), 0); err != nil {
			h.bad = append(h.bad, err.Error())
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var d jobevents.Detail
		if err := json.Unmarshal(body, &d); err != nil {
			h.bad = append(h.bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id := r.Header.Get(notify.EventIDHeader)
		if h.ids[id] {
			w.WriteHeader(http.StatusOK) // a duplicate: accepted, not counted
			return
		}
		h.ids[id] = true
		h.changes[d.Key] = append(h.changes[d.Key], d.State)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	if block != nil {
		t.Cleanup(func() { close(block) }) // runs before Close (cleanups run last first), which waits for its handlers
	}
	return h
}

func (h *hookReceiver) states(key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.changes[key], " ")
}

func (h *hookReceiver) counts() (arrived, answered int, bad []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.arrived, h.answered, append([]string(nil), h.bad...)
}

// waitScrape scrapes url until cond holds on the result.
func waitScrape(t *testing.T, url, what string, cond func(metricstest.Families) bool) metricstest.Families {
	t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for {
		f := metricstest.Scrape(t, url, "")
		if cond(f) {
			return f
		}
		if time.Now().After(deadline) {
			var vals []string
			for _, name := range f.Names() {
				if strings.HasPrefix(name, "conveyor_") {
					b, _ := json.Marshal(f[name].Metric)
					vals = append(vals, name+" "+string(b))
				}
			}
			t.Fatalf("%s: not within %s; the last scrape:\n%s", what, jobTimeout, strings.Join(vals, "\n"))
		}
		time.Sleep(pollEvery)
	}
}

// Jobs that succeed, die and are retried show in /metrics (scraped over
// HTTP from the dashboard, read with the Prometheus text parser) and
// reach a webhook, signed; a second webhook that does not answer slows
// none of it.
func TestMetricsAndWebhooksOfUp(t *testing.T) {
	t.Parallel()
	mark := t.TempDir()
	const secret, slowSecret = "e2e-webhook-secret-0123456789", "e2e-slow-webhook-secret-0123"
	hook := newHookReceiver(t, secret, nil)
	slow := newHookReceiver(t, slowSecret, make(chan struct{}))
	up := startUp(t, upOptions{
		Env: []string{"E2E_HOOK_SECRET=" + secret},
		Config: fmt.Sprintf(`processor:
  command: [%q]
retry:
  max_attempts: 3
  backoff: 100ms
reconcile:
  interval: 1s
dashboard:
  addr: 127.0.0.1:%d
notify:
  webhooks:
    - url: %s/hook
      secret_env: E2E_HOOK_SECRET
    - url: %s/slow
      secret: %s
      states: [succeeded, dead]
`, observeScript(t, mark), freePort(t), hook.URL, slow.URL, slowSecret),
	})
	metricsURL := dashboardURL(t, up) + "/metrics"

	inputs := map[string][]byte{
		"obs/ok-1.txt":  []byte("one"),
		"obs/ok-2.txt":  []byte("two two"),
		"obs/ok-3.txt":  []byte("three three three"),
		"obs/flaky.txt": []byte("fails once"),
		"obs/dead.txt":  []byte("never"),
	}
	ids := map[string]string{}
	var inBytes int64
	for k, b := range inputs {
		ids[k] = put(t, up.S3, k, b)
	}
	for k, id := range ids {
		want := job.Succeeded
		if strings.Contains(k, "dead") {
			want = job.Dead
		} else {
			inBytes += int64(len(inputs[k]))
		}
		waitState(t, up.S3, id, want, jobTimeout)
	}
	// Every job ended while the slow receiver held its first request:
	// the webhook did not hold the pipeline.
	if arrived, answered, _ := slow.counts(); answered != 0 {
		t.Fatalf("the slow receiver answered %d of %d requests before the jobs ended: want none", answered, arrived)
	}

	// The webhook got every change of every job, in order, signed.
	want := map[string]string{
		"obs/ok-1.txt":  "queued running succeeded",
		"obs/ok-2.txt":  "queued running succeeded",
		"obs/ok-3.txt":  "queued running succeeded",
		"obs/flaky.txt": "queued running retrying running succeeded",
		"obs/dead.txt":  "queued running dead",
	}
	deadline := time.Now().Add(jobTimeout)
	for k, w := range want {
		for hook.states(k) != w && time.Now().Before(deadline) {
			time.Sleep(pollEvery)
		}
		if got := hook.states(k); got != w {
			t.Errorf("webhook changes of %s: %q, want %q", k, got, w)
		}
	}
	if _, _, bad := hook.counts(); len(bad) > 0 {
		t.Errorf("requests the receiver refused: %v", bad)
	}

	// The metrics, once a reconcile pass has seen nothing unfinished.
	n := float64(len(inputs))
	changes := 0
	for _, w := range want {
		changes += len(strings.Fields(w))
	}
	f := waitScrape(t, metricsURL, "all jobs finished in the metrics", func(f metricstest.Families) bool {
		return f.Value(t, "conveyor_job_transitions_total", "state=succeeded") == n-1 &&
			f.Value(t, "conveyor_jobs_unfinished") == 0 &&
			f.Value(t, "conveyor_webhook_deliveries_total", "webhook=0", "result=delivered") == float64(changes)
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"conveyor_jobs_created_total", nil, n},
		{"conveyor_job_transitions_total", []string{"state=queued"}, n},
		{"conveyor_job_transitions_total", []string{"state=running"}, n + 1},
		{"conveyor_job_transitions_total", []string{"state=retrying"}, 1},
		{"conveyor_job_transitions_total", []string{"state=dead"}, 1},
		{"conveyor_job_attempts_total", nil, n + 1},
		{"conveyor_job_retries_total", nil, 1},
		{"conveyor_job_input_bytes_total", nil, float64(inBytes)},
		{"conveyor_job_output_bytes_total", nil, float64(inBytes)}, // the processor copies its input
		{"conveyor_reconcile_pass_failures_total", nil, 0},
		{"conveyor_webhook_deliveries_total", []string{"webhook=0", "result=failed"}, 0},
		{"conveyor_webhook_dropped_total", []string{"webhook=0"}, 0},
		{"conveyor_webhook_deliveries_total", []string{"webhook=1", "result=delivered"}, 0},
		{"conveyor_build_info", nil, 1},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   uint64
	}{
		{"conveyor_job_queue_wait_seconds", nil, uint64(n)},
		{"conveyor_job_attempt_duration_seconds", []string{"outcome=succeeded"}, uint64(n - 1)},
		{"conveyor_job_attempt_duration_seconds", []string{"outcome=retrying"}, 1},
		{"conveyor_job_attempt_duration_seconds", []string{"outcome=dead"}, 1},
		{"conveyor_job_phase_duration_seconds", []string{"phase=fetch"}, uint64(n - 1)},
		{"conveyor_job_phase_duration_seconds", []string{"phase=process"}, uint64(n - 1)},
		{"conveyor_job_phase_duration_seconds", []string{"phase=upload"}, uint64(n - 1)},
	} {
		if got := f.Count(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v has %d observations, want %d", c.name, c.labels, got, c.want)
		}
	}
	if got := f.Value(t, "conveyor_dispatches_total", "result=ok"); got < n+1 {
		t.Errorf("conveyor_dispatches_total{result=ok} = %v, want at least one per job and one for the retry (%v)", got, n+1)
	}
	if got := f.Value(t, "conveyor_reconcile_passes_total"); got < 1 {
		t.Errorf("no reconcile pass counted")
	}
	if got := f.Count(t, "conveyor_reconcile_pass_duration_seconds"); got < 1 {
		t.Errorf("no reconcile pass duration observed")
	}
	if q := f.Value(t, "conveyor_webhook_queue_length", "webhook=1"); q < 1 {
		t.Errorf("the slow webhook's queue holds %v changes, want the ones waiting behind its first", q)
	}
	for name, ls := range f.LabelValues() {
		for _, l := range ls {
			for k, id := range ids {
				if strings.Contains(l, id) || strings.Contains(l, k) || strings.Contains(l, "obs/") {
					t.Errorf("%s has the label %s: a job ID or key", name, l)
				}
			}
		}
	}
}

// The gauge of unfinished jobs is right after a restart: a job left
// unfinished by the last run counts from the first reconcile pass.
func TestUnfinishedGaugeAfterRestart(t *testing.T) {
	t.Parallel()
	mark := t.TempDir()
	cfg := fmt.Sprintf("processor:\n  command: [%q]\nreconcile:\n  interval: 1s\ndashboard:\n  addr: 127.0.0.1:%d\n", observeScript(t, mark), freePort(t))
	dataDir := t.TempDir()
	up := startUp(t, upOptions{Config: cfg, DataDir: dataDir})
	id := put(t, up.S3, "obs/hang.txt", []byte("waits"))
	waitRecord(t, up.S3, id, jobTimeout, "running", func(r *job.Record) bool { return r.State == job.Running })
	// The record says running before the metrics have seen the claim
	// (they follow the records' changes): wait for both.
	f := waitScrape(t, dashboardURL(t, up)+"/metrics", "one job unfinished, its attempt counted", func(f metricstest.Families) bool {
		return f.Value(t, "conveyor_jobs_unfinished") == 1 && f.Value(t, "conveyor_job_attempts_total") >= 1
	})
	if got := f.Value(t, "conveyor_job_attempts_total"); got != 1 {
		t.Fatalf("attempts %v before the restart, want 1", got)
	}
	up.stop()

	up = startUp(t, upOptions{Config: cfg, DataDir: dataDir, Port: up.Port})
	url := dashboardURL(t, up) + "/metrics"
	f = waitScrape(t, url, "a reconcile pass after the restart", func(f metricstest.Families) bool {
		return f.Value(t, "conveyor_reconcile_passes_total") >= 1
	})
	if got := f.Value(t, "conveyor_jobs_unfinished"); got != 1 {
		t.Errorf("unfinished after the restart = %v, want 1 (the job the last run left)", got)
	}
	if got := f.Value(t, "conveyor_oldest_unfinished_job_age_seconds"); got <= 0 {
		t.Errorf("oldest unfinished job age after the restart = %v, want the left job's age", got)
	}
	if got := f.Value(t, "conveyor_jobs_created_total"); got != 0 {
		t.Errorf("jobs created by this run = %v, want 0", got)
	}
	if err := os.WriteFile(filepath.Join(mark, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitState(t, up.S3, id, job.Succeeded, jobTimeout)
	waitScrape(t, url, "no job unfinished", func(f metricstest.Families) bool {
		return f.Value(t, "conveyor_jobs_unfinished") == 0 && f.Value(t, "conveyor_oldest_unfinished_job_age_seconds") == 0
	})
}
