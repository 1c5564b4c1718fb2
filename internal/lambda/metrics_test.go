package lambda_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/lambda"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// metricsSetup is setup with job metrics wired as NewFromEnv wires them.
func metricsSetup(t *testing.T) (*lambda.Handler, bundle, string) {
	t.Helper()
	srv := s3test.Start(t)
	state := srv.Bucket(t, "state")
	b := bundle{srv: srv, input: srv.Bucket(t, "input"), disp: &dispatchtest.Recorder{Driver: "ssm"}, logs: &syncBuffer{}}
	b.store = jobstore.New(srv.Client, state)
	o, err := orchestrator.New(orchestrator.Config{InputBucket: b.input}, srv.Client, b.store, b.disp)
	if err != nil {
		t.Fatal(err)
	}
	h := lambda.New(o, b.logs)
	h.Metrics = jobmetrics.New(b.logs, state)
	o.OnChange = h.Metrics.Changed
	h.Function = "Conveyor-Orchestrator-X"
	return h, b, state
}

// metricSums reads the log as CloudWatch does and sums each job metric
// of dimension StateBucket=state.
func (b bundle) metricSums(t *testing.T, state string) map[string]float64 {
	t.Helper()
	sums := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		if !strings.Contains(l, `"_aws"`) {
			continue
		}
		data, err := emf.Extract([]byte(l))
		if err != nil {
			t.Fatalf("a metric line CloudWatch would refuse: %v\n%s", err, l)
		}
		for _, d := range data {
			if d.Namespace == jobmetrics.Namespace && cmp.Equal(d.Dimensions, map[string]string{jobmetrics.DimStateBucket: state}) {
				for _, v := range d.Values {
					sums[d.Name] += v
				}
			}
		}
	}
	return sums
}

func TestOrchestratorWritesJobMetrics(t *testing.T) {
	t.Parallel()
	h, b, state := metricsSetup(t)
	ok, bad := b.put(t, "ok.txt", "a"), b.put(t, "bad.txt", "b")
	b.disp.Func = func(id string) (string, error) {
		if id == jobID(bad) {
			return "", errors.New("InvalidInstanceId: not connected")
		}
		return "", nil
	}
	if _, err := h.Handle(context.Background(), notification(t, ok, bad, ok)); err == nil {
		t.Fatal("a failed dispatch did not fail the invocation")
	}
	want := map[string]float64{jobmetrics.JobsCreated: 2, jobmetrics.DispatchFailed: 1}
	if diff := cmp.Diff(want, b.metricSums(t, state)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

func TestReconcilerWritesBacklogAndDeadJobs(t *testing.T) {
	t.Parallel()
	h, b, state := metricsSetup(t)
	h.Role = lambda.RoleReconciler
	h.Reconciler.RedispatchAfter = 0
	h.Reconciler.MaxUndelivered = 1
	// Two jobs without a worker: each was dispatched once when created.
	for _, k := range []string{"a", "b"} {
		h.Role = lambda.RoleOrchestrator
		h.Handle(context.Background(), notification(t, b.put(t, k, k)))
	}
	h.Role = lambda.RoleReconciler
	if _, err := h.Handle(context.Background(), json.RawMessage(scheduledEvent)); err != nil {
		t.Fatal(err)
	}
	sums := b.metricSums(t, state)
	if sums[jobmetrics.Backlog] != 2 || sums[jobmetrics.JobsDead] != 2 || sums[jobmetrics.JobsCreated] != 2 || sums[jobmetrics.OldestUnfinishedAge] <= 0 {
		t.Errorf("metrics %v: want a backlog of 2 with an age, both jobs created and then dead (never delivered)", sums)
	}
	if rec := b.mustRecord(t, jobID(b.put(t, "a", "a"))); rec.State != job.Dead {
		t.Errorf("job a is %s, want dead", rec.State)
	}
}
