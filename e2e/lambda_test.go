package e2e

// The orchestrator Lambda as AWS runs it: the real bootstrap binary under
// the AWS Lambda Runtime Interface Emulator, its S3 the embedded server of
// a `conveyor up`, its SSM and EC2 a fake speaking their wire protocols.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// What the fake stack configures on the function.
const (
	lambdaDocument  = "conveyor-run-job-e2e"
	lambdaInstance  = "i-0e2e0000000000001"
	lambdaLogGroup  = "/conveyor/e2e/jobs"
	lambdaExecTime  = "5400" // CONVEYOR_EXECUTION_TIMEOUT=90m, in seconds
	lambdaDelivery  = 600    // the SSM driver's default delivery timeout
	upIgnoresItsOwn = "__none__/"
)

// lambdaEnv is the function's environment as the stack sets it, pointed
// at the `conveyor up` and the fake SSM.
func lambdaEnv(up *upProc, ssm *ssmtest.Server) []string {
	return []string{
		"AWS_LAMBDA_FUNCTION_NAME=conveyor-orchestrator",
		"AWS_LAMBDA_FUNCTION_TIMEOUT=120",
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=" + up.Creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + up.Creds.SecretAccessKey,
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL_S3=" + up.Endpoint,
		"AWS_ENDPOINT_URL_SSM=" + ssm.URL,
		"AWS_ENDPOINT_URL_EC2=" + ssm.URL,
		"CONVEYOR_INPUT_BUCKET=" + inputBucket,
		"CONVEYOR_OUTPUT_BUCKET=" + outputBucket,
		"CONVEYOR_STATE_BUCKET=" + stateBucket,
		"CONVEYOR_SSM_DOCUMENT=" + lambdaDocument,
		"CONVEYOR_WORKER_INSTANCE_ID=" + lambdaInstance,
		"CONVEYOR_SSM_LOG_GROUP=" + lambdaLogGroup,
		"CONVEYOR_EXECUTION_TIMEOUT=90m",
		"CONVEYOR_MAX_ATTEMPTS=2",
		// The embedded input bucket is versioned, as the stack's is.
		"CONVEYOR_INPUT_VERSIONED=true",
		"CONVEYOR_FILTER_PREFIXES=",
		"CONVEYOR_FILTER_SUFFIXES=",
	}
}

// newFakeSSM starts the stack's SSM and EC2: one online worker, requests
// signed with up's key, and every SendCommand held to what the stack
// configures. agent, when set, plays the SSM agent. With the worker
// online, the Lambda must not need EC2 at all.
func newFakeSSM(t *testing.T, up *upProc, agent func(ssmtest.Command) string) *ssmtest.Server {
	t.Helper()
	f := ssmtest.New(t, ssmtest.Options{
		// Slots for every job these tests send at once.
		Instances: []ssmtest.Instance{{ID: lambdaInstance, State: "running", Ping: "Online", VCPUs: 1000, AgentLimit: 64}},
		AccessKey: up.Creds.AccessKeyID,
		Want: &ssmtest.Want{
			Document: lambdaDocument, ExecutionTimeout: lambdaExecTime,
			TimeoutSeconds: lambdaDelivery, LogGroup: lambdaLogGroup,
		},
		Agent: agent,
	})
	t.Cleanup(func() {
		for _, r := range f.Requests() {
			if r.Service == "ec2" && r.Op != "DescribeInstances" { // DescribeInstances reads its slots
				t.Errorf("unexpected EC2 action %q: the worker is online", r.Op)
			}
		}
	})
	return f
}

// ---- fixtures from real uploads ----

// upload puts body into the input bucket and returns the object as S3
// announces it, from the PutObject response.
func upload(t *testing.T, c *s3.Client, key string, body []byte) s3event.ObjectCreated {
	t.Helper()
	out, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return s3event.ObjectCreated{
		EventName: "ObjectCreated:Put", Bucket: inputBucket, Key: key, Size: int64(len(body)),
		ETag: s3event.TrimETag(aws.ToString(out.ETag)), VersionID: aws.ToString(out.VersionId),
	}
}

// notificationOf is the S3 notification for objs, built as the embedded
// server's hook builds it.
func notificationOf(t *testing.T, objs ...s3event.ObjectCreated) []byte {
	t.Helper()
	var n s3event.Notification
	for _, oc := range objs {
		n.Records = append(n.Records, s3event.NewRecord("us-east-1", oc))
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func objJobID(oc s3event.ObjectCreated) string {
	return job.ID(oc.Bucket, oc.Key, job.Revision(oc.VersionID, oc.ETag))
}

// startLambdaUp starts a `conveyor up` whose own orchestrator ignores every
// upload and whose reconciler does not run during the test, so only the
// Lambda under test creates and dispatches jobs.
func startLambdaUp(t *testing.T) *upProc {
	return startUp(t, upOptions{Env: []string{
		"CONVEYOR_FILTER_PREFIXES=" + upIgnoresItsOwn,
		"CONVEYOR_RECONCILE_INTERVAL=1h",
	}})
}

// checkSent checks that the commands sent are exactly one per job, with
// the stack's document, timeouts, worker and log group, and that each
// job's record holds its command ID.
func checkSent(t *testing.T, up *upProc, sent []ssmtest.Command, objs []s3event.ObjectCreated) {
	t.Helper()
	byJob := map[string]ssmtest.Command{}
	for _, c := range sent {
		id := strings.Join(c.Parameters["JobId"], ",")
		if _, dup := byJob[id]; dup {
			t.Errorf("job %s sent twice", id)
		}
		byJob[id] = c
		if c.Document != lambdaDocument || !slices.Equal(c.InstanceIDs, []string{lambdaInstance}) ||
			!slices.Equal(c.Parameters["ExecutionTimeout"], []string{lambdaExecTime}) || len(c.Parameters) != 2 ||
			c.TimeoutSeconds != lambdaDelivery || c.LogGroup != lambdaLogGroup || c.Comment != "conveyor job "+id {
			t.Errorf("SendCommand %+v; want document %s, instance %s, ExecutionTimeout %s, TimeoutSeconds %d, log group %s",
				c, lambdaDocument, lambdaInstance, lambdaExecTime, lambdaDelivery, lambdaLogGroup)
		}
	}
	if len(sent) != len(objs) {
		t.Errorf("%d commands sent, want %d", len(sent), len(objs))
	}
	for _, oc := range objs {
		id := objJobID(oc)
		c, ok := byJob[id]
		if !ok {
			t.Errorf("no SendCommand for %q (job %s)", oc.Key, id)
			continue
		}
		rec, err := record(context.Background(), up.S3, id)
		if err != nil || rec == nil {
			t.Errorf("job %s (%q): no record in s3://%s (%v)", id, oc.Key, stateBucket, err)
			continue
		}
		if rec.Key != oc.Key || rec.CommandID != c.ID || rec.Dispatcher != "ssm" || rec.State != job.Queued || rec.MaxAttempts != 2 {
			t.Errorf("record of %q: key %q command %q dispatcher %q state %s max attempts %d; want command %s, ssm, queued, 2",
				oc.Key, rec.Key, rec.CommandID, rec.Dispatcher, rec.State, rec.MaxAttempts, c.ID)
		}
	}
}

func TestLambdaUnderEmulator(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t, up, nil)
	rie := startRIE(t, lambdaEnv(up, ssm))

	// run invokes the function with event and checks what it sent.
	run := func(t *testing.T, event []byte, objs []s3event.ObjectCreated) lambdaResponse {
		t.Helper()
		before := len(ssm.Commands())
		resp, raw := rie.invoke(t, event)
		if resp.ErrorMessage != "" || resp.Failed != 0 {
			t.Fatalf("invocation failed: %s", raw)
		}
		if resp.Created != len(objs) {
			t.Errorf("created %d, want %d: %s", resp.Created, len(objs), raw)
		}
		checkSent(t, up, ssm.Commands()[before:], objs)
		return resp
	}

	t.Run("single record", func(t *testing.T) {
		oc := upload(t, up.S3, "single/hello.txt", []byte("hello\n"))
		run(t, notificationOf(t, oc), []s3event.ObjectCreated{oc})
	})

	t.Run("100 records", func(t *testing.T) {
		var objs []s3event.ObjectCreated
		for i := range 100 {
			objs = append(objs, upload(t, up.S3, fmt.Sprintf("many/%03d.txt", i), []byte(strings.Repeat("line\n", i+1))))
		}
		run(t, notificationOf(t, objs...), objs)
	})

	t.Run("multipart", func(t *testing.T) {
		ctx := context.Background()
		key := "multipart/big file.bin"
		mu, err := up.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(inputBucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		var parts []types.CompletedPart
		for i, body := range [][]byte{bytes.Repeat([]byte{'m'}, 5<<20), []byte("end")} {
			p, err := up.S3.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(inputBucket), Key: aws.String(key), UploadId: mu.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(body)})
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, types.CompletedPart{ETag: p.ETag, PartNumber: aws.Int32(int32(i + 1))})
		}
		done, err := up.S3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(inputBucket), Key: aws.String(key), UploadId: mu.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
		if err != nil {
			t.Fatal(err)
		}
		// The embedded server's multipart event: size 0, taken from HEAD.
		oc := s3event.ObjectCreated{EventName: "ObjectCreated:CompleteMultipartUpload", Bucket: inputBucket, Key: key, ETag: s3event.TrimETag(aws.ToString(done.ETag)), VersionID: aws.ToString(done.VersionId)}
		run(t, notificationOf(t, oc), []s3event.ObjectCreated{oc})
		if rec, _ := record(ctx, up.S3, objJobID(oc)); rec == nil || rec.Size != 5<<20+3 {
			t.Errorf("multipart record %+v: want size %d from HEAD", rec, 5<<20+3)
		}
	})

	t.Run("encoded and unicode keys", func(t *testing.T) {
		keys := []string{"enc/a b+c.txt", "enc/日本語 の ファイル.txt", "enc/Ünïcödé %41 &=?.csv", "enc/$(touch x) `id`;'\".txt"}
		var objs []s3event.ObjectCreated
		for _, k := range keys {
			objs = append(objs, upload(t, up.S3, k, []byte(k)))
		}
		event := notificationOf(t, objs...)
		if !bytes.Contains(event, []byte(`"enc/a+b%2Bc.txt"`)) {
			t.Fatalf("fixture keys are not encoded as S3 encodes them: %s", event)
		}
		resp := run(t, event, objs)
		for i, r := range resp.Records {
			if r.Key != keys[i] {
				t.Errorf("record %d: key %q, want %q", i, r.Key, keys[i])
			}
		}
	})

	t.Run("test event", func(t *testing.T) {
		before := len(ssm.Commands())
		resp, raw := rie.invoke(t, []byte(`{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-01T00:00:00.000Z","Bucket":"input","RequestId":"R","HostId":"H"}`))
		if resp.ErrorMessage != "" || resp.Ignored == "" || len(resp.Records) != 0 || len(ssm.Commands()) != before {
			t.Errorf("test event: %s; %d commands sent", raw, len(ssm.Commands())-before)
		}
	})

	t.Run("EventBridge", func(t *testing.T) {
		oc := upload(t, up.S3, "eventbridge/a b.txt", []byte("from EventBridge"))
		event := fmt.Sprintf(`{"version":"0","id":"e2e","detail-type":"Object Created","source":"aws.s3","account":"123456789012",
			"time":"2024-01-01T00:00:00Z","region":"us-east-1","resources":["arn:aws:s3:::input"],
			"detail":{"version":"0","bucket":{"name":"input"},"object":{"key":%q,"size":%d,"etag":%q,"version-id":%q,"sequencer":"1"},"reason":"PutObject"}}`,
			oc.Key, oc.Size, oc.ETag, oc.VersionID)
		run(t, []byte(event), []s3event.ObjectCreated{oc})
	})

	t.Run("bad record among good ones", func(t *testing.T) {
		oc := upload(t, up.S3, "bad/good.txt", []byte("good"))
		var n struct{ Records []json.RawMessage }
		json.Unmarshal(notificationOf(t, oc), &n)
		event := fmt.Sprintf(`{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"input"},"object":{"key":"%%zz"}}},%s]}`, n.Records[0])
		resp := run(t, []byte(event), []s3event.ObjectCreated{oc})
		if resp.BadRecords != 1 {
			t.Errorf("bad records %d, want 1", resp.BadRecords)
		}
	})

	t.Run("dispatch failure fails the invocation", func(t *testing.T) {
		oc := upload(t, up.S3, "fail/later.txt", []byte("later"))
		event := notificationOf(t, oc)
		ssm.SetFault(ssmtest.FailTimes("SendCommand", -1, ssmtest.InvalidInstanceID(lambdaInstance)))
		resp, raw := rie.invoke(t, event)
		ssm.SetFault(nil)
		if resp.ErrorMessage == "" || !strings.Contains(resp.ErrorMessage, "not in a valid state") {
			t.Fatalf("invocation with SSM rejecting the worker: %s; want a function error naming the cause, so Lambda retries", raw)
		}
		rec, err := record(context.Background(), up.S3, objJobID(oc))
		if err != nil || rec == nil || rec.State != job.Queued || rec.CommandID != "" {
			t.Fatalf("record after the failed dispatch: %+v, %v; want queued without a command", rec, err)
		}
		// Lambda's retry of the same event sends the job.
		before := len(ssm.Commands())
		resp, raw = rie.invoke(t, event)
		if resp.ErrorMessage != "" || len(resp.Records) != 1 || resp.Records[0].Outcome != "redispatch" {
			t.Fatalf("retry: %s; want the job redispatched", raw)
		}
		checkSent(t, up, ssm.Commands()[before:], []s3event.ObjectCreated{oc})
	})

	t.Run("duplicate delivery", func(t *testing.T) {
		oc := upload(t, up.S3, "dup/once.txt", []byte("once"))
		event := notificationOf(t, oc)
		run(t, event, []s3event.ObjectCreated{oc})
		before := len(ssm.Commands())
		resp, raw := rie.invoke(t, event)
		if resp.Duplicate != 1 || len(ssm.Commands()) != before {
			t.Errorf("second delivery: %s; %d commands sent", raw, len(ssm.Commands())-before)
		}
	})
}

// TestLambdaBadConfigFailsInit: a missing variable fails the init with one
// line naming it.
func TestLambdaBadConfigFailsInit(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t, up, nil)
	var env []string
	for _, kv := range lambdaEnv(up, ssm) {
		if !strings.HasPrefix(kv, "CONVEYOR_SSM_DOCUMENT=") {
			env = append(env, kv)
		}
	}
	rie := startRIE(t, env)
	// The emulator answers a failed init with 502, Lambda with an
	// Unhandled/Runtime.ExitError function error.
	if status, raw := rie.invokeRaw(t, []byte(`{"Records":[]}`)); status == http.StatusOK {
		t.Errorf("invocation with no CONVEYOR_SSM_DOCUMENT succeeded: %s", raw)
	}
	if out := rie.out.String(); !strings.Contains(out, "conveyor-lambda: configuration: CONVEYOR_SSM_DOCUMENT is not set") {
		t.Errorf("init output does not name the variable:\n%s", out)
	}
}

// scheduleEvent is an EventBridge schedule's event.
const scheduleEvent = `{"version":"0","id":"e2e-schedule","detail-type":"Scheduled Event","source":"aws.events",
	"account":"123456789012","time":"2026-11-27T00:00:00Z","region":"us-east-1",
	"resources":["arn:aws:events:us-east-1:123456789012:rule/Reconcile"],"detail":{}}`

// The real bootstrap in the reconciler role, invoked by an EventBridge
// schedule's event, finds the object whose notification never came,
// dispatches its job, and writes the pass's metric line.
func TestLambdaScheduledReconcile(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t, up, nil)
	env := append(lambdaEnv(up, ssm), "CONVEYOR_LAMBDA_ROLE=reconciler", "AWS_LAMBDA_FUNCTION_NAME=conveyor-reconciler")
	rie := startRIE(t, env)

	lost := upload(t, up.S3, "lost/no event.txt", []byte("nobody told the Lambda"))
	resp, raw := rie.invoke(t, []byte(scheduleEvent))
	if resp.ErrorMessage != "" || resp.Reconciled == nil || resp.Reconciled.Missing != 1 {
		t.Fatalf("scheduled invocation: %s", raw)
	}
	checkSent(t, up, ssm.Commands(), []s3event.ObjectCreated{lost})
	out := rie.out.String()
	if !strings.Contains(out, `"role":"reconciler"`) ||
		!strings.Contains(out, `"CloudWatchMetrics":[{"Dimensions":[["Function"]],"Metrics":[{"Name":"ReconcileFailed","Unit":"Count"}`) ||
		!strings.Contains(out, `"Function":"conveyor-reconciler"`) || !strings.Contains(out, `"ReconcileFailed":0`) {
		t.Errorf("function output lacks the reconciler role or the pass's metric line:\n%s", out)
	}

	// An object event sent to the reconciler is refused, and starts nothing.
	other := upload(t, up.S3, "lost/misrouted.txt", []byte("wrong function"))
	before := len(ssm.Commands())
	resp, raw = rie.invoke(t, notificationOf(t, other))
	if !strings.Contains(resp.ErrorMessage, "handles only EventBridge scheduled events") || len(ssm.Commands()) != before {
		t.Errorf("object event to the reconciler: %s; %d commands sent", raw, len(ssm.Commands())-before)
	}
}

// The orchestrator role (the default) no longer reconciles: a schedule's
// event is ignored and sends nothing.
func TestLambdaOrchestratorIgnoresSchedule(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t, up, nil)
	rie := startRIE(t, lambdaEnv(up, ssm))

	upload(t, up.S3, "lost/not now.txt", []byte("the reconciler's, not the orchestrator's"))
	resp, raw := rie.invoke(t, []byte(scheduleEvent))
	if resp.ErrorMessage != "" || resp.Ignored == "" || resp.Reconciled != nil || len(ssm.Commands()) != 0 {
		t.Errorf("scheduled event to the orchestrator: %s; %d commands sent", raw, len(ssm.Commands()))
	}
}
