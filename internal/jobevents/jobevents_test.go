package jobevents_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
)

// schema compiles the checked-in JSON Schema of the detail.
func schema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("../../docs/events/job-state-change.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("job-state-change.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("job-state-change.schema.json")
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return s
}

// checkDetail validates one event's detail against the schema.
func checkDetail(t *testing.T, s *jsonschema.Schema, detail string) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(detail))
	if err != nil {
		t.Fatalf("detail is not JSON: %v\n%s", err, detail)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("detail does not follow the schema: %v\n%s", err, detail)
	}
}

// life is one job's records through a failed attempt, a success, with
// heartbeats between.
func life(t *testing.T) []*job.Record {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := job.New("input", "scans/a b+ü.pdf", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "9b2cf535f27731c974343645a3985328", 1234, 3, t0)
	var out []*job.Record
	snap := func() { c := *r; out = append(out, &c) }
	snap()
	if err := r.Claim("vol-1/n1", "tok1", t0.Add(time.Second), time.Minute, false); err != nil {
		t.Fatal(err)
	}
	snap()
	if err := r.Renew("tok1", t0.Add(20*time.Second), time.Minute); err != nil {
		t.Fatal(err)
	}
	snap() // a heartbeat: no event
	exit := 1
	r.Fail(t0.Add(30*time.Second), &exit, "exit status 1", false, 2*time.Second)
	snap()
	if err := r.Claim("vol-1/n1", "tok2", t0.Add(40*time.Second), time.Minute, false); err != nil {
		t.Fatal(err)
	}
	snap()
	r.Succeed(t0.Add(50*time.Second), []job.Output{{Key: "scans/a b+ü.pdf/report.json", Size: 99, SHA256: strings.Repeat("ab", 32)}})
	snap()
	return out
}

func TestEmitterPublishesStateChangesToEventBridge(t *testing.T) {
	t.Parallel()
	bus := ssmtest.NewEventBus(t)
	e := jobevents.NewEmitter(&jobevents.EventBridge{Client: bus.Client()}, "output", t.Logf)
	for _, r := range life(t) {
		e.Changed(r)
	}
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := bus.Entries()
	var states []string
	s := schema(t)
	for _, en := range got {
		if en.Source != "conveyor" || en.DetailType != "Conveyor Job State Change" || en.EventBusName != "" {
			t.Errorf("entry source %q, detail-type %q, bus %q: want conveyor, Conveyor Job State Change, the default bus", en.Source, en.DetailType, en.EventBusName)
		}
		if diff := cmp.Diff([]string{"arn:aws:s3:::input/scans/a b+ü.pdf"}, en.Resources); diff != "" {
			t.Errorf("resources (-want +got):\n%s", diff)
		}
		checkDetail(t, s, en.Detail)
		var d jobevents.Detail
		json.Unmarshal([]byte(en.Detail), &d)
		states = append(states, d.State)
	}
	if diff := cmp.Diff([]string{"queued", "running", "retrying", "running", "succeeded"}, states); diff != "" {
		t.Errorf("states published (-want +got):\n%s", diff)
	}
	if e.Sent() != 5 || e.Failed() != 0 {
		t.Errorf("sent %d, failed %d: want 5 and 0", e.Sent(), e.Failed())
	}

	// The last detail, field by field.
	var last map[string]any
	json.Unmarshal([]byte(got[len(got)-1].Detail), &last)
	want := map[string]any{
		"jobId": job.ID("input", "scans/a b+ü.pdf", job.Revision("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "")),
		"state": "succeeded", "bucket": "input", "key": "scans/a b+ü.pdf",
		"versionId": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "etag": "9b2cf535f27731c974343645a3985328",
		"size": 1234.0, "attempt": 2.0, "exitCode": 0.0, "maxAttempts": 3.0,
		"outputBucket": "output", "outputCount": 1.0,
		"outputs":   []any{map[string]any{"key": "scans/a b+ü.pdf/report.json", "size": 99.0, "sha256": strings.Repeat("ab", 32)}},
		"createdAt": "2026-12-01T10:00:00Z", "updatedAt": "2026-12-01T10:00:50Z",
		"startedAt": "2026-12-01T10:00:40Z", "finishedAt": "2026-12-01T10:00:50Z",
	}
	if diff := cmp.Diff(want, last); diff != "" {
		t.Errorf("succeeded detail (-want +got):\n%s", diff)
	}
	// JSON 1.1 carries timestamps as epoch seconds.
	if wantTime := fmt.Sprint(time.Date(2026, 12, 1, 10, 0, 50, 0, time.UTC).Unix()); string(got[len(got)-1].Time) != wantTime {
		t.Errorf("entry Time %s: want the record's updatedAt, %s", got[len(got)-1].Time, wantTime)
	}
}

func TestEmitterIsBestEffort(t *testing.T) {
	t.Parallel()
	bus := ssmtest.NewEventBus(t)
	bus.Deny(true)
	var logged []string
	var mu sync.Mutex
	e := jobevents.NewEmitter(&jobevents.EventBridge{Client: bus.Client(), Bus: "ops"}, "", func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, f)
	})
	recs := life(t)
	e.Changed(recs[0])
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.Failed() != 1 || e.Sent() != 0 || len(logged) != 1 {
		t.Errorf("failed %d, sent %d, %d line(s) logged: want 1, 0, 1", e.Failed(), e.Sent(), len(logged))
	}

	// A refused entry counts as failed too; the others go through.
	bus.Deny(false)
	bus.Refuse(func(p ssmtest.PutEntry) bool { return strings.Contains(p.Detail, `"state":"running"`) })
	for _, r := range recs[1:] {
		e.Changed(r)
	}
	e.Flush(context.Background())
	if n := len(bus.Entries()); n != 2 {
		t.Errorf("%d entries accepted: want 2 (retrying, succeeded)", n)
	}
	if e.Failed() != 5 {
		t.Errorf("failed %d: want 5 (1 before, and the batch of 4 with refused entries)", e.Failed())
	}
}

func TestDetailCapsOutputs(t *testing.T) {
	t.Parallel()
	r := job.New("in", "k", "", "etag", 1, 3, time.Now())
	for i := range 150 {
		r.Outputs = append(r.Outputs, job.Output{Key: "k/" + strings.Repeat("x", i+1), Size: 1})
	}
	d := jobevents.DetailOf(r, "out")
	if len(d.Outputs) != jobevents.MaxOutputs || d.OutputCount != 150 || !d.OutputsTruncated {
		t.Errorf("%d outputs listed, count %d, truncated %v: want %d, 150, true", len(d.Outputs), d.OutputCount, d.OutputsTruncated, jobevents.MaxOutputs)
	}
	b, _ := json.Marshal(d)
	checkDetail(t, schema(t), string(b))
}
