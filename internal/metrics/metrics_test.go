package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/metrics"
	"github.com/conveyorhq/conveyor/internal/metrics/metricstest"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

func scrape(t *testing.T, m *metrics.Metrics) metricstest.Families {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	return metricstest.Scrape(t, srv.URL, "")
}

// One job retried once then succeeded, one that dies at its first
// attempt, seen through the same Tracker as the EMF metrics.
func TestJobChangesBecomeMetrics(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	tr := jobmetrics.NewTracker(m)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	snap := func(r *job.Record) *job.Record {
		c := *r
		c.Attempts = append([]job.Attempt(nil), r.Attempts...)
		return &c
	}

	a := job.New("in", "a.txt", "", "e1", 1000, 3, t0)
	tr.Changed(snap(a))
	a.Claim("v/1", "t1", t0.Add(2*time.Second), time.Minute, false)
	tr.Changed(snap(a)) // queue wait 2s
	tr.Changed(snap(a)) // heartbeat: nothing
	a.Timings = job.Timings{FetchMS: 100, ProcessMS: 200, UploadMS: 0}
	a.Fail(t0.Add(5*time.Second), nil, "boom", false, time.Second)
	tr.Changed(snap(a)) // attempt 1: 3s, retrying
	a.Claim("v/1", "t2", t0.Add(7*time.Second), time.Minute, false)
	tr.Changed(snap(a)) // a retry
	a.Timings = job.Timings{FetchMS: 100, ProcessMS: 300, UploadMS: 50}
	a.Succeed(t0.Add(8*time.Second), []job.Output{{Key: "a.txt/out", Size: 300}})
	a.OutputBytes = 300
	tr.Changed(snap(a)) // attempt 2: 1s, succeeded

	b := job.New("in", "b.txt", "", "e2", 50, 1, t0)
	tr.Changed(snap(b))
	b.Claim("v/1", "t3", t0.Add(time.Second), time.Minute, false)
	tr.Changed(snap(b))
	b.Fail(t0.Add(2*time.Second), nil, "bad input", true, 0)
	tr.Changed(snap(b))

	f := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"conveyor_jobs_created_total", nil, 2},
		{"conveyor_job_transitions_total", []string{"state=queued"}, 2},
		{"conveyor_job_transitions_total", []string{"state=running"}, 3},
		{"conveyor_job_transitions_total", []string{"state=retrying"}, 1},
		{"conveyor_job_transitions_total", []string{"state=succeeded"}, 1},
		{"conveyor_job_transitions_total", []string{"state=dead"}, 1},
		{"conveyor_job_transitions_total", []string{"state=superseded"}, 0},
		{"conveyor_jobs_unfinished", nil, 0},
		{"conveyor_job_attempts_total", nil, 3},
		{"conveyor_job_retries_total", nil, 1},
		{"conveyor_job_input_bytes_total", nil, 1000},
		{"conveyor_job_output_bytes_total", nil, 300},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		count  uint64
		sum    float64
	}{
		{"conveyor_job_queue_wait_seconds", nil, 2, 3},
		{"conveyor_job_attempt_duration_seconds", []string{"outcome=retrying"}, 1, 3},
		{"conveyor_job_attempt_duration_seconds", []string{"outcome=succeeded"}, 1, 1},
		{"conveyor_job_attempt_duration_seconds", []string{"outcome=dead"}, 1, 1},
		// Succeeded attempts only: the failed one's phases are not known.
		{"conveyor_job_phase_duration_seconds", []string{"phase=fetch"}, 1, 0.1},
		{"conveyor_job_phase_duration_seconds", []string{"phase=process"}, 1, 0.3},
		{"conveyor_job_phase_duration_seconds", []string{"phase=upload"}, 1, 0.05},
	} {
		if got := f.Count(t, c.name, c.labels...); got != c.count {
			t.Errorf("%s%v count = %d, want %d", c.name, c.labels, got, c.count)
		}
		if got := f.Sum(t, c.name, c.labels...); got < c.sum-1e-9 || got > c.sum+1e-9 {
			t.Errorf("%s%v sum = %v, want %v", c.name, c.labels, got, c.sum)
		}
	}
	for name, ls := range f.LabelValues() {
		for _, l := range ls {
			if strings.Contains(l, a.ID) || strings.Contains(l, b.ID) || strings.Contains(l, ".txt") {
				t.Errorf("%s has the label %s: a job ID or key", name, l)
			}
		}
	}
}

// After a restart the gauge of unfinished jobs comes from the first
// complete reconcile pass, then follows creations and ends.
func TestUnfinishedAfterRestart(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	tr := jobmetrics.NewTracker(m)
	t0 := time.Now().Add(-time.Hour)
	m.Reconciled(orchestrator.Report{Active: 5, ActiveCursorEnd: true, OldestUnfinished: t0, Duration: 20 * time.Millisecond})
	f := scrape(t, m)
	if got := f.Value(t, "conveyor_jobs_unfinished"); got != 5 {
		t.Fatalf("unfinished after the first pass = %v, want 5", got)
	}
	if got := f.Value(t, "conveyor_oldest_unfinished_job_age_seconds"); got < 3599 {
		t.Errorf("oldest unfinished age = %v, want about an hour", got)
	}
	// One of those five, running since before the restart, is seen at
	// its heartbeat then ends; a new job comes and stays.
	r := job.New("in", "old", "", "e", 1, 3, t0)
	r.Claim("v/1", "t", t0, time.Minute, false)
	tr.Changed(r)
	r.Succeed(time.Now(), nil)
	tr.Changed(r)
	tr.Changed(job.New("in", "new", "", "e", 1, 3, time.Now()))
	if got := scrape(t, m).Value(t, "conveyor_jobs_unfinished"); got != 5 {
		t.Errorf("unfinished = %v, want 5 (5 - 1 ended + 1 new)", got)
	}
	// A dead job put back in the queue (the dashboard's retry) is
	// unfinished again.
	d := job.New("in", "retried", "", "e", 1, 1, t0)
	d.State, d.Attempt = job.Queued, 1
	tr.Changed(d)
	if got := scrape(t, m).Value(t, "conveyor_jobs_unfinished"); got != 6 {
		t.Errorf("unfinished after a retry = %v, want 6", got)
	}
	m.Reconciled(orchestrator.Report{Active: 5, ActiveCursorEnd: true})
	// A pass stopped at its budget did not read every marker: no change.
	m.Reconciled(orchestrator.Report{Active: 2, Limited: true, Duration: time.Second})
	if got := scrape(t, m).Value(t, "conveyor_jobs_unfinished"); got != 5 {
		t.Errorf("unfinished after a limited pass = %v, want 5 still", got)
	}
	m.Reconciled(orchestrator.Report{Active: 0, ActiveCursorEnd: true})
	f = scrape(t, m)
	if got := f.Value(t, "conveyor_jobs_unfinished"); got != 0 {
		t.Errorf("unfinished after an empty pass = %v", got)
	}
	if got := f.Value(t, "conveyor_oldest_unfinished_job_age_seconds"); got != 0 {
		t.Errorf("oldest age with nothing unfinished = %v, want 0", got)
	}
}

func TestReconcileSnapshotsAndDispatches(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	before := time.Now()
	m.Reconciled(orchestrator.Report{Duration: 30 * time.Millisecond, Unfinished: 2, Missing: 3, ActiveCursorEnd: true})
	m.Reconciled(orchestrator.Report{Duration: time.Second, Errors: []error{errors.New("state bucket unreachable")}})
	m.Reconciled(orchestrator.Report{Duration: 2 * time.Second, Limited: true, Errors: []error{context.DeadlineExceeded}})
	m.SnapshotRun(3*time.Second, nil)
	m.SnapshotRun(time.Second, errors.New("disk full"))

	var calls int
	d := m.Dispatcher(fakeDispatcher(func() error {
		calls++
		switch calls {
		case 1:
			return nil
		case 2:
			return dispatch.ErrFull
		}
		return dispatch.ErrClosed
	}))
	for i := 0; i < 3; i++ {
		d.Dispatch(context.Background(), strings.Repeat("a", 32))
	}
	if d.Name() != "fake" {
		t.Errorf("the counting dispatcher is named %q, want the driver's", d.Name())
	}

	f := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"conveyor_reconcile_passes_total", nil, 3},
		{"conveyor_reconcile_pass_failures_total", nil, 1}, // the limited pass's deadline is no failure
		{"conveyor_reconcile_limited_passes_total", nil, 1},
		{"conveyor_reconcile_redispatched_total", nil, 2},
		{"conveyor_reconcile_lost_events_total", nil, 3},
		{"conveyor_snapshot_runs_total", []string{"result=succeeded"}, 1},
		{"conveyor_snapshot_runs_total", []string{"result=failed"}, 1},
		{"conveyor_dispatches_total", []string{"result=ok"}, 1},
		{"conveyor_dispatches_total", []string{"result=full"}, 1},
		{"conveyor_dispatches_total", []string{"result=error"}, 1},
		{"conveyor_build_info", nil, 1},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := f.Count(t, "conveyor_reconcile_pass_duration_seconds"); got != 3 {
		t.Errorf("reconcile durations observed: %d, want 3", got)
	}
	if got := f.Count(t, "conveyor_snapshot_run_duration_seconds"); got != 2 {
		t.Errorf("snapshot durations observed: %d, want 2", got)
	}
	for _, name := range []string{"conveyor_reconcile_last_success_timestamp_seconds", "conveyor_snapshot_last_success_timestamp_seconds"} {
		if got := f.Value(t, name); got < float64(before.Unix()) {
			t.Errorf("%s = %v, want a time after the start of the test", name, got)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := f[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
}

type fakeDispatcher func() error

func (f fakeDispatcher) Name() string { return "fake" }
func (f fakeDispatcher) Dispatch(context.Context, string) (string, error) {
	return "", f()
}
func (f fakeDispatcher) Close() error { return nil }

// Every name follows the conventions: the conveyor_ prefix, _total on
// counters only, base units.
func TestNamesFollowConventions(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.Webhooks(func() []metrics.WebhookStats { return []metrics.WebhookStats{{Index: 0}} })
	f := scrape(t, m)
	n := 0
	for name, fam := range f {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		n++
		if !strings.HasPrefix(name, "conveyor_") {
			t.Errorf("%s lacks the conveyor_ prefix", name)
		}
		counter := fam.GetType().String() == "COUNTER"
		if counter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %s: _total is for counters, and every counter has it", name, fam.GetType())
		}
		for _, bad := range []string{"_ms", "_milliseconds", "_kb", "_mb", "_minutes"} {
			if strings.Contains(name, bad) {
				t.Errorf("%s is not in base units", name)
			}
		}
		if fam.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
	}
	if n < 25 {
		t.Errorf("only %d conveyor_ families in a fresh scrape: a labelled metric is not initialized", n)
	}
}

// The metrics server refuses what the dashboard refuses.
func TestServeRules(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	if _, err := metrics.Serve("0.0.0.0:0", "", m.Handler()); err == nil || !strings.Contains(err.Error(), "metrics.token") {
		t.Errorf("a non-loopback address without a token: %v, want an error naming metrics.token", err)
	}
	if _, err := metrics.Serve("127.0.0.1:0", "short", m.Handler()); err == nil {
		t.Error("a short token was accepted")
	}
	s, err := metrics.Serve("127.0.0.1:0", "", m.Handler())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	metricstest.Scrape(t, "http://"+s.Addr()+"/metrics", "")
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+"/metrics", nil)
	req.Host = "attacker.example:80" // DNS rebinding
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("a foreign Host got %s", resp.Status)
	}

	const token = "0123456789abcdef0123"
	st, err := metrics.Serve("127.0.0.1:0", token, m.Handler())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	resp, err = http.Get("http://" + st.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %s, want 401", resp.Status)
	}
	metricstest.Scrape(t, "http://"+st.Addr()+"/metrics", token)
}
