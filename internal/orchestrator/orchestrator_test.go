package orchestrator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

type bundle struct {
	srv   *s3test.Server
	input string
	store *jobstore.Store
	disp  *dispatchtest.Recorder
}

func setup(t *testing.T, cfg orchestrator.Config) (*orchestrator.Orchestrator, bundle) {
	t.Helper()
	srv := s3test.Start(t)
	b := bundle{srv: srv, input: srv.Bucket(t, "input"), disp: &dispatchtest.Recorder{Driver: "fake"}}
	b.store = jobstore.New(srv.Client, srv.Bucket(t, "state"))
	cfg.InputBucket = b.input
	o, err := orchestrator.New(cfg, srv.Client, b.store, b.disp)
	if err != nil {
		t.Fatal(err)
	}
	return o, b
}

// put uploads an object and returns the notification S3 would send for it.
func put(t *testing.T, b bundle, key, body string) []byte {
	t.Helper()
	out, err := b.srv.Client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &b.input, Key: aws.String(key), Body: bytes.NewReader([]byte(body))})
	if err != nil {
		t.Fatal(err)
	}
	rec := s3event.NewRecord("us-east-1", s3event.ObjectCreated{
		EventName: "ObjectCreated:Put", Bucket: b.input, Key: key, Size: int64(len(body)),
		ETag: s3event.TrimETag(aws.ToString(out.ETag)), VersionID: aws.ToString(out.VersionId), Sequencer: "01",
	})
	n, _ := json.Marshal(s3event.Notification{Records: []s3event.Record{rec}})
	return n
}

func TestRepeatedEventMakesOneJob(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	ev := put(t, b, "reports/q3 summary+final.pdf", "hello")
	// Three deliveries at once, as an at-least-once queue may do.
	var wg sync.WaitGroup
	var created atomic.Int32
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := o.HandleEvent(context.Background(), ev)
			if err != nil {
				t.Error(err)
			}
			for _, r := range res {
				if r.Outcome == orchestrator.Created {
					created.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if created.Load() != 1 {
		t.Fatalf("%d deliveries created a job, want exactly 1", created.Load())
	}
	var ids []string
	b.store.IDs(context.Background(), func(id string) error { ids = append(ids, id); return nil })
	if len(ids) != 1 {
		t.Fatalf("%d job records, want 1", len(ids))
	}
	rec, _, err := b.store.Get(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if rec.Key != "reports/q3 summary+final.pdf" || rec.Size != 5 || rec.State != job.Queued || rec.Dispatcher != "fake" {
		t.Fatalf("record: %+v", rec)
	}
	// Dispatches of a still-queued job are coalesced by drivers and made
	// harmless by the worker's claim; what matters is that the one job got one.
	for _, id := range b.disp.Dispatched() {
		if id != rec.ID {
			t.Fatalf("dispatched %s, want only %s", id, rec.ID)
		}
	}
	// Once a worker has it, a late duplicate changes nothing.
	b.store.Update(context.Background(), rec.ID, func(r *job.Record) error { return r.Claim("vol/p", "tok", time.Now(), time.Minute, false) })
	before := len(b.disp.Dispatched())
	res, err := o.HandleEvent(context.Background(), ev)
	if err != nil || len(res) != 1 || res[0].Outcome != orchestrator.Duplicate {
		t.Fatalf("late duplicate: %+v %v", res, err)
	}
	if len(b.disp.Dispatched()) != before {
		t.Fatal("a duplicate of a running job was dispatched again")
	}
}

func TestNewContentIsANewJob(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	r1, _ := o.HandleEvent(context.Background(), put(t, b, "a.txt", "one"))
	r2, _ := o.HandleEvent(context.Background(), put(t, b, "a.txt", "two"))
	if r1[0].JobID == r2[0].JobID || r2[0].Outcome != orchestrator.Created {
		t.Fatalf("same key, new content: %+v then %+v", r1[0], r2[0])
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{Prefixes: []string{"in/", "drop/"}, Suffixes: []string{".csv"}})
	cases := map[string]orchestrator.Outcome{
		"in/a.csv":    orchestrator.Created,
		"drop/b.csv":  orchestrator.Created,
		"in/a.txt":    orchestrator.Filtered,
		"other/a.csv": orchestrator.Filtered,
		"in/dir/":     orchestrator.Filtered, // folder marker
	}
	for key, want := range cases {
		body := "x"
		if key[len(key)-1] == '/' {
			body = ""
		}
		res, err := o.HandleEvent(context.Background(), put(t, b, key, body))
		if err != nil || len(res) != 1 || res[0].Outcome != want {
			t.Errorf("%s: %+v %v, want %s", key, res, err, want)
		}
	}
	// An event for another bucket is not ours.
	oc := s3event.ObjectCreated{EventName: "ObjectCreated:Put", Bucket: "elsewhere", Key: "in/a.csv", Size: 1, ETag: "x"}
	if r := o.Submit(context.Background(), oc); r.Outcome != orchestrator.Filtered {
		t.Errorf("other bucket: %s", r.Outcome)
	}
}

func TestBadRecordDoesNotFailTheBatch(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	good := put(t, b, "good.txt", "ok")
	var n s3event.Notification
	json.Unmarshal(good, &n)
	raw, _ := json.Marshal(n.Records[0])
	body := []byte(`{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":""},"object":{"key":"x"}}},` + string(raw) + `]}`)
	res, err := o.HandleEvent(context.Background(), body)
	if err != nil {
		t.Fatalf("a bad record failed the batch: %v", err)
	}
	if len(res) != 2 || res[0].Err == nil || res[1].Outcome != orchestrator.Created {
		t.Fatalf("results: %+v", res)
	}
	if _, err := o.HandleEvent(context.Background(), []byte(`{"Event":"s3:TestEvent"}`)); err != nil {
		t.Fatalf("test event: %v", err)
	}
}

func TestMultipartEventWithoutSizeIsCompletedByHead(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	put(t, b, "copy.bin", "twelve bytes")
	oc := s3event.ObjectCreated{EventName: "ObjectCreated:Copy", Bucket: b.input, Key: "copy.bin"}
	r := o.Submit(context.Background(), oc)
	if r.Err != nil || r.Object.Size != 12 || r.Object.ETag == "" {
		t.Fatalf("submit without size/etag: %+v", r)
	}
}

func TestDispatchFailureIsReturnedAndRetriable(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	fail := true
	b.disp.Func = func(string) (string, error) {
		if fail {
			return "", dispatch.ErrUnavailable
		}
		return "", nil
	}
	ev := put(t, b, "x.txt", "x")
	if _, err := o.HandleEvent(context.Background(), ev); !errors.Is(err, dispatch.ErrUnavailable) {
		t.Fatalf("dispatch failure not returned: %v", err)
	}
	fail = false
	res, err := o.HandleEvent(context.Background(), ev)
	if err != nil || res[0].Outcome != orchestrator.Redispatch || len(b.disp.Dispatched()) != 1 {
		t.Fatalf("redelivery after a failed dispatch: %+v %v", res, err)
	}
}

func TestCommandIDIsRecorded(t *testing.T) {
	t.Parallel()
	o, b := setup(t, orchestrator.Config{})
	b.disp.Func = func(string) (string, error) { return "cmd-0123", nil }
	res, err := o.HandleEvent(context.Background(), put(t, b, "x.txt", "x"))
	if err != nil {
		t.Fatal(err)
	}
	rec, _, _ := b.store.Get(context.Background(), res[0].JobID)
	if rec.CommandID != "cmd-0123" {
		t.Fatalf("command ID %q not recorded", rec.CommandID)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []orchestrator.Config{{}, {InputBucket: "in", MaxAttempts: -1}, {InputBucket: "in", MaxAttempts: 101}} {
		if _, err := orchestrator.New(c, nil, nil, &dispatchtest.Recorder{}); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
