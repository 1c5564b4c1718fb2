package lambda_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/lambda"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// An invocation returns only after the events of the jobs it created are
// on the bus: Lambda freezes the environment in between.
func TestInvocationPublishesItsJobEventsBeforeReturning(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	b := bundle{srv: srv, input: srv.Bucket(t, "input"), disp: &dispatchtest.Recorder{Driver: "ssm"}, logs: &syncBuffer{}}
	b.store = jobstore.New(srv.Client, srv.Bucket(t, "state"))
	o, err := orchestrator.New(orchestrator.Config{InputBucket: b.input}, srv.Client, b.store, b.disp)
	if err != nil {
		t.Fatal(err)
	}
	bus := ssmtest.NewEventBus(t)
	h := lambda.New(o, b.logs)
	h.Events = jobevents.NewEmitter(&jobevents.EventBridge{Client: bus.Client(), Bus: "default"}, "output", t.Logf)
	o.OnChange = h.Events.Changed

	oc1, oc2 := b.put(t, "a.txt", "a"), b.put(t, "b.txt", "b")
	if _, err := h.Handle(context.Background(), notification(t, oc1, oc2, oc1)); err != nil {
		t.Fatal(err)
	}
	got := bus.Entries()
	if len(got) != 2 {
		t.Fatalf("%d events on the bus when Handle returned: want 2 (the duplicate is no change)", len(got))
	}
	for i, oc := range []string{jobID(oc1), jobID(oc2)} {
		var d jobevents.Detail
		if err := json.Unmarshal([]byte(got[i].Detail), &d); err != nil {
			t.Fatal(err)
		}
		if d.JobID != oc || d.State != "queued" || got[i].EventBusName != "default" || got[i].DetailType != jobevents.DetailType {
			t.Errorf("event %d: job %s %s on bus %q (%s): want job %s queued on the default bus", i, d.JobID, d.State, got[i].EventBusName, got[i].DetailType, oc)
		}
	}

	// A bus that refuses costs the invocation nothing but a log line.
	bus.Deny(true)
	if _, err := h.Handle(context.Background(), notification(t, b.put(t, "c.txt", "c"))); err != nil {
		t.Fatalf("a refused event failed the invocation: %v", err)
	}
	if h.Events.Failed() != 1 {
		t.Errorf("failed events %d: want 1", h.Events.Failed())
	}
}

func TestConfigReadsTheEventBus(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		lambda.EnvInputBucket: "in", lambda.EnvOutputBucket: "out", lambda.EnvStateBucket: "state",
		lambda.EnvSSMDocument: "doc", lambda.EnvWorkerInstanceID: "i-0123456789abcdef0", lambda.EnvEventBus: "default",
	}
	c, err := lambda.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil || c.EventBus != "default" {
		t.Fatalf("EventBus %q, %v: want default", c.EventBus, err)
	}
}
