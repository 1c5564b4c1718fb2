package lambda_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/lambda"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// scheduledEvent is what an EventBridge schedule sends.
const scheduledEvent = `{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-27T00:00:00Z","region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/conveyor-reconcile"],"detail":{}}`

// reconciler is setup's handler in the reconciler role.
func reconciler(t *testing.T) (*lambda.Handler, bundle) {
	t.Helper()
	h, b := setup(t, orchestrator.Config{})
	h.Role = lambda.RoleReconciler
	h.Function = "Conveyor-Reconciler-AbC123"
	return h, b
}

// A schedule's event runs the reconciler: an object whose notification was
// lost gets its job and is dispatched; one that has a job is left alone.
func TestScheduledEventReconciles(t *testing.T) {
	t.Parallel()
	h, b := reconciler(t)
	seen := b.put(t, "seen.txt", "s")
	h.Role = lambda.RoleOrchestrator
	if _, err := h.Handle(context.Background(), notification(t, seen)); err != nil {
		t.Fatal(err)
	}
	h.Role = lambda.RoleReconciler
	lost := b.put(t, "lost.txt", "l") // no event delivered
	b.disp.Reset()
	resp, err := h.Handle(context.Background(), json.RawMessage(scheduledEvent))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Reconciled == nil || resp.Reconciled.Objects != 2 || resp.Reconciled.Missing != 1 || resp.Reconciled.Limited {
		t.Fatalf("response %+v, want 2 objects seen and 1 missing", resp.Reconciled)
	}
	b.mustRecord(t, jobID(lost))
	got := b.disp.Dispatched()
	if len(got) == 0 || got[0] != jobID(lost) {
		t.Fatalf("dispatched %v, want the lost object's job %s first", got, jobID(lost))
	}
	lines := b.logLines(t)
	last := lines[len(lines)-1]
	if last["msg"] != "reconciled" || last["ReconcileFailed"] != 0.0 || last["ReconcileObjects"] != 2.0 || last["ReconcileDispatched"] != float64(len(got)) {
		t.Errorf("last log line %v, want the pass's metric line: not failed, 2 objects, %d dispatched", last, len(got))
	}
}

// The orchestrator no longer reconciles: a schedule's event reaching it is
// ignored, with a warning, and does not fail (which would only retry it
// and park it in the dead-letter queue).
func TestOrchestratorIgnoresSchedule(t *testing.T) {
	t.Parallel()
	h, b := setup(t, orchestrator.Config{})
	b.put(t, "lost.txt", "l")
	resp, err := h.Handle(context.Background(), json.RawMessage(scheduledEvent))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(lambda.Response{Ignored: lambda.IgnoredSchedule}, resp); d != "" {
		t.Errorf("response (-want +got):\n%s", d)
	}
	if n := len(b.disp.Dispatched()); n != 0 {
		t.Errorf("%d jobs dispatched, want none", n)
	}
	if lines := b.logLines(t); len(lines) != 1 || lines[0]["msg"] != "event ignored" || lines[0]["level"] != "WARN" ||
		!strings.Contains(fmt.Sprint(lines[0]["reason"]), "CONVEYOR_LAMBDA_ROLE=reconciler") {
		t.Errorf("log lines %v, want one warning naming the reconciler role", lines)
	}
}

// The reconciler handles nothing but scheduled events.
func TestReconcilerRefusesOtherEvents(t *testing.T) {
	t.Parallel()
	h, b := reconciler(t)
	oc := b.put(t, "in/a.txt", "a")
	for name, ev := range map[string]json.RawMessage{
		"S3 notification": notification(t, oc),
		"test event":      json.RawMessage(`{"Service":"Amazon S3","Event":"s3:TestEvent"}`),
		"other schedule":  json.RawMessage(`{"detail-type":"Scheduled Event","source":"custom"}`),
		"not JSON":        json.RawMessage(`nope`),
	} {
		resp, err := h.Handle(context.Background(), ev)
		if err == nil || !strings.Contains(err.Error(), "handles only EventBridge scheduled events") {
			t.Errorf("%s: %+v, %v; want an error saying the reconciler takes scheduled events only", name, resp, err)
		}
	}
	if n := len(b.disp.Dispatched()); n != 0 {
		t.Errorf("%d jobs dispatched, want none", n)
	}
}

// A failed pass writes one embedded-metric-format line: the "_aws"
// directive declares the five metrics in namespace Conveyor with the
// Function dimension, and the line carries their values, the dimension and
// the first error. The invocation does not fail: a failed pass must never
// reach a retry or a dead-letter queue; the next pass resumes.
func TestReconcileFailedMetricLine(t *testing.T) {
	t.Parallel()
	h, b := reconciler(t)
	before := time.Now().UnixMilli()
	h.Pass = func(ctx context.Context) (orchestrator.Report, error) {
		return orchestrator.Report{Objects: 7, Missing: 2, Unfinished: 1, Superseded: 1, Active: 4, Held: 1,
			Errors: []error{errors.New("get job 01: AccessDenied"), errors.New("dispatch job 02: throttled")}}, nil
	}
	resp, err := h.Handle(context.Background(), json.RawMessage(scheduledEvent))
	if err != nil {
		t.Errorf("a failed pass failed the invocation (%v): Lambda would hand it to retries and dead-letter queues", err)
	}
	want := &lambda.Reconciled{Objects: 7, Missing: 2, Unfinished: 1, Superseded: 1, Backlog: 4, Held: 1, Errors: []string{"get job 01: AccessDenied", "dispatch job 02: throttled"}}
	if d := cmp.Diff(want, resp.Reconciled); d != "" {
		t.Errorf("response (-want +got):\n%s", d)
	}
	lines := b.logLines(t)
	if len(lines) != 2 || lines[1]["msg"] != "reconcile pass failed; the next pass resumes" || lines[1]["error"] != "get job 01: AccessDenied" {
		t.Fatalf("%d log lines, want the pass's metric line and the failure's: %v", len(lines), lines)
	}
	line := lines[0]
	aws, _ := line["_aws"].(map[string]any)
	ts, _ := aws["Timestamp"].(float64)
	if ts < float64(before) || ts > float64(time.Now().UnixMilli()) {
		t.Errorf("_aws.Timestamp %v is not the pass's time in epoch milliseconds", aws["Timestamp"])
	}
	wantDirective := []any{map[string]any{
		"Namespace":  "Conveyor",
		"Dimensions": []any{[]any{"Function"}},
		"Metrics": []any{
			map[string]any{"Name": "ReconcileFailed", "Unit": "Count"},
			map[string]any{"Name": "ReconcileDuration", "Unit": "Milliseconds"},
			map[string]any{"Name": "ReconcileObjects", "Unit": "Count"},
			map[string]any{"Name": "ReconcileDispatched", "Unit": "Count"},
			map[string]any{"Name": "Backlog", "Unit": "Count"},
		},
	}}
	if d := cmp.Diff(wantDirective, aws["CloudWatchMetrics"]); d != "" {
		t.Errorf("_aws.CloudWatchMetrics (-want +got):\n%s", d)
	}
	if len(aws) != 2 {
		t.Errorf("_aws has %d members, want Timestamp and CloudWatchMetrics: %v", len(aws), aws)
	}
	// Every dimension and metric the directive names is a top-level field
	// of the right kind (CloudWatch drops a line where one is missing).
	if line["Function"] != "Conveyor-Reconciler-AbC123" {
		t.Errorf("Function = %v, want the function's name", line["Function"])
	}
	for name, want := range map[string]float64{"ReconcileFailed": 1, "ReconcileObjects": 7, "ReconcileDispatched": 3, "Backlog": 4} {
		if line[name] != want {
			t.Errorf("%s = %v, want %v", name, line[name], want)
		}
	}
	if d, ok := line["ReconcileDuration"].(float64); !ok || d < 0 {
		t.Errorf("ReconcileDuration = %v, want milliseconds", line["ReconcileDuration"])
	}
	for k, want := range map[string]any{"level": "ERROR", "msg": "reconciled", "errors": 2.0, "error": "get job 01: AccessDenied", "limited": false, "missing": 2.0, "unfinished": 1.0, "superseded": 1.0} {
		if line[k] != want {
			t.Errorf("%s = %v, want %v", k, line[k], want)
		}
	}
}

// A good pass writes the same line with ReconcileFailed 0, and an error
// from the pass itself (not only in its report) is counted as failed too,
// without failing the invocation.
func TestReconcileMetricLineEveryPass(t *testing.T) {
	t.Parallel()
	h, b := reconciler(t)
	var fail error
	h.Pass = func(ctx context.Context) (orchestrator.Report, error) {
		return orchestrator.Report{Objects: 3}, fail
	}
	if _, err := h.Handle(context.Background(), json.RawMessage(scheduledEvent)); err != nil {
		t.Fatal(err)
	}
	fail = errors.New("list jobs: SlowDown")
	resp, err := h.Handle(context.Background(), json.RawMessage(scheduledEvent))
	if err != nil || resp.Reconciled == nil || len(resp.Reconciled.Errors) != 1 || !strings.Contains(resp.Reconciled.Errors[0], "SlowDown") {
		t.Errorf("error %v, response %+v: want no error, the pass's error in the response", err, resp.Reconciled)
	}
	var lines []map[string]any
	for _, l := range b.logLines(t) {
		if l["_aws"] != nil {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d metric lines, want one per pass", len(lines))
	}
	for i, want := range []float64{0, 1} {
		if lines[i]["ReconcileFailed"] != want || lines[i]["ReconcileObjects"] != 3.0 || lines[i]["_aws"] == nil {
			t.Errorf("pass %d: line %v, want ReconcileFailed %v with 3 objects", i, lines[i], want)
		}
	}
	if lines[0]["error"] != nil || lines[1]["error"] != "list jobs: SlowDown" {
		t.Errorf("error fields %v, %v", lines[0]["error"], lines[1]["error"])
	}
}

// The pass gets the invocation's deadline less the margin, and work it
// left undone because that deadline came is not a failure: the pass says
// it was limited and the next one resumes.
func TestReconcileBudget(t *testing.T) {
	t.Parallel()
	h, b := reconciler(t)
	h.Margin = 40 * time.Millisecond
	deadline := time.Now().Add(300 * time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var got time.Time
	h.Pass = func(ctx context.Context) (orchestrator.Report, error) {
		got, _ = ctx.Deadline()
		<-ctx.Done() // a long pass: stopped by its budget
		return orchestrator.Report{Objects: 4, Errors: []error{fmt.Errorf("list input versions: %w", ctx.Err())}}, nil
	}
	resp, err := h.Handle(ctx, json.RawMessage(scheduledEvent))
	if err != nil {
		t.Fatalf("a pass cut off by its budget failed: %v", err)
	}
	if !got.Equal(deadline.Add(-40 * time.Millisecond)) {
		t.Errorf("pass deadline %v, want the invocation's %v less the margin", got, deadline)
	}
	if ctx.Err() != nil {
		t.Error("the pass ran until the invocation's own deadline")
	}
	if rc := resp.Reconciled; rc == nil || !rc.Limited || rc.Objects != 4 || len(rc.Errors) != 0 {
		t.Errorf("reconciled %+v, want limited, 4 objects, no errors", rc)
	}
	if l := b.logLines(t); len(l) != 1 || l[0]["limited"] != true || l[0]["ReconcileFailed"] != 0.0 {
		t.Errorf("log %v, want one line: limited, not failed", l)
	}

	// A deadline shorter than twice the margin leaves the pass half of it.
	h.Margin = time.Hour
	short := time.Now().Add(time.Minute)
	ctx2, cancel2 := context.WithDeadline(context.Background(), short)
	defer cancel2()
	h.Pass = func(ctx context.Context) (orchestrator.Report, error) {
		got, _ = ctx.Deadline()
		return orchestrator.Report{}, nil
	}
	if _, err := h.Handle(ctx2, json.RawMessage(scheduledEvent)); err != nil {
		t.Fatal(err)
	}
	if left := time.Until(got); left < 25*time.Second || left > 31*time.Second {
		t.Errorf("pass deadline %s away, want about half of the minute left", left)
	}
}
