package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/emf"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// workerStack is a worker's view of a stack: the shared test S3 server
// with buckets of the test's own, reached through s3.endpoint as the EC2
// worker reaches Amazon S3, and a fresh volume.
type workerStack struct {
	srv                  *s3test.Server
	input, output, state string
	store                *jobstore.Store
	env                  map[string]string
}

func newWorkerStack(t *testing.T) *workerStack {
	t.Helper()
	srv := s3test.Start(t)
	ws := &workerStack{srv: srv, input: srv.Bucket(t, "in"), output: srv.Bucket(t, "out"), state: srv.Bucket(t, "state")}
	ws.store = jobstore.New(srv.Client, ws.state)
	ws.env = map[string]string{
		"CONVEYOR_S3_ENDPOINT":          srv.Endpoint,
		"CONVEYOR_S3_ACCESS_KEY_ID":     s3test.AccessKey,
		"CONVEYOR_S3_SECRET_ACCESS_KEY": s3test.SecretKey,
		"CONVEYOR_INPUT_BUCKET":         ws.input,
		"CONVEYOR_OUTPUT_BUCKET":        ws.output,
		"CONVEYOR_STATE_BUCKET":         ws.state,
		"CONVEYOR_VOLUME":               filepath.Join(t.TempDir(), "volume"),
		"CONVEYOR_DATA_DIR":             t.TempDir(),
		"CONVEYOR_PROCESSOR":            "report",
		"CONVEYOR_PROCESSOR_SANDBOX":    "off",
	}
	return ws
}

func (ws *workerStack) getenv(k string) string { return ws.env[k] }

// submit uploads key and creates its job's record, as the orchestrator
// would; it returns the job ID.
func (ws *workerStack) submit(t *testing.T, key, body string) string {
	t.Helper()
	ctx := context.Background()
	out, err := ws.srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &ws.input, Key: aws.String(key), Body: strings.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	rec := job.New(ws.input, key, aws.ToString(out.VersionId), strings.Trim(aws.ToString(out.ETag), `"`), int64(len(body)), 2, time.Now())
	if err := ws.store.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return rec.ID
}

// TestWorkerRunPublishesJobEvents: with events.bus set, `worker run` puts
// the job's state changes on the bus, and a bus that refuses them costs
// the job nothing.
func TestWorkerRunPublishesJobEvents(t *testing.T) {
	bus := ssmtest.NewEventBus(t)
	t.Setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", bus.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", ssmtest.DefaultAccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	ws := newWorkerStack(t)
	ws.env["CONVEYOR_EVENTS_BUS"] = "default"

	id := ws.submit(t, "docs/a.txt", "hello\n")
	if _, errOut, code := runArgs(t, ws.getenv, "worker", "run", "--job", id); code != 0 {
		t.Fatalf("worker run: exit %d: %s", code, errOut)
	}
	var states []string
	for _, e := range bus.Entries() {
		var d jobevents.Detail
		json.Unmarshal([]byte(e.Detail), &d)
		if d.JobID != id || e.EventBusName != "default" {
			t.Errorf("event for job %s on bus %q: want %s on default", d.JobID, e.EventBusName, id)
		}
		if d.State == "succeeded" && (d.OutputBucket != ws.output || d.OutputCount == 0) {
			t.Errorf("succeeded event: output bucket %q, %d outputs: want %s and some", d.OutputBucket, d.OutputCount, ws.output)
		}
		states = append(states, d.State)
	}
	if strings.Join(states, ",") != "running,succeeded" {
		t.Errorf("events %v: want running, succeeded", states)
	}

	bus.Deny(true)
	id = ws.submit(t, "docs/b.txt", "hello again\n")
	_, errOut, code := runArgs(t, ws.getenv, "worker", "run", "--job", id)
	if code != 0 || !strings.Contains(errOut, "not published") {
		t.Errorf("worker run with a refusing bus: exit %d, stderr %q: want 0 and a note", code, errOut)
	}
}

// TestWorkerRunPrintsEMF: with metrics.emf, `worker run` prints its job
// metrics on stdout as lines CloudWatch Logs turns into metrics; the
// other lines stay as they were.
func TestWorkerRunPrintsEMF(t *testing.T) {
	t.Parallel()
	ws := newWorkerStack(t)
	ws.env["CONVEYOR_METRICS_EMF"] = "true"
	id := ws.submit(t, "m.txt", "metrics\n")
	out, errOut, code := runArgs(t, ws.getenv, "worker", "run", "--job", id)
	if code != 0 {
		t.Fatalf("worker run: exit %d: %s", code, errOut)
	}
	got := map[string]string{}
	plain := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "{") {
			plain++
			continue
		}
		data, err := emf.Extract([]byte(l))
		if err != nil {
			t.Fatalf("stdout line CloudWatch would refuse: %v\n%s", err, l)
		}
		for _, d := range data {
			if d.Namespace != "Conveyor" || d.Dimensions["StateBucket"] != ws.state || len(d.Dimensions) != 1 {
				t.Errorf("%s: namespace %s, dimensions %v", d.Name, d.Namespace, d.Dimensions)
			}
			got[d.Name] = d.Unit
		}
	}
	want := map[string]string{"QueueAge": "Milliseconds", "AttemptDuration": "Milliseconds", "JobsSucceeded": "Count"}
	if diff := cmp.Diff(want, got); diff != "" || plain != 1 {
		t.Errorf("metrics on stdout (-want +got):\n%s\n%d other line(s), want 1:\n%s", diff, plain, out)
	}
}

// TestLogsReadsTheCopyInTheStateBucket: `worker run` uploads the job's
// log to s3://<state>/logs/<job>.log when each attempt ends, and `conveyor
// logs` on another machine (no such volume there) prints that copy, with
// -f too once the job is over.
func TestLogsReadsTheCopyInTheStateBucket(t *testing.T) {
	t.Parallel()
	ws := newWorkerStack(t)
	ws.env["CONVEYOR_PROCESSOR_COMMAND"] = "/bin/false"
	ws.env["CONVEYOR_RETRY_BACKOFF"] = "10ms"
	ws.env["CONVEYOR_RETRY_MAX_BACKOFF"] = "20ms"
	id := ws.submit(t, "fails.txt", "x")
	if _, errOut, code := runArgs(t, ws.getenv, "worker", "run", "--job", id); code != ExitJobDead {
		t.Fatalf("worker run: exit %d, want %d (dead): %s", code, ExitJobDead, errOut)
	}
	obj, err := ws.srv.Client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &ws.state, Key: aws.String("logs/" + id + ".log")})
	if err != nil {
		t.Fatalf("the log is not in the state bucket: %v", err)
	}
	obj.Body.Close()

	// Another machine: same buckets, no volume of its own.
	client := map[string]string{}
	for k, v := range ws.env {
		client[k] = v
	}
	client["CONVEYOR_VOLUME"] = filepath.Join(t.TempDir(), "not-here")
	getenv := func(k string) string { return client[k] }
	for _, args := range [][]string{{"logs", id}, {"logs", id, "-f"}} {
		out, errOut, code := runArgs(t, getenv, args...)
		if code != 0 || strings.Count(out, "=== conveyor: job "+id+" attempt") != 2 || !strings.Contains(out, "attempt 2 failed") {
			t.Errorf("%v: exit %d, stderr %q, want both attempts of the log:\n%s", args, code, errOut, out)
		}
	}
	if _, err := os.Stat(client["CONVEYOR_VOLUME"]); err == nil {
		t.Error("conveyor logs created a volume on the client")
	}

	// A job that never ran has no log anywhere: said, not waited for.
	id = ws.submit(t, "never.txt", "y")
	if _, errOut, code := runArgs(t, getenv, "logs", id); code != ExitFailure || !strings.Contains(errOut, "has no log yet") {
		t.Errorf("logs of a job that never ran: exit %d, %q", code, errOut)
	}
}

// TestWorkerRunSendsAttemptLogsToCloudWatch: with logs.group set, each
// attempt's part of the job log lands in the stream <job>/<attempt>.
func TestWorkerRunSendsAttemptLogsToCloudWatch(t *testing.T) {
	logs := ssmtest.NewLogs(t, "/conveyor/jobs")
	t.Setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", logs.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", ssmtest.DefaultAccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	ws := newWorkerStack(t)
	ws.env["CONVEYOR_LOGS_GROUP"] = "/conveyor/jobs"
	ws.env["CONVEYOR_PROCESSOR_COMMAND"] = "/bin/false"
	ws.env["CONVEYOR_RETRY_BACKOFF"], ws.env["CONVEYOR_RETRY_MAX_BACKOFF"] = "10ms", "20ms"
	id := ws.submit(t, "cw.txt", "x")
	if _, errOut, code := runArgs(t, ws.getenv, "worker", "run", "--job", id); code != ExitJobDead {
		t.Fatalf("worker run: exit %d: %s", code, errOut)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		msgs := logs.Messages("/conveyor/jobs", fmt.Sprintf("%s/%d", id, attempt))
		text := strings.Join(msgs, "\n")
		if !strings.HasPrefix(text, fmt.Sprintf("=== conveyor: job %s attempt %d/2", id, attempt)) ||
			!strings.Contains(text, fmt.Sprintf("attempt %d failed", attempt)) || strings.Count(text, "=== conveyor: job") != 1 {
			t.Errorf("stream of attempt %d: want that attempt's part of the log, alone:\n%s", attempt, text)
		}
	}
}
