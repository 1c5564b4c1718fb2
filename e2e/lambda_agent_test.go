package e2e

import (
	"context"
	"os/exec"
	"sort"
	"testing"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// TestLambdaEndToEnd: real uploads, the events the embedded server's hook
// would emit for them, the bootstrap under the emulator, SSM delivering to
// a test agent that runs `conveyor worker run` as the SSM document does,
// and the results in the output bucket.
func TestLambdaEndToEnd(t *testing.T) {
	t.Parallel()
	rieBinary(t)
	up := startLambdaUp(t)
	ssm := newFakeSSM(t, up, func(c ssmtest.Command) string {
		// What the document runs, with the worker's config: here, the
		// `conveyor up` on its data dir (the instance role and
		// /etc/conveyor/conveyor.yaml on EC2).
		ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, conveyorBin, "worker", "run", "--job", c.JobID, "--data-dir", up.DataDir)
		cmd.Env = cleanEnv()
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("conveyor worker run --job %s: %v\n%s", c.JobID, err, out)
			return "Failed"
		}
		return "Success"
	})
	rie := startRIE(t, lambdaEnv(up, ssm))

	inputs := map[string][]byte{
		"e2e/report one.txt":   []byte("one two three\nfour\n"),
		"e2e/ünïcödé+plus.txt": []byte("unicode key\n"),
		"e2e/binary.bin":       {0, 1, 2, 3, 0xff, 0xfe},
	}
	var objs []s3event.ObjectCreated
	for k, b := range inputs {
		objs = append(objs, upload(t, up.S3, k, b))
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	resp, raw := rie.invoke(t, notificationOf(t, objs...))
	if resp.ErrorMessage != "" || resp.Created != len(objs) {
		t.Fatalf("invocation: %s", raw)
	}
	for _, oc := range objs {
		rec := waitState(t, up.S3, objJobID(oc), job.Succeeded, jobTimeout)
		checkReport(t, up.S3, rec, inputs[oc.Key])
		if got := mustGet(t, up.S3, outputBucket, oc.Key+"/report.json"); len(got) == 0 {
			t.Errorf("s3://%s/%s/report.json is empty", outputBucket, oc.Key)
		}
	}
	ssm.Wait()
	for _, c := range ssm.Commands() {
		if c.Status != "Success" {
			t.Errorf("command %s (job %v) ended %s, want Success", c.ID, c.Parameters["JobId"], c.Status)
		}
	}
	if n := len(ssm.Commands()); n != len(objs) {
		t.Errorf("%d commands sent, want %d", n, len(objs))
	}
}
